"""From kept windows to clips (the CLIPS table).

Windows mode (AVSync15 / VGGSS, seed 003 section 5.2): kept 3-s windows of one shot that
overlap or touch are merged into one clip spanning [min start, max end]. Windows lie inside
their shot, so a merged clip does too (checked against the shots table anyway). The seed
reports 100,812 kept windows -> 42,882 clips.

Fixed mode (Landscape, seeds 004/001): every source is cut into non-overlapping clips of a
fixed length (10 s), no windows or scores involved.

Rows never disappear: a clip shorter than ``min_len`` is returned with status "rejected" and
the reason in ``error``.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from manifests.names import clip_id_for
from manifests import schemas
from manifests.schemas import MEASURED_COLUMNS, STATUS_FAILED, STATUS_OK, STATUS_REJECTED

log = logging.getLogger(__name__)

#: float slack when comparing times (windows are on a 0.5-s grid; this only absorbs rounding)
EPS = 1e-6


def _mean_scores(windows: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Clip score = mean over its windows of the non-null values; all null -> None.

    Kept windows passed every gating filter, so nulls only appear for filters that were not
    run (a recipe without that filter); then the clip's score is null too, never a sentinel.
    """
    out: dict[str, float | None] = {}
    for col in schemas.ALL_SCORES:
        vals = [float(w[col]) for w in windows if w.get(col) is not None and not math.isnan(w[col])]
        out[col] = sum(vals) / len(vals) if vals else None
    for mx, col in schemas.CLIP_MAX_COLUMNS.items():   # and the max where a filter asks for it
        vals = [float(w[col]) for w in windows if w.get(col) is not None and not math.isnan(w[col])]
        out[mx] = max(vals) if vals else None
    for name, cc in schemas.CLIP_COLUMNS.items():     # a declared reduction instead of the mean
        vals = [float(w[cc.column]) for w in windows
                if w.get(cc.column) is not None and not math.isnan(w[cc.column])]
        out[name] = float(cc.reduce(np.asarray(vals, dtype=np.float64))) if vals else None
    return out


def _kept_windows(windows: Iterable[Mapping[str, Any]],
                  decisions: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    keep = {d["window_id"]: bool(d.get("keep")) for d in decisions}
    kept, undecided = [], 0
    for w in windows:
        if w.get("status") not in (None, STATUS_OK):
            continue
        if w["window_id"] not in keep:
            undecided += 1
            continue
        if keep[w["window_id"]]:
            kept.append(w)
    if undecided:
        # a window without a decision row was never selected: it is not kept
        log.warning("%d windows have no decision row; treated as not kept", undecided)
    return kept


def _intervals(ws: list[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Groups of windows (sorted by start) whose intervals overlap or touch."""
    ws = sorted(ws, key=lambda w: (float(w["start"]), float(w["end"])))
    groups: list[list[Mapping[str, Any]]] = []
    end = -math.inf
    for w in ws:
        if groups and float(w["start"]) <= end + EPS:
            groups[-1].append(w)
            end = max(end, float(w["end"]))
        else:
            groups.append([w])
            end = float(w["end"])
    return groups


def _clip_row(group: list[Mapping[str, Any]], shot: Mapping[str, Any] | None,
              min_len: float) -> dict[str, Any]:
    first = group[0]
    start = min(float(w["start"]) for w in group)
    end = max(float(w["end"]) for w in group)
    status, error = STATUS_OK, None
    if shot is not None and (start < float(shot["start"]) - EPS or end > float(shot["end"]) + EPS):
        # windows are generated inside shots, so this means inconsistent tables: clamp, say so
        log.warning("clip %s-%s of %s leaves its shot [%s, %s]; clamped", start, end,
                    first["shot_id"], shot["start"], shot["end"])
        start, end = max(start, float(shot["start"])), min(end, float(shot["end"]))
    if end - start < min_len - EPS:
        status = STATUS_REJECTED
        error = f"merge: clip length {end - start:.2f}s < min_len {min_len:.2f}s"
    return {
        "clip_id": clip_id_for(first["source_id"], start, end),
        "source_id": first["source_id"], "shot_id": first["shot_id"],
        "class_name": first.get("class_name"), "split": first.get("split"),
        "start": start, "end": end, "n_windows": len(group), **dict.fromkeys(MEASURED_COLUMNS),
        **_mean_scores(group), "status": status, "error": error,
    }


def merge_windows(windows: Iterable[Mapping[str, Any]], decisions: Iterable[Mapping[str, Any]],
                  shots: Iterable[Mapping[str, Any]] | None = None,
                  min_len: float = 2.0) -> list[dict[str, Any]]:
    """Kept windows -> CLIPS rows, one per run of overlapping/touching windows of one shot.

    ``windows``: WINDOWS rows; ``decisions``: DECISIONS rows (window_id, keep, reason);
    ``shots``: SHOTS rows, used to check that a clip stays in its shot. Clips shorter than
    ``min_len`` seconds are kept as rows with status "rejected". Sorted by clip_id.
    """
    shot_by_id = {s["shot_id"]: s for s in (shots or [])}
    by_shot: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for w in _kept_windows(windows, decisions):
        # a window without shot_id (no shot split) merges within its source
        by_shot[(w["source_id"], w.get("shot_id") or "")].append(w)
    rows = []
    for (_, shot_id), ws in by_shot.items():
        shot = shot_by_id.get(shot_id)
        if shot_id and shots is not None and shot is None:
            log.warning("shot %s not in the shots table; clip bounds not checked", shot_id)
        rows.extend(_clip_row(g, shot, min_len) for g in _intervals(ws))
    rows.sort(key=lambda r: r["clip_id"])
    log.info("merge: %d kept windows -> %d clips (%d shorter than %.1fs rejected)",
             sum(len(v) for v in by_shot.values()), len(rows),
             sum(r["status"] == STATUS_REJECTED for r in rows), min_len)
    return rows


def _interval_of(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """Clip-able interval in segment time: a shot row's [start, end]; for a source or
    download row [0, duration] (downloaded file times start at 0), duration from the
    download probe when present, else the source's end - start."""
    if row.get("shot_id"):
        return float(row["start"]), float(row["end"])
    if row.get("duration") is not None:
        return 0.0, float(row["duration"])
    if row.get("start") is not None and row.get("end") is not None:
        return 0.0, float(row["end"]) - float(row["start"])
    return None


def _below_resolution(row: Mapping[str, Any], min_resolution: tuple[int, int] | None) -> str | None:
    if min_resolution is None:
        return None
    w, h = row.get("width"), row.get("height")
    if w is None or h is None:
        return "fixed_clips: resolution unknown (no width/height)"
    if int(w) < min_resolution[0] or int(h) < min_resolution[1]:
        return f"fixed_clips: resolution {w}x{h} below {min_resolution[0]}x{min_resolution[1]}"
    return None


def fixed_clips(shots_or_sources: Iterable[Mapping[str, Any]], length: float = 10.0,
                sources: Iterable[Mapping[str, Any]] | None = None,
                min_resolution: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Non-overlapping ``length``-s clips from each input row (Landscape: 10 s, seed 004).

    Rows may be SHOTS rows (clips inside each shot), DOWNLOADS rows (clips over [0, duration])
    or SOURCES rows (clips over [0, end - start]). ``sources`` supplies class_name/split when
    the rows lack them. Clips start at the interval start; a tail shorter than ``length`` is
    not a clip. An input too short for one clip, or under ``min_resolution`` (width, height),
    gives one "rejected" row with the reason; input rows whose status is not ok are skipped
    (their failure is already recorded in their own table).
    """
    meta = {s["source_id"]: s for s in (sources or [])}
    rows: list[dict[str, Any]] = []
    skipped = 0
    for r in shots_or_sources:
        if r.get("status") not in (None, STATUS_OK):
            skipped += 1
            continue
        rows.extend(_fixed_for_row(r, meta.get(r["source_id"], {}), length, min_resolution))
    if skipped:
        log.info("fixed_clips: %d input rows not ok, skipped", skipped)
    rows.sort(key=lambda x: x["clip_id"])
    return rows


def _fixed_for_row(r: Mapping[str, Any], meta: Mapping[str, Any], length: float,
                   min_resolution: tuple[int, int] | None) -> list[dict[str, Any]]:
    base = {"source_id": r["source_id"], "shot_id": r.get("shot_id"),
            "class_name": r.get("class_name") or meta.get("class_name"),
            "split": r.get("split") or meta.get("split"), "n_windows": 0,
            **{c: None for c in (*schemas.ALL_SCORES, *schemas.CLIP_MAX_COLUMNS, *schemas.CLIP_ONLY_COLUMNS)},
            **dict.fromkeys(MEASURED_COLUMNS)}
    iv = _interval_of(r)
    if iv is None:
        return [{**base, "clip_id": f"{r['source_id']}_none", "start": None, "end": None,
                 "status": STATUS_FAILED, "error": "fixed_clips: no start/end/duration"}]
    t0, t1 = iv
    reason = _below_resolution(r, min_resolution)
    n = int(math.floor((t1 - t0) / length + EPS))
    if reason is None and n == 0:
        reason = f"fixed_clips: {t1 - t0:.2f}s shorter than one {length:.1f}s clip"
    if reason is not None:
        return [{**base, "clip_id": clip_id_for(r["source_id"], t0, t1), "start": t0, "end": t1,
                 "status": STATUS_REJECTED, "error": reason}]
    out = []
    for k in range(n):
        s, e = t0 + k * length, t0 + (k + 1) * length
        out.append({**base, "clip_id": clip_id_for(r["source_id"], s, e), "start": s, "end": e,
                    "status": STATUS_OK, "error": None})
    return out


# ----------------------------------------------------------------------------- columnar

def _group_breaks(keys: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Index of the first row of each run of overlapping/touching windows (rows sorted by
    key, start, end). The running end is a scan, so it is a plain loop over kept windows only."""
    import numpy as np

    first: list[int] = []
    prev_key, run_end = None, -math.inf
    for i, (k, s, e) in enumerate(zip(keys.tolist(), starts.tolist(), ends.tolist())):
        if k == prev_key and s <= run_end + EPS:
            run_end = max(run_end, e)
        else:
            first.append(i)
            prev_key, run_end = k, e
    return np.asarray(first, dtype=np.int64)


def _sequential_means(values: np.ndarray, group: np.ndarray, pos: np.ndarray,
                      n_groups: int) -> np.ndarray:
    """Per group, the mean of its non-NaN values summed left to right (as ``sum`` over the
    sorted windows does), so the result equals ``_mean_scores`` to the last bit; NaN if none."""
    import numpy as np

    sums = np.zeros(n_groups, dtype=np.float64)
    counts = np.zeros(n_groups, dtype=np.int64)
    present = ~np.isnan(values)
    order = np.argsort(pos, kind="stable")
    pos_sorted = pos[order]
    bounds = np.searchsorted(pos_sorted, np.arange(int(pos.max()) + 2 if len(pos) else 1))
    for j in range(len(bounds) - 1):
        rows = order[bounds[j]:bounds[j + 1]]          # at most one row per group
        rows = rows[present[rows]]
        sums[group[rows]] += values[rows]
        counts[group[rows]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _kept_ok_windows(windows: Any, keep: Any) -> Any:
    """The kept windows whose status is ok (or null), as plain (not dictionary) columns."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from manifests.columns import undictionary

    ok_status = pc.fill_null(pc.equal(windows.column("status"), STATUS_OK), True).to_numpy(zero_copy_only=False) \
        if windows.num_rows else np.zeros(0, dtype=bool)
    idx = np.nonzero(np.asarray(keep, dtype=bool) & ok_status)[0]
    return undictionary(windows.take(pa.array(idx, type=pa.int64())))


def merge_table(windows: Any, keep: Any, shots: Any = None, min_len: float = 2.0) -> Any:
    """``merge_windows`` on Arrow: windows table + keep mask (aligned rows) -> CLIPS table.

    Identical rows to ``merge_windows(windows rows, decision rows, shot rows, min_len)``; only
    the kept windows are gathered, and only clips are formatted in Python (their ids).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    CLIPS = schemas.CLIPS

    kw = _kept_ok_windows(windows, keep)
    if kw.num_rows == 0:
        log.info("merge: 0 kept windows -> 0 clips")
        return CLIPS.empty_table()
    g = _window_groups(kw)
    head = kw.take(pa.array(g.order[g.first], type=pa.int64()))
    c_start, c_end = _clamp_to_shots(head, g.starts, g.ends, shots)
    cols = _clip_columns(kw, head, g, c_start, c_end, min_len)
    nulls = pa.nulls(g.n_groups, pa.float64())   # measured later: the cut (shard stage), the certificate
    table = pa.table({n: cols.get(n, nulls) for n in CLIPS.names}).cast(CLIPS)
    table = table.take(pc.sort_indices(table, sort_keys=[("clip_id", "ascending")]))
    n_short = sum(1 for st in cols["status"] if st == STATUS_REJECTED)
    log.info("merge: %d kept windows -> %d clips (%d shorter than %.1fs rejected)",
             len(g.order), g.n_groups, n_short, min_len)
    return table


@dataclass
class _Groups:
    """Kept windows sorted by (source, shot, start, end) and cut into runs that merge."""
    order: np.ndarray        # row of ``kw`` at each sorted position
    first: np.ndarray        # sorted position of each group's first window
    group: np.ndarray        # group of each sorted position
    pos: np.ndarray          # position of each sorted window inside its group
    starts: np.ndarray       # each group's start (min) and end (max)
    ends: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.first)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(np.append(self.first, len(self.order)))


def _window_groups(kw: Any) -> _Groups:
    import numpy as np
    import pyarrow.compute as pc

    src = pc.dictionary_encode(kw.column("source_id").combine_chunks())
    shot = pc.dictionary_encode(pc.fill_null(kw.column("shot_id"), "").combine_chunks())
    src_code = src.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    shot_code = shot.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    starts = kw.column("start").to_numpy().astype(np.float64)
    ends = kw.column("end").to_numpy().astype(np.float64)
    order = np.lexsort((ends, starts, shot_code, src_code))   # stable, like sorted()
    key = src_code[order] * (int(shot_code.max()) + 1) + shot_code[order]
    s_sorted, e_sorted = starts[order], ends[order]
    first = _group_breaks(key, s_sorted, e_sorted)
    group = np.repeat(np.arange(len(first)), np.diff(np.append(first, len(order))))
    return _Groups(order, first, group, np.arange(len(order)) - first[group],
                   np.minimum.reduceat(s_sorted, first), np.maximum.reduceat(e_sorted, first))


def _clip_columns(kw: Any, head: Any, g: _Groups, c_start: np.ndarray, c_end: np.ndarray,
                  min_len: float) -> dict[str, Any]:
    """The CLIPS columns of the groups: ids, times, window counts, mean scores, status."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    length = c_end - c_start
    short = length < min_len - EPS
    src_ids = head.column("source_id").to_pylist()
    cols: dict[str, Any] = {
        "clip_id": [clip_id_for(s, a, b) for s, a, b in zip(src_ids, c_start.tolist(), c_end.tolist())],
        "source_id": head.column("source_id"), "shot_id": head.column("shot_id"),
        "class_name": head.column("class_name"), "split": head.column("split"),
        "start": c_start, "end": c_end, "n_windows": g.sizes,
    }
    for col in schemas.ALL_SCORES:
        vals = pc.fill_null(kw.column(col), float("nan")).to_numpy(zero_copy_only=False)[g.order]
        mean = _sequential_means(vals.astype(np.float64), g.group, g.pos, g.n_groups)
        cols[col] = pa.array(mean, mask=np.isnan(mean), type=pa.float64())
    for mx, col in schemas.CLIP_MAX_COLUMNS.items():
        vals = pc.fill_null(kw.column(col), float("nan")).to_numpy(zero_copy_only=False)[g.order]
        top = np.full(g.n_groups, np.nan)
        np.fmax.at(top, g.group, vals.astype(np.float64))      # NaN only where all are
        cols[mx] = pa.array(top, mask=np.isnan(top), type=pa.float64())
    for name, cc in schemas.CLIP_COLUMNS.items():
        vals = pc.fill_null(kw.column(cc.column), float("nan")).to_numpy(zero_copy_only=False)[g.order]
        red = _reduce_groups(vals.astype(np.float64), g.first, cc.reduce)
        cols[name] = pa.array(red, mask=np.isnan(red), type=pa.float64())
    cols["status"] = np.where(short, STATUS_REJECTED, STATUS_OK).tolist()
    cols["error"] = [f"merge: clip length {ln:.2f}s < min_len {min_len:.2f}s" if sh else None
                     for ln, sh in zip(length.tolist(), short.tolist())]
    return cols


def _reduce_groups(values: np.ndarray, first: np.ndarray, reduce) -> np.ndarray:
    """Per group (sorted windows cut at ``first``), ``reduce`` of its non-NaN values (in start
    order, as ``_mean_scores`` passes them); NaN where none."""
    out = np.full(len(first), np.nan)
    for j, vals in enumerate(np.split(values, first[1:])):
        vals = vals[~np.isnan(vals)]
        if len(vals):
            out[j] = float(reduce(vals))
    return out


def _clamp_to_shots(head: Any, c_start: np.ndarray, c_end: np.ndarray,
                    shots: Any) -> tuple[np.ndarray, np.ndarray]:
    """Clamp clips into their shot (inconsistent tables only), as ``_clip_row`` does."""
    import numpy as np
    import pyarrow.compute as pc

    if shots is None or shots.num_rows == 0:
        return c_start, c_end
    shot_ids = head.column("shot_id")
    pos = pc.index_in(shot_ids, value_set=shots.column("shot_id").combine_chunks())
    found = pc.is_valid(pos).to_numpy(zero_copy_only=False)
    has_id = pc.fill_null(pc.not_equal(shot_ids, ""), False).to_numpy(zero_copy_only=False)
    if (has_id & ~found).any():
        for sid in pc.filter(shot_ids, pa_mask(has_id & ~found)).to_pylist():
            log.warning("shot %s not in the shots table; clip bounds not checked", sid)
    p = pc.fill_null(pos, 0).to_numpy(zero_copy_only=False)
    s0 = pc.fill_null(shots.column("start"), float("nan")).to_numpy(zero_copy_only=False)[p]
    s1 = pc.fill_null(shots.column("end"), float("nan")).to_numpy(zero_copy_only=False)[p]
    with np.errstate(invalid="ignore"):
        out = found & has_id & ((c_start < s0 - EPS) | (c_end > s1 + EPS))
    if out.any():
        for i in np.nonzero(out)[0]:
            log.warning("clip %s-%s of %s leaves its shot [%s, %s]; clamped", c_start[i], c_end[i],
                        shot_ids[int(i)].as_py(), s0[i], s1[i])
        c_start = np.where(out, np.maximum(c_start, s0), c_start)
        c_end = np.where(out, np.minimum(c_end, s1), c_end)
    return c_start, c_end


def pa_mask(mask: Any) -> Any:
    import pyarrow as pa
    return pa.array(mask, type=pa.bool_())
