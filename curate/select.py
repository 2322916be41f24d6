"""Apply thresholds to stored window scores: decisions, the funnel, and what needs scoring.

Pure functions over rows of the windows table; no model and no torch is imported here, so a
user can change a threshold and re-select in seconds (``curate select --set clip_diff.max=0.6``).

A window skipped by the cascade (note ``skipped: rejected by X``) has no score for the later
filters. If looser thresholds now let it pass every gating filter before the first such
skipped filter, its decision cannot be made from stored scores: it "needs scoring"
(``needs_scoring``), and ``curate score`` scores exactly those windows. Until then it is
rejected with that filter as reason.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Iterable, Mapping, Sequence

from filters import registry

Thresholds = dict[str, dict[str, float]]


def parse_overrides(overrides: Iterable[str], base: Mapping[str, Mapping[str, float]] | None = None
                    ) -> Thresholds:
    """``["clip_diff.max=0.6", "sync.a2v_min=0.3"]`` applied over ``base`` (default thresholds)."""
    out = copy.deepcopy(dict(base)) if base is not None else registry.default_thresholds()
    for item in overrides:
        name, key, value = _parse_one(item)
        out.setdefault(name, {})[key] = value
    for name, thr in out.items():
        lo, hi = thr.get("min"), thr.get("max")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"threshold {name}: min {lo:g} > max {hi:g}")
    return out


def _parse_one(item: str) -> tuple[str, str, float]:
    known = {n: sorted(t) for n, t in registry.DEFAULT_THRESHOLDS.items()}
    lhs, sep, rhs = str(item).partition("=")
    name, dot, key = lhs.strip().partition(".")
    if not sep or not dot:
        raise ValueError(f"threshold override {item!r} is not FILTER.KEY=VALUE, e.g. clip_diff.max=0.6")
    if name not in known:
        raise ValueError(f"unknown filter {name!r} in {item!r}; filters: {list(registry.ORDER)}")
    if key not in known[name]:
        raise ValueError(f"unknown threshold {key!r} for {name} in {item!r}; keys: {known[name]}")
    try:
        value = float(rhs)
    except ValueError:
        raise ValueError(f"threshold value in {item!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"threshold value in {item!r} is not finite")
    return name, key, value


def _gate(gate: Iterable[str] | None) -> set[str]:
    g = set(registry.ORDER) if gate is None else set(gate)
    unknown = g - set(registry.ORDER)
    if unknown:
        raise ValueError(f"unknown filter(s) in gate: {sorted(unknown)}")
    return g


def _first_skipped_needing_score(row: Mapping[str, Any], thresholds, gate: set[str]) -> str | None:
    """The gating filter a window would need scored next, or None (decidable from stored scores)."""
    for name in registry.ORDER:
        if name not in gate:
            continue
        if registry.is_cascade_skip(row.get(registry.note_column(name))):
            return name
        if not registry.passes(name, row, thresholds):
            return None
    return None


def needs_scoring_by_filter(window_rows: Sequence[Mapping[str, Any]], thresholds,
                            gate: Iterable[str] | None = None) -> dict[str, list[str]]:
    """{first filter to score: [window_id, ...]} for windows the cascade skipped that the
    thresholds now let through every gating filter before it. Score that filter and the later ones."""
    g = _gate(gate)
    out: dict[str, list[str]] = {}
    for row in window_rows:
        if row.get("status") == "failed":
            continue
        name = _first_skipped_needing_score(row, thresholds, g)
        if name is not None:
            out.setdefault(name, []).append(row["window_id"])
    return out


def needs_scoring(window_rows: Sequence[Mapping[str, Any]], thresholds,
                  gate: Iterable[str] | None = None) -> list[str]:
    """Window ids whose decision needs scores the cascade skipped (see module doc)."""
    by = needs_scoring_by_filter(window_rows, thresholds, gate)
    return [w for name in registry.ORDER for w in by.get(name, [])]


def rescore_filters(first: str) -> set[str]:
    """Filters to pass as ``only`` to ``score_segment`` for windows that need ``first`` scored."""
    return set(registry.ORDER[registry.ORDER.index(first):])


def decide(row: Mapping[str, Any], thresholds, gate: set[str]) -> tuple[bool, str | None]:
    """(keep, reason): reason is the first failing gating filter, or ``failed`` for a window
    that could not be scored at all."""
    if row.get("status") == "failed":
        return False, "failed"
    return registry.check(row, thresholds, gate)


def select_windows(window_rows: Sequence[Mapping[str, Any]], thresholds,
                   gate: Iterable[str] | None = None) -> tuple[list[dict], dict]:
    """(decision rows of the DECISIONS schema, summary with the funnel)."""
    g = _gate(gate)
    decisions = []
    for row in window_rows:
        keep, reason = decide(row, thresholds, g)
        decisions.append({"window_id": row["window_id"], "keep": keep, "reason": reason})
    return decisions, funnel(window_rows, thresholds, g)


def _pct(n: int, total: int) -> float:
    return round(100.0 * n / total, 2) if total else 0.0


def funnel(window_rows: Sequence[Mapping[str, Any]], thresholds,
           gate: Iterable[str] | None = None) -> dict:
    """Windows remaining after each gating filter in cascade order, then kept."""
    g = _gate(gate)
    total = len(window_rows)
    alive = [r for r in window_rows if r.get("status") != "failed"]
    steps = [{"filter": "scored", "remaining": len(alive), "percent": _pct(len(alive), total)}]
    rejected_by: dict[str, int] = {}
    for name in registry.ORDER:
        if name not in g:
            continue
        nxt = [r for r in alive if registry.passes(name, r, thresholds)]
        rejected_by[name] = len(alive) - len(nxt)
        alive = nxt
        steps.append({"filter": name, "remaining": len(alive), "percent": _pct(len(alive), total)})
    pending = needs_scoring_by_filter(window_rows, thresholds, g)
    return {
        "windows": total,
        "failed": total - steps[0]["remaining"],
        "funnel": steps,
        "rejected_by": rejected_by,
        "kept": len(alive),
        "kept_percent": _pct(len(alive), total),
        "gate": [n for n in registry.ORDER if n in g],
        "thresholds": {n: dict(thresholds.get(n, {})) for n in registry.ORDER},
        "needs_scoring": sum(len(v) for v in pending.values()),
        "needs_scoring_by_filter": {k: len(v) for k, v in pending.items()},
    }


def format_funnel(summary: Mapping[str, Any]) -> str:
    """Human-readable funnel for ``curate stats`` / ``curate select``."""
    lines = [f"windows            {summary['windows']:>10,d}  100.00%"]
    for step in summary["funnel"]:
        lines.append(f"after {step['filter']:<12} {step['remaining']:>10,d}  {step['percent']:6.2f}%")
    lines.append(f"kept               {summary['kept']:>10,d}  {summary['kept_percent']:6.2f}%")
    for name, n in summary.get("needs_scoring_by_filter", {}).items():
        lines.append(f"{n} windows were never scored for {name}; run `curate score DIR` to score them")
    return "\n".join(lines)
