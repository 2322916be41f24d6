"""Apply thresholds to stored window scores: decisions, the funnel, and what needs scoring.

Pure functions over the windows table as Arrow columns and numpy masks (a 1.1M-window table
never becomes Python dicts); no model and no torch is imported here, so a user can change a
threshold and re-select in seconds (``curate select --set clip_diff.max=0.6``). The row-dict
reference the tests compare these with lives in ``tests/selection/oracle.py``.

A window skipped by the cascade (note ``skipped: rejected by X``) has no score for the later
filters. If looser thresholds now let it pass every gating filter before the first such
skipped filter, its decision cannot be made from stored scores: it "needs scoring"
(``needs_scoring_table``), and ``curate score`` scores exactly those windows. Until then it is
rejected with that filter as reason.

Every function takes the run's cascade ``order`` (``curate.config.run_state.cascade_order``; None:
``registry.DEFAULT_ORDER``): the reason of a rejected window is its first failing gating
filter in that order, as the skip notes the cascade wrote name it."""
from __future__ import annotations

import logging
from typing import Any, Collection, Iterable, Mapping, Sequence

import numpy as np

from filters import registry

log = logging.getLogger(__name__)



def check_gate(gate: Iterable[str] | None) -> set[str]:
    g = set(registry.default_gate()) if gate is None else set(gate)
    unknown = g - set(registry.FILTERS)
    if unknown:
        raise ValueError(f"unknown filter(s) in gate: {sorted(unknown)}")
    return g


def rescore_filters(first: str, order: Sequence[str] | None = None) -> set[str]:
    """Filters to pass as ``only`` to ``score_segment`` for windows that need ``first`` scored."""
    order = registry.cascade_order(order)
    return set(order[order.index(first):])


def percent(n: int, total: int) -> float:
    return round(100.0 * n / total, 2) if total else 0.0


def format_funnel(summary: Mapping[str, Any]) -> str:
    """Human-readable funnel for ``curate stats`` / ``curate select``."""
    lines = [f"windows            {summary['windows']:>10,d}  100.00%"]
    for step in summary["funnel"]:
        lines.append(f"after {step['filter']:<12} {step['remaining']:>10,d}  {step['percent']:6.2f}%")
    lines.append(f"kept               {summary['kept']:>10,d}  {summary['kept_percent']:6.2f}%")
    for name, n in summary.get("needs_scoring_by_filter", {}).items():
        lines.append(f"{n} windows were never scored for {name}; run `curate score DIR` to score them")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- columnar
#
# The tests compare these with the row-dict oracle (tests/selection/oracle.py) on generated
# and synthetic manifests (ties, nulls, notes, failed rows).

def _np_float(col: Any) -> np.ndarray:
    """A float column as numpy, nulls as NaN (a missing score fails its filter either way)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(col, pa.ChunkedArray) and col.num_chunks == 0:
        return np.zeros(0, dtype=np.float64)
    return pc.fill_null(pc.cast(col, pa.float64()), float("nan")).to_numpy(zero_copy_only=False)


def _np_bool(col: Any) -> np.ndarray:
    import numpy as np
    import pyarrow.compute as pc

    if len(col) == 0:
        return np.zeros(0, dtype=bool)
    return pc.fill_null(col, False).to_numpy(zero_copy_only=False).astype(bool)


def str_mask(col: Any, fn: Any) -> np.ndarray:
    """``fn`` (a string -> bool compute function) over a string column, null -> False; on a
    dictionary column it runs once per distinct value and is gathered by the indices."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    parts = []
    for ch in chunks:
        if pa.types.is_dictionary(ch.type):
            vals = pc.fill_null(fn(ch.dictionary), False).to_numpy(zero_copy_only=False).astype(bool)
            idx = pc.fill_null(ch.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            parts.append(np.where(idx >= 0, np.append(vals, False)[idx], False))
        else:
            parts.append(pc.fill_null(fn(ch), False).to_numpy(zero_copy_only=False).astype(bool))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


class WindowMasks:
    """Per-window boolean masks of one windows table under given thresholds.

    ``failed``: status "failed"; ``passes[f]``: filter f's scores present and within bounds;
    ``skipped[f]``: f's note says the cascade skipped it (``skipped: rejected by X``).
    """

    def __init__(self, table: Any, thresholds: Mapping[str, Mapping[str, float]]) -> None:
        import numpy as np
        import pyarrow.compute as pc

        n = table.num_rows
        self.n = n
        names = set(table.column_names)
        self.failed = _np_bool(pc.equal(table.column("status"), "failed")) if "status" in names \
            else np.zeros(n, dtype=bool)
        self.passes: dict[str, np.ndarray] = {}
        self.skipped: dict[str, np.ndarray] = {}
        for name in registry.FILTERS:
            self.passes[name] = _passes_mask(table, name, thresholds.get(name, {}), n)
            note = registry.note_column(name)
            self.skipped[name] = (str_mask(table.column(note),
                                           lambda a: pc.starts_with(a, registry.SKIP_REJECTED))
                                  if note in names else np.zeros(n, dtype=bool))


def _passes_mask(table: Any, name: str, thr: Mapping[str, float], n: int) -> np.ndarray:
    """``registry.passes`` as a mask: every score column it decides by present, every set
    bound inclusive."""
    import numpy as np

    ok = np.ones(n, dtype=bool)
    values = {}
    for col in registry.spec(name).decided_by:
        if col not in table.column_names:
            return np.zeros(n, dtype=bool)
        values[col] = _np_float(table.column(col))
        ok &= ~np.isnan(values[col])
    for col, key, kind in registry.BOUNDS[name]:
        bound = thr.get(key)
        if bound is None:
            continue
        with np.errstate(invalid="ignore"):
            ok &= (values[col] >= bound) if kind == "min" else (values[col] <= bound)
    return ok


def decide_masks(m: WindowMasks, gate: Iterable[str] | None,
                 order: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, reason code per window): code -1 = kept, 0 = failed, 1 + i = FILTERS[i]
    (the first failing gating filter in cascade ``order``)."""
    import numpy as np

    g, order = check_gate(gate), registry.cascade_order(order)
    code = np.full(m.n, -1, dtype=np.int8)
    code[m.failed] = 0
    for name in order:
        if name not in g:
            continue
        code[(code == -1) & ~m.passes[name]] = 1 + registry.FILTERS.index(name)
    return code == -1, code


def _reason_array(code: np.ndarray) -> Any:
    """Reason codes -> a string array (null for kept windows) like ``decide``'s reasons."""
    import numpy as np
    import pyarrow as pa

    labels = pa.array(["failed", *registry.FILTERS], type=pa.string())
    idx = pa.array(code.astype(np.int32), mask=code < 0, type=pa.int32())
    return pa.DictionaryArray.from_arrays(idx, labels).cast(pa.string())


def needs_scoring_masks(m: WindowMasks, gate: Iterable[str] | None,
                        order: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """``needs_scoring_by_filter`` as {filter: mask}, filters in cascade order (only non-empty)."""
    g, order = check_gate(gate), registry.cascade_order(order)
    undecided = ~m.failed
    out = {}
    for name in order:
        if name not in g:
            continue
        hit = undecided & m.skipped[name]
        if hit.any():
            out[name] = hit
        undecided = undecided & ~m.skipped[name] & m.passes[name]
    return out


def funnel_masks(m: WindowMasks, thresholds, gate: Iterable[str] | None,
                 order: Sequence[str] | None = None) -> dict:
    """``funnel`` on masks: the same dict, computed without rows."""
    g, order = check_gate(gate), registry.cascade_order(order)
    total = m.n
    alive = ~m.failed
    n_alive = int(alive.sum())
    steps = [{"filter": "scored", "remaining": n_alive, "percent": percent(n_alive, total)}]
    rejected_by: dict[str, int] = {}
    for name in order:
        if name not in g:
            continue
        nxt = alive & m.passes[name]
        n_next = int(nxt.sum())
        rejected_by[name] = n_alive - n_next
        alive, n_alive = nxt, n_next
        steps.append({"filter": name, "remaining": n_alive, "percent": percent(n_alive, total)})
    pending = {k: int(v.sum()) for k, v in needs_scoring_masks(m, g, order).items()}
    return {
        "windows": total,
        "failed": total - steps[0]["remaining"],
        "funnel": steps,
        "rejected_by": rejected_by,
        "kept": n_alive,
        "kept_percent": percent(n_alive, total),
        "gate": [n for n in order if n in g],
        "order": list(order),
        "thresholds": {n: dict(thresholds.get(n, {})) for n in registry.FILTERS},
        "needs_scoring": sum(pending.values()),
        "needs_scoring_by_filter": pending,
    }


def select_windows_table(table: Any, thresholds, gate: Iterable[str] | None = None,
                         order: Sequence[str] | None = None) -> tuple[Any, dict, np.ndarray]:
    """(DECISIONS table, funnel summary, keep mask) of a windows Arrow table.

    Same decisions, in the same row order, as ``select_windows`` on the table's rows.
    """
    import pyarrow as pa

    m = WindowMasks(table, thresholds)
    keep, code = decide_masks(m, gate, order)
    decisions = pa.table({"window_id": table.column("window_id"),
                          "keep": pa.array(keep, type=pa.bool_()),
                          "reason": _reason_array(code)})
    return decisions, funnel_masks(m, thresholds, gate, order), keep


def needs_scoring_table(table: Any, thresholds, gate: Iterable[str] | None = None,
                        order: Sequence[str] | None = None) -> dict[str, list[str]]:
    """``needs_scoring_by_filter`` on an Arrow table (ids only for the windows concerned)."""
    import numpy as np

    m = WindowMasks(table, thresholds)
    ids = table.column("window_id")
    return {name: ids.take(np.nonzero(mask)[0]).to_pylist()
            for name, mask in needs_scoring_masks(m, gate, order).items()}


# ----------------------------------------------------------------------------- clip-level gate

#: the desync gate's reason for a clip the certify stage has not measured yet (a build's first
#: select: certify measures it, then the desync-gate stage selects again)
DESYNC_UNMEASURED = "desync: no certificate (certify stage)"


def desync_gated(status: str | None, error: str | None) -> bool:
    """Whether a clip was rejected by the desync gate (measured above the max, or not yet)."""
    from manifests.schemas import STATUS_REJECTED
    return status == STATUS_REJECTED and (error or "").startswith("desync")


def desync_reason(desync_s: float, max_s: float) -> str:
    """Why the desync gate rejects a clip measured above the max."""
    return f"desync {desync_s:.2f} s > max {max_s:g}"


def desync_gate(clips: Any, max_s: float | None, exempt: Collection[str] = ()) -> tuple[Any, int]:
    """Recipe option ``desync.max`` (off: None): an ok clip whose DeSync (certify stage) is
    above ``max_s``, or that has none yet (``DESYNC_UNMEASURED``), becomes ``rejected`` with
    the reason; clips in ``exempt`` (ids: those a repair will shift back, which the shard
    stage ships only repaired or rejects) are left to the repair. Returns the table and how
    many clips the gate rejected."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from manifests.schemas import STATUS_OK, STATUS_REJECTED

    if max_s is None or clips.num_rows == 0:
        return clips, 0
    d = _np_float(clips["desync_s"])
    ok = np.asarray(pc.fill_null(pc.equal(clips["status"], STATUS_OK), False).to_numpy(zero_copy_only=False))
    spared = np.isin(np.asarray(clips["clip_id"].to_pylist(), dtype=object), list(exempt))
    bad = ok & ~spared & ~(d <= float(max_s))   # NaN (no certificate) fails, like a missing score
    if not bad.any():
        return clips, 0
    status = np.where(bad, STATUS_REJECTED, np.asarray(clips["status"].to_pylist(), dtype=object))
    errors = clips["error"].to_pylist()
    for i in np.nonzero(bad)[0]:
        errors[i] = desync_reason(d[i], float(max_s)) if not np.isnan(d[i]) else DESYNC_UNMEASURED
    clips = clips.set_column(clips.column_names.index("status"), "status", pa.array(status.tolist(), pa.string()))
    clips = clips.set_column(clips.column_names.index("error"), "error", pa.array(errors, pa.string()))
    return clips, int(bad.sum())
