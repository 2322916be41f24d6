"""Apply thresholds to stored window scores: decisions, the funnel, and what needs scoring.

Pure functions over rows of the windows table; no model and no torch is imported here, so a
user can change a threshold and re-select in seconds (``curate select --set clip_diff.max=0.6``).

A window skipped by the cascade (note ``skipped: rejected by X``) has no score for the later
filters. If looser thresholds now let it pass every gating filter before the first such
skipped filter, its decision cannot be made from stored scores: it "needs scoring"
(``needs_scoring``), and ``curate score`` scores exactly those windows. Until then it is
rejected with that filter as reason.

Every function takes the run's cascade ``order`` (``curate.run_state.cascade_order``; None:
``registry.DEFAULT_ORDER``): the reason of a rejected window is its first failing gating
filter in that order, as the skip notes the cascade wrote name it.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from filters import registry

log = logging.getLogger(__name__)

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
    g = set(registry.FILTERS) if gate is None else set(gate)
    unknown = g - set(registry.FILTERS)
    if unknown:
        raise ValueError(f"unknown filter(s) in gate: {sorted(unknown)}")
    return g


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
    g, order = _gate(gate), registry.cascade_order(order)
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


def rescore_filters(first: str, order: Sequence[str] | None = None) -> set[str]:
    """Filters to pass as ``only`` to ``score_segment`` for windows that need ``first`` scored."""
    order = registry.cascade_order(order)
    return set(order[order.index(first):])


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
    g, order = _gate(gate), registry.cascade_order(order)
    decisions = []
    for row in window_rows:
        keep, reason = decide(row, thresholds, g, order)
        decisions.append({"window_id": row["window_id"], "keep": keep, "reason": reason})
    return decisions, funnel(window_rows, thresholds, g, order)


def _pct(n: int, total: int) -> float:
    return round(100.0 * n / total, 2) if total else 0.0


def funnel(window_rows: Sequence[Mapping[str, Any]], thresholds,
           gate: Iterable[str] | None = None, order: Sequence[str] | None = None) -> dict:
    """Windows remaining after each gating filter in cascade order, then kept."""
    g, order = _gate(gate), registry.cascade_order(order)
    total = len(window_rows)
    alive = [r for r in window_rows if r.get("status") != "failed"]
    steps = [{"filter": "scored", "remaining": len(alive), "percent": _pct(len(alive), total)}]
    rejected_by: dict[str, int] = {}
    for name in order:
        if name not in g:
            continue
        nxt = [r for r in alive if registry.passes(name, r, thresholds)]
        rejected_by[name] = len(alive) - len(nxt)
        alive = nxt
        steps.append({"filter": name, "remaining": len(alive), "percent": _pct(len(alive), total)})
    pending = needs_scoring_by_filter(window_rows, thresholds, g, order)
    return {
        "windows": total,
        "failed": total - steps[0]["remaining"],
        "funnel": steps,
        "rejected_by": rejected_by,
        "kept": len(alive),
        "kept_percent": _pct(len(alive), total),
        "gate": [n for n in order if n in g],
        "order": list(order),
        "thresholds": {n: dict(thresholds.get(n, {})) for n in registry.FILTERS},
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


# ----------------------------------------------------------------------------- columnar
#
# The same rules as the row functions above, on Arrow columns and numpy masks, so a 1.1M-window
# table is never turned into Python dicts. The row functions stay the reference: the tests
# compare both on generated and synthetic manifests (ties, nulls, notes, failed rows).

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


def undictionary(table: Any) -> Any:
    """Dictionary-encoded columns (as read for speed) back to their value type."""
    import pyarrow as pa

    fields = [pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
              for f in table.schema]
    return table.cast(pa.schema(fields))


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
    """``registry.passes`` as a mask: every score column present, every set bound inclusive."""
    import numpy as np

    ok = np.ones(n, dtype=bool)
    values = {}
    for col in registry.columns(name):
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

    g, order = _gate(gate), registry.cascade_order(order)
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
    g, order = _gate(gate), registry.cascade_order(order)
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
    g, order = _gate(gate), registry.cascade_order(order)
    total = m.n
    alive = ~m.failed
    n_alive = int(alive.sum())
    steps = [{"filter": "scored", "remaining": n_alive, "percent": _pct(n_alive, total)}]
    rejected_by: dict[str, int] = {}
    for name in order:
        if name not in g:
            continue
        nxt = alive & m.passes[name]
        n_next = int(nxt.sum())
        rejected_by[name] = n_alive - n_next
        alive, n_alive = nxt, n_next
        steps.append({"filter": name, "remaining": n_alive, "percent": _pct(n_alive, total)})
    pending = {k: int(v.sum()) for k, v in needs_scoring_masks(m, g, order).items()}
    return {
        "windows": total,
        "failed": total - steps[0]["remaining"],
        "funnel": steps,
        "rejected_by": rejected_by,
        "kept": n_alive,
        "kept_percent": _pct(n_alive, total),
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


# ----------------------------------------------------------------------------- the select stage

def keep_cut_columns(out: Any, name: str, table: Any, key: str) -> Any:
    """``table`` with the cut columns (cut_start, cut_end, av_offset_ms: what the shard stage
    measured) of the current manifest's rows of the same key and clip times: a re-select
    that changes nothing rewrites nothing. A clip not cut yet (or cut with other times)
    keeps nulls until the shard stage cuts it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from manifests import schemas

    if table.num_rows == 0 or not schemas.has_manifest(out, name):
        return table
    old = read_columns(out, name, [key, "start", "end", *schemas.CUT_COLUMNS])
    if old.num_rows == 0:
        return table
    pos = pc.index_in(table[key], value_set=old[key].combine_chunks())
    same = pc.fill_null(pc.and_(pc.equal(old["start"].take(pos), table["start"]),
                                pc.equal(old["end"].take(pos), table["end"])), False)
    for c in schemas.CUT_COLUMNS:
        col = pc.if_else(same, old[c].take(pos), table[c])
        table = table.set_column(table.column_names.index(c), c, col.cast(pa.float64()))
    return table


def read_columns(out: Any, name: str, columns: Sequence[str] | None = None,
                 dictionary: Sequence[str] = ()) -> Any:
    """Only ``columns`` of a manifest as Arrow, cast to the declared types (a column an older
    manifest lacks reads as nulls). Columns in ``dictionary`` (repeated strings: status,
    notes, class, ids of segments) stay dictionary-encoded, which Parquet decodes about twice
    as fast as plain strings. ``ParquetFile`` rather than ``pq.read_table``: the latter
    imports pyarrow.dataset and pandas, a second of start-up for every ``curate select``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from manifests import schemas

    path = schemas.manifest_path(out, name)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes '{name}' first")
    schema = schemas.TABLES[name]
    cols = list(columns) if columns is not None else schema.names
    pf = pq.ParquetFile(path)
    present = set(pf.schema_arrow.names)
    dict_cols = [c for c in dictionary if c in present and c in cols]
    if dict_cols:
        pf = pq.ParquetFile(path, read_dictionary=dict_cols)
    tbl = pf.read(columns=[c for c in cols if c in present], use_threads=True)
    for c in cols:
        if c not in present:
            tbl = tbl.append_column(schema.field(c), pa.nulls(tbl.num_rows, schema.field(c).type))
    fields = [tbl.schema.field(c) if c in dict_cols else schema.field(c) for c in cols]
    return tbl.select(cols).cast(pa.schema(fields))


#: windows columns read dictionary-encoded (repeated strings)
WINDOW_DICT_COLUMNS = ("source_id", "shot_id", "class_name", "split", "status",
                       "pixel_diff_note", "amplitude_note", "clip_diff_note", "imagebind_note", "sync_note")


def read_windows_table(out: Any, columns: Sequence[str] | None = None) -> Any:
    """The windows manifest as Arrow (only ``columns``; default: what the selection reads),
    repeated strings dictionary-encoded."""
    from manifests import schemas

    if columns is None:
        columns = [c for c in schemas.WINDOWS.names if c != "error"]
    return read_columns(out, "windows", columns, dictionary=WINDOW_DICT_COLUMNS)


def _run_classes(out: Any, recipe: Mapping[str, Any]) -> list[str]:
    """Every class the run asked for, so one without any candidate shows in the shortfall."""
    if recipe.get("classes"):
        from manifests.classes import recipe_folders
        return recipe_folders(recipe["classes"])
    import pyarrow.compute as pc
    from manifests import schemas

    src = read_columns(out, "sources", ["class_name", "status"])
    ok = src.filter(pc.equal(src.column("status"), schemas.STATUS_OK)).column("class_name")
    return sorted(c for c in pc.unique(ok.drop_null()).to_pylist() if c)


def select_stage(out: Any, run: dict[str, Any], overrides: list[str] | None = None,
                 decisions_file: Any = None) -> dict[str, Any]:
    """``pipeline.stage_select``, columnar: thresholds on stored scores -> decisions -> merged
    clips -> balanced, split selection. Same manifests and summary; no row dicts for windows.

    Touches no model: changing a threshold and re-selecting takes seconds.
    """
    from pathlib import Path
    from curate.balance import select_clips_table
    from manifests import schemas

    from curate.run_state import cascade_order, save_run
    from curate.weights import gating, thresholds

    recipe = run["recipe"]
    if overrides is not None:
        run["selection_overrides"] = list(overrides)
        save_run(out, run)
    th = thresholds(run, run.get("selection_overrides"))
    gate, score_only = gating(run)
    review = None
    if decisions_file or run.get("review_decisions"):
        from curate.review import load_decisions
        review = load_decisions(decisions_file or run.get("review_decisions"))
    if decisions_file:
        run["review_decisions"] = str(Path(decisions_file).resolve())
        save_run(out, run)
    summary: dict[str, Any] = {"score_only": score_only, "gate": gate, "thresholds": th}
    if recipe["clip_mode"] == "fixed":
        from curate.merge import fixed_clips
        from curate.pipeline import _ok_downloads
        clips = schemas.to_table(fixed_clips(_ok_downloads(out), length=recipe["fixed_clip_length"]),
                                 schemas.CLIPS)
    else:
        from curate.merge import merge_table
        windows = read_windows_table(out)
        decisions, funnel_, keep = select_windows_table(windows, th, gate=set(gate),
                                                        order=cascade_order(run))
        schemas.write_manifest(out, "decisions", decisions)
        del decisions
        summary["funnel"], summary["needs_scoring"] = funnel_, funnel_["needs_scoring"]
        if funnel_["needs_scoring"]:
            log.warning("%d windows were never scored under these thresholds; run `curate score %s`",
                        funnel_["needs_scoring"], out)
        shots = read_columns(out, "shots", ["shot_id", "start", "end"]) \
            if schemas.has_manifest(out, "shots") else None
        clips = merge_table(windows, keep, shots, min_len=recipe["merge"]["min_len"])
        del windows
    clips = keep_cut_columns(out, "clips", clips, "clip_id")
    schemas.write_manifest(out, "clips", clips)
    selected, bal = select_clips_table(clips, recipe["select"], seed=recipe["select"].get("seed", 0),
                                       decisions=review, classes=_run_classes(out, recipe))
    selected = keep_cut_columns(out, "selected", selected, "key")
    schemas.write_manifest(out, "selected", selected)
    summary["balance"] = bal
    return summary
