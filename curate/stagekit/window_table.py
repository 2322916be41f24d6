"""The windows table: the split stage's current windows with the scores of the score records
computed from the same inputs, and what identifies split and score items in a fingerprint
(their inputs and params; no stage function here, so split and score both import this).

What an item's fingerprint covers, per stage (``inputs`` + ``params``):

- download: the source row's url/ytid/start/end/path, the download options (not cookies,
  proxy or rate limit) and the encoder settings;
- split: the downloaded file (path, duration, size), shot and window parameters; class and
  split are *not* inputs: windows take them from the current sources when assembled;
- score: the file, each window's (id, shot, start, end), the class text, the filters to
  score, gating, model weight ids (not thresholds: a looser one is `curate score`'s rescore);
- cut: source file, clip times, destination, cap and encoder settings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from decoding.media import GRID_DECODE
from decoding.mel import FBANK_ID
from manifests import schemas
from manifests.schemas import write_manifest
from filters import registry
from curate.execution.checkpoints import Checkpoint, fingerprint
from curate.config.models import weight_ids
from curate.config.run import resolve
from curate.stagekit.declare import empty_table
from curate.stagekit.inputs import file_id, ok_download_table, ok_paths, ok_segments, source_labels, take_by_key


def split_params(run: dict[str, Any]) -> dict[str, Any]:
    """The split stage's params (part of every split item's fingerprint)."""
    recipe = run["recipe"]
    return {"shots": recipe["shots"], "windows": recipe["windows"]}


def score_params(run: dict[str, Any], gate: list[str]) -> dict[str, Any]:
    """The score stage's params: model weight ids, gating, filters, cascade order, the grid
    decoder's version (``decoding.media.GRID_DECODE``). Thresholds
    are not among them: they only decide where the cascade stopped, and `curate score`
    (rescore) scores exactly the windows a looser threshold admits."""
    r = resolve(run)
    models, order = r.with_conventions(), r.order
    # the decoder's values are scored values: a decode that changes them rescores old runs once
    params = {"models": weight_ids(models), "run_models": run["recipe"]["models"],
              "gate": sorted(gate), "filters": run["recipe"]["filters"], "decode": GRID_DECODE}
    if order != registry.LEGACY_ORDER:   # the skip notes follow the order (older runs: none)
        params["order"] = list(order)
    if set(run["recipe"]["filters"]) & set(registry.FBANK_FILTERS):
        params["fbank"] = FBANK_ID       # their scores change with the fbank's arithmetic
    # the declared constants of the filters that have some (absent for the others, so their
    # runs keep their fingerprints)
    consts = {f: dict(registry.spec(f).params) for f in run["recipe"]["filters"]
              if f in registry.specs() and registry.spec(f).params}
    if consts:
        params["filter_params"] = consts
    return params


def split_current(out: str | Path, params: dict[str, Any]) -> dict[str, str]:
    """key -> fingerprint of the split items (``stages.split.split_items``), from Arrow columns."""
    t = ok_download_table(out)
    cols = ("source_id", "path", "duration", "seg_start", "seg_end")
    return {sid: fingerprint({"inputs": {"file": file_id(path, out), "duration": dur, "seg": [a, b]},
                              "params": params})
            for sid, path, dur, a, b in zip(*(t[c].to_pylist() for c in cols))}


def base_windows(out: str | Path, run: dict[str, Any]) -> pa.Table:
    """The split stage's current windows, class and split from the current sources."""
    current = split_current(out, split_params(run))
    base = Checkpoint(out, "split").tables(current, {"windows": schemas.WINDOWS}).get("windows")
    if base is None or base.num_rows == 0:
        return empty_table("windows")
    labels = source_labels(out)
    pos, _ = take_by_key(base["source_id"], labels, "source_id")   # first row of a source id
    base = base.set_column(base.column_names.index("class_name"), "class_name", labels["_class"].take(pos))
    base = base.set_column(base.column_names.index("split"), "split", labels["_split"].take(pos))
    return base.select(schemas.WINDOWS.names).cast(schemas.WINDOWS)


def _scored_cols() -> list[str]:
    return ["status", "error", *schemas.ALL_SCORES, *schemas.NOTE_COLUMNS]


def assemble_windows(out: str | Path, run: dict[str, Any], write: bool = True) -> pa.Table:
    """windows = the split stage's current windows, with the scores of the score records
    computed from the same inputs (file, shot, window times, class text, parameters).

    A window whose inputs changed comes back unscored; class and split always come from the
    current sources. Written only when its content changed."""
    base = base_windows(out, run)
    scored = current_scores(out, run, base)
    if scored is not None and scored.num_rows:
        # the last scored row of a window wins: reversed, ``index_in`` finds it first
        cols = _scored_cols()
        scored = scored.select(["window_id", *cols])
        scored = scored.take(pa.array(np.arange(scored.num_rows - 1, -1, -1)))
        pos, has = take_by_key(base["window_id"], scored, "window_id")
        for c in cols:
            col = pc.if_else(has, scored[c].take(pos), base[c])
            base = base.set_column(base.column_names.index(c), c, col)
        del scored
        base = base.select(schemas.WINDOWS.names).cast(schemas.WINDOWS)
    if write:
        write_manifest(out, "windows", base)
    return base


def stored_columns() -> tuple[str, ...]:
    """The score columns a rescore item carries per window (``inputs["stored"]``)."""
    return (*schemas.ALL_SCORES, *schemas.NOTE_COLUMNS)


WINDOW_INPUTS = ("window_id", "shot_id", "start", "end")
#: rows per block turned into Python values at a time while building score items
_ITEM_BLOCK_ROWS = 65536


def score_items(out: str | Path, windows: pa.Table, wanted: dict[str, set[str] | None] | None,
                 tag: str, paths: dict[str, str] | None = None) -> list[dict]:
    """One item per (source, filters to score): the segment is decoded once per item."""
    return list(iter_score_items(out, windows, wanted, tag, paths))


def _grouped_windows(windows: pa.Table, wanted: dict[str, set[str] | None] | None,
                     paths: dict[str, str]) -> tuple[pa.Table, list[str], np.ndarray] | None:
    """The windows to score sorted by (source, filters to score, row), the columns an item
    needs, and where each group starts (None: nothing to score)."""
    t = windows
    mask = pc.and_(pc.equal(t["status"], schemas.STATUS_OK),
                   pc.is_in(t["source_id"], value_set=pa.array(list(paths), pa.string())))
    if wanted is not None:
        mask = pc.and_(mask, pc.is_in(t["window_id"], value_set=pa.array(list(wanted), pa.string())))
    t = t.filter(pc.fill_null(mask, False))
    if t.num_rows == 0:
        return None
    only = [""] * t.num_rows if wanted is None else \
        ["+".join(sorted(wanted[w])) if wanted[w] else "" for w in t["window_id"].to_pylist()]
    cols = ["source_id", "class_name", *WINDOW_INPUTS, *(stored_columns() if wanted is not None else ())]
    t = t.select(cols).append_column("_only", pa.array(only, pa.string()))
    del only
    # '+' sorts before every filter-name character: the order of the (source, only-tuple) keys
    t = t.append_column("_i", pa.array(np.arange(t.num_rows), pa.int64()))
    t = t.sort_by([("source_id", "ascending"), ("_only", "ascending"), ("_i", "ascending")])
    sid = t["source_id"].combine_chunks().dictionary_encode().indices.to_numpy()
    onl = t["_only"].combine_chunks().dictionary_encode().indices.to_numpy()
    starts = np.concatenate([[0], np.flatnonzero((sid[1:] != sid[:-1]) | (onl[1:] != onl[:-1])) + 1,
                             [t.num_rows]])
    return t, cols, starts


def iter_score_items(out: str | Path, windows: pa.Table, wanted: dict[str, set[str] | None] | None,
                     tag: str, paths: dict[str, str] | None = None) -> Iterator[dict]:
    """Score items from the windows table, columnar: windows grouped by (source, filters to
    score) in sorted order, window order kept inside a group. ``wanted``: window id -> filters
    to rescore (None: every ok window, all filters). An item carries per window only what
    the worker needs, (id, shot, start, end) and, for a rescore, the stored scores; the
    Python values of one block of rows exist at a time."""
    from manifests.source_lists import display_name

    if paths is None:
        paths = ok_paths(out)
    segs = ok_segments(out)
    grouped = _grouped_windows(windows, wanted, paths)
    if grouped is None:
        return
    t, cols, starts = grouped
    g = 0
    while g < len(starts) - 1:   # blocks of whole groups of about _ITEM_BLOCK_ROWS rows
        h = int(np.searchsorted(starts, starts[g] + _ITEM_BLOCK_ROWS, side="right")) - 1
        h = max(h, g + 1)
        a0 = int(starts[g])
        block = t.slice(a0, int(starts[h]) - a0)
        v = {c: block[c].to_pylist() for c in (*cols, "_only")}
        wins = list(map(list, zip(*(v[c] for c in WINDOW_INPUTS))))
        stored = list(map(list, zip(*(v[c] for c in stored_columns())))) if wanted is not None else None
        for a, b in zip(starts[g:h] - a0, starts[g + 1:h + 1] - a0):
            s_id, onl_s = v["source_id"][a], v["_only"][a]
            text = display_name(v["class_name"][a] or "")
            only_l = onl_s.split("+") if onl_s else None
            key = s_id + (f"@{onl_s}@{tag}" if onl_s else "")
            seg = segs.get(s_id) or [None, None]
            inputs = {"file": file_id(paths[s_id], out), "seg": seg, "text": text, "only": only_l,
                      "windows": wins[a:b]}
            if onl_s:   # a rescore reads the stored scores of the other filters: they are inputs
                inputs["stored"] = stored[a:b]
            yield {"key": key, "path": paths[s_id], "seg": seg, "only": only_l, "text": text,
                   "inputs": inputs}
        g = h


def current_scores(out: str | Path, run: dict[str, Any], base: pa.Table) -> pa.Table | None:
    """Scored rows of the score records whose fingerprint matches the current inputs."""
    if "score" not in run["recipe"]["stages"] or base.num_rows == 0:
        return None
    ck = Checkpoint(out, "score")
    if not ck.parts():
        return None
    params = score_params(run, list(resolve(run).gate))
    # items one block at a time: only keys and fingerprints are kept
    current = {it["key"]: fingerprint({"inputs": it["inputs"], "params": params})
               for it in iter_score_items(out, base, None, "")}
    # a rescore record counts while the base record of its source is current
    idx = ck.index()
    for k, (fp, _n, _l) in idx.items():
        if "@" in k and current.get(k.split("@")[0]) == run.get("_rescore_base", {}).get(k):
            current[k] = fp
    return ck.tables(current, {"windows": schemas.WINDOWS}).get("windows")
