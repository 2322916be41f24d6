"""Row-dict reference implementations of the selection rules: the oracle the columnar
``curate.selection.rules`` is tested against (not used by the package)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from filters import registry
from curate.selection.rules import check_gate, percent


def _first_skipped_needing_score(row: Mapping[str, Any], thresholds, gate: set[str],
                                 order: Sequence[str]) -> str | None:
    """The gating filter a window would need scored next, or None (decidable from stored scores)."""
    for name in order:
        if name not in gate:
            continue
        if registry.is_cascade_skip(row.get(registry.note_column(name))):
            return name
        if not registry.passes(name, row, thresholds):
            return None
    return None


def needs_scoring_by_filter(window_rows: Sequence[Mapping[str, Any]], thresholds,
                            gate: Iterable[str] | None = None,
                            order: Sequence[str] | None = None) -> dict[str, list[str]]:
    """{first filter to score: [window_id, ...]} for windows the cascade skipped that the
    thresholds now let through every gating filter before it. Score that filter and the later ones."""
    g, order = check_gate(gate), registry.cascade_order(order)
    out: dict[str, list[str]] = {}
    for row in window_rows:
        if row.get("status") == "failed":
            continue
        name = _first_skipped_needing_score(row, thresholds, g, order)
        if name is not None:
            out.setdefault(name, []).append(row["window_id"])
    return out


def needs_scoring(window_rows: Sequence[Mapping[str, Any]], thresholds,
                  gate: Iterable[str] | None = None, order: Sequence[str] | None = None) -> list[str]:
    """Window ids whose decision needs scores the cascade skipped (see module doc)."""
    order = registry.cascade_order(order)
    by = needs_scoring_by_filter(window_rows, thresholds, gate, order)
    return [w for name in order for w in by.get(name, [])]


def decide(row: Mapping[str, Any], thresholds, gate: set[str],
           order: Sequence[str] | None = None) -> tuple[bool, str | None]:
    """(keep, reason): reason is the first failing gating filter, or ``failed`` for a window
    that could not be scored at all."""
    if row.get("status") == "failed":
        return False, "failed"
    return registry.check(row, thresholds, gate, order)


def select_windows(window_rows: Sequence[Mapping[str, Any]], thresholds,
                   gate: Iterable[str] | None = None,
                   order: Sequence[str] | None = None) -> tuple[list[dict], dict]:
    """(decision rows of the DECISIONS schema, summary with the funnel)."""
    g, order = check_gate(gate), registry.cascade_order(order)
    decisions = []
    for row in window_rows:
        keep, reason = decide(row, thresholds, g, order)
        decisions.append({"window_id": row["window_id"], "keep": keep, "reason": reason})
    return decisions, funnel(window_rows, thresholds, g, order)


def funnel(window_rows: Sequence[Mapping[str, Any]], thresholds,
           gate: Iterable[str] | None = None, order: Sequence[str] | None = None) -> dict:
    """Windows remaining after each gating filter in cascade order, then kept."""
    g, order = check_gate(gate), registry.cascade_order(order)
    total = len(window_rows)
    alive = [r for r in window_rows if r.get("status") != "failed"]
    steps = [{"filter": "scored", "remaining": len(alive), "percent": percent(len(alive), total)}]
    rejected_by: dict[str, int] = {}
    for name in order:
        if name not in g:
            continue
        nxt = [r for r in alive if registry.passes(name, r, thresholds)]
        rejected_by[name] = len(alive) - len(nxt)
        alive = nxt
        steps.append({"filter": name, "remaining": len(alive), "percent": percent(len(alive), total)})
    pending = needs_scoring_by_filter(window_rows, thresholds, g, order)
    return {
        "windows": total,
        "failed": total - steps[0]["remaining"],
        "funnel": steps,
        "rejected_by": rejected_by,
        "kept": len(alive),
        "kept_percent": percent(len(alive), total),
        "gate": [n for n in order if n in g],
        "order": list(order),
        "thresholds": {n: dict(thresholds.get(n, {})) for n in registry.FILTERS},
        "needs_scoring": sum(len(v) for v in pending.values()),
        "needs_scoring_by_filter": {k: len(v) for k, v in pending.items()},
    }
