"""Row-dict reference implementations of the selection rules: the oracle the columnar
``curate.selection.rules`` and ``curate.selection.balance.select_clips_table`` are tested
against (not used by the package)."""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from filters import registry
from curate.selection.balance import (_assign_test, _n_test, _params, _seeded, _summary, clip_name,
                                      rank_score)
from curate.selection.rules import check_gate, percent
from manifests.schemas import CERT_CLIP_COLUMNS, MEASURED_COLUMNS, STATUS_FAILED, STATUS_OK, STATUS_REJECTED, STATUS_SKIPPED
from shards.writer import key_from_name

log = logging.getLogger(__name__)


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


# ----------------------------------------------------------------------------- balance

class Selection(NamedTuple):
    rows: list[dict[str, Any]]     # SELECTED rows, one per input clip
    summary: dict[str, Any]        # per_class counts, shortfall, n_test, warnings


def _base_row(clip: Mapping[str, Any]) -> dict[str, Any]:
    return {"key": None, "name": None, "clip_id": clip.get("clip_id"),
            "source_id": clip.get("source_id"), "class_name": clip.get("class_name"),
            "split": clip.get("split"), "start": clip.get("start"), "end": clip.get("end"),
            "rank_score": rank_score(clip), "status": STATUS_OK, "error": None,
            **dict.fromkeys(MEASURED_COLUMNS),
            # the filters' certificate columns of the clip (the sync classifier's clip offset)
            **{c: clip.get(c) for c in CERT_CLIP_COLUMNS}}


def _named_rows(clips: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per clip with name/key; clips that failed upstream keep their status."""
    rows, seen = [], set()
    for c in clips:
        row = _base_row(c)
        if c.get("status") not in (None, STATUS_OK):
            row.update(status=c["status"], error=f"clip not ok: {c.get('error')}")
        try:
            row["name"], row["start"], row["end"] = clip_name(c)
            row["key"] = key_from_name(row["name"])
        except ValueError as e:
            if row["status"] == STATUS_OK:
                row.update(status=STATUS_FAILED, error=f"select: cannot name clip: {e}")
        if row["name"] is not None and row["name"] in seen and row["status"] == STATUS_OK:
            row.update(status=STATUS_REJECTED, error="select: duplicate name (after rounding)")
        seen.add(row["name"])
        rows.append(row)
    return rows


def _order(rows: list[dict[str, Any]], seed: int, decisions: Mapping[str, str]) -> list[dict]:
    """Reviewer-kept first, then rank_score descending (None last), then seeded tie-break."""
    def k(r: dict) -> tuple:
        rs = r["rank_score"]
        return (decisions.get(r["name"]) != "keep", rs is None, -(rs or 0.0),
                _seeded(seed, r["clip_id"] or r["name"]))
    return sorted(rows, key=k)


def _pick_class(rows: list[dict[str, Any]], prm: dict[str, Any],
                decisions: Mapping[str, str]) -> None:
    """Mark rows of one class (ranked order) ok / rejected / skipped, in place."""
    per_class, cap = prm["per_class"], prm["max_per_source"]
    n_sel, per_source = 0, defaultdict(int)
    for rank, r in enumerate(_order(rows, prm["seed"], decisions), start=1):
        if decisions.get(r["name"]) == "reject":
            r.update(status=STATUS_REJECTED, error="review: rejected by reviewer")
        elif per_class is not None and n_sel >= per_class:
            r.update(status=STATUS_SKIPPED,
                     error=f"select: rank {rank} beyond per_class {per_class}")
        elif cap is not None and per_source[r["source_id"]] >= cap:
            r.update(status=STATUS_SKIPPED,
                     error=f"select: max_per_source {cap} reached for {r['source_id']}")
        else:
            n_sel += 1
            per_source[r["source_id"]] += 1


def select_clips(clips: Iterable[Mapping[str, Any]], recipe_params: Mapping[str, Any],
                 seed: int | None = None, decisions: Mapping[str, str] | None = None,
                 classes: Sequence[str] | None = None) -> Selection:
    """CLIPS rows -> Selection(rows=SELECTED rows for every clip, summary).

    ``decisions``: manual review {name: "keep"|"reject"}. ``classes``: the recipe's class
    list, so a class without any candidate appears in the shortfall too. ``seed`` overrides
    ``select.seed``. See the module docstring for the parameters and rules.
    """
    prm, decisions = _params(recipe_params, seed), dict(decisions or {})
    rows = _named_rows(clips)
    by_class: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["status"] == STATUS_OK:
            by_class[r["class_name"]].append(r)
    for cls_rows in by_class.values():
        _pick_class(cls_rows, prm, decisions)
    ok = {c: [r for r in rs if r["status"] == STATUS_OK] for c, rs in by_class.items()}
    for c in classes or ():
        ok.setdefault(c, [])
    warnings: list[str] = []
    n_test = _n_test({c: len(v) for c, v in ok.items()}, prm, warnings)
    if n_test is not None:
        for c, rs in ok.items():
            _assign_test(rs, n_test[c], prm["seed"])
    summary = _summary(ok, {c: len(v) for c, v in by_class.items()},
                       {c: sum(r["status"] == STATUS_REJECTED for r in v) for c, v in by_class.items()},
                       prm, warnings)
    for w in summary["warnings"]:
        log.warning("select: %s", w)
    return Selection(rows, summary)
