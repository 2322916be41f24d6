"""The stages of a curation run, as plain functions over manifests and an executor.

Each ``stage_*`` reads the previous stage's manifest from ``<out>/manifests`` and writes its
own. Per-item work goes through ``curate.runner.run_stage`` (streamed, fingerprinted
checkpoints) on whatever executor the caller gives (Ray in ``curate build``, serial in
tests). Run state lives in ``curate.run_state`` and the model-weights policy in
``curate.weights``; both are re-exported here for the callers that import them from
``curate.pipeline``.

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

import functools
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

import pyarrow as pa
import pyarrow.compute as pc

from filters import registry
from manifests import schemas
from manifests.schemas import read_rows, write_manifest
from curate.runner import (Checkpoint, Executor, StageSpec, fingerprint, format_failures,
                           item_fingerprint, run_stage)
from curate.run_state import RUN_FILE, cascade_order, engine_options, load_run, new_run, save_run  # noqa: F401
from curate.weights import (MODEL_FILTERS, WEIGHT_OPTIONS, build_scorers, check_weights,  # noqa: F401
                            gating, resolve_models, thresholds, weight_ids)

log = logging.getLogger(__name__)

Echo = Callable[[str], None] | None

# ----------------------------------------------------------------------------- helpers


def _run_kw(run: dict[str, Any], stage: str) -> dict[str, Any]:
    eng = engine_options(run)
    return {"flush_items": int(eng["flush_items"]), "flush_seconds": float(eng["flush_seconds"])}


def _spec_kw(run: dict[str, Any], stage: str) -> dict[str, Any]:
    eng = engine_options(run)
    timeout = (eng.get("timeout_s") or {}).get(stage)
    return {"timeout_s": float(timeout) if timeout else None, "max_tries": int(eng["max_tries"])}


def summarize_failures(stage: str, table: pa.Table | None, echo: Echo,
                       reason_col: str | None = None) -> str | None:
    """Echo ``stage: N failed: a reason1, b reason2`` over the stage's current rows."""
    if table is None or table.num_rows == 0 or "status" not in table.column_names:
        return None
    failed = table.filter(pc.equal(table["status"], schemas.STATUS_FAILED))
    if failed.num_rows == 0:
        return None
    if reason_col and reason_col in failed.column_names:
        reasons = [r or "error" for r in failed[reason_col].to_pylist()]
    else:
        reasons = [(e or "error").split(":")[0].strip()[:60] for e in failed["error"].to_pylist()]
    line = format_failures(stage, Counter(reasons))
    if echo and line:
        echo(line)
    return line


def _empty(table: str) -> pa.Table:
    return schemas.TABLES[table].empty_table()


# ----------------------------------------------------------------------------- sources

def stage_sources(out: str | Path, run: dict[str, Any], sources_file: str | Path,
                  limit: int | None = None) -> list[dict]:
    from manifests.classes import recipe_classes
    from manifests.sources import read_sources, recipe_assigns_split, require_split

    recipe = run["recipe"]
    kw: dict[str, Any] = {}
    if recipe.get("classes"):
        kw["classes"] = recipe_classes(recipe["classes"])
    fmt = recipe.get("source_format", "auto")
    if fmt in ("vggsound", "avsync"):
        kw["url_template"] = recipe.get("url_template")
    rows = require_split(read_sources(sources_file, fmt=fmt, **kw),
                         recipe_assigns_split(recipe.get("select")))
    if limit is not None:
        kept = 0
        for r in rows:
            if r["status"] == schemas.STATUS_OK:
                kept += 1
                if kept > limit:
                    r["status"], r["error"] = schemas.STATUS_SKIPPED, f"beyond --limit {limit}"
    write_manifest(out, "sources", rows)
    ok = sum(r["status"] == schemas.STATUS_OK for r in rows)
    log.info("sources: %d rows, %d accepted", len(rows), ok)
    return rows


# ----------------------------------------------------------------------------- download

def _download_factory(media_dir: str, opts: dict):
    from curate.download import DownloadOptions, download_source

    from curate.health import current_gate

    options = DownloadOptions(**opts)

    def fn(item: dict) -> dict:
        # the run's health control (one for all workers), set by the executor
        return {"downloads": [download_source(item["row"], Path(media_dir), options,
                                              gate=current_gate())]}
    return fn


def _download_error(item: dict, error: str) -> dict:
    reason = "timeout" if error.startswith("timeout") else \
        "worker_died" if error.startswith("worker") else "error"
    return {"downloads": [{"source_id": item["key"], "status": schemas.STATUS_FAILED,
                           "reason": reason, "error": error}]}


def download_options(run: dict[str, Any]) -> dict[str, Any]:
    d = dict(run["recipe"]["download"])
    d["url_template"] = run["recipe"].get("url_template", d.get("url_template"))
    for k in ("cookiefile", "proxy", "ratelimit", "socket_timeout", "extractor_args"):
        if run["options"].get(k):
            d[k] = run["options"][k]
    from curate.download import DownloadOptions
    known = set(DownloadOptions.__dataclass_fields__)
    return {k: v for k, v in d.items() if k in known}


#: options that change how a download is fetched, never what it yields
_DOWNLOAD_NON_INPUTS = {"cookiefile", "proxy", "ratelimit", "retries", "backoff", "socket_timeout",
                        "max_wait", "timeout_retries", "extractor_args"}
_DOWNLOAD_INPUTS = ("source_id", "ytid", "url", "start", "end", "path")


def _encoder_settings(run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's deterministic encoder settings (``curate.encoding``); part of the download
    and cut fingerprints and recorded in run.json by ``record_encoder``."""
    try:
        from curate.download import DownloadOptions
        from curate.encoding import encoder_settings
        return encoder_settings(DownloadOptions(**download_options(run)) if run else None)
    except Exception as e:  # noqa: BLE001 - ffmpeg missing: the download stage says so itself
        log.debug("no encoder settings: %s", e)
        return {}


#: download failures worth another try on `--retry-failed` (a 404 or a removed video is final)
TRANSIENT_REASONS = {"timeout", "http_error", "error", "worker_died", "throttled", "bot_check"}
_FINAL_HTTP = re.compile(r"HTTP Error (403|404|410)\b")


def record_encoder(out: str | Path, run: dict[str, Any]) -> None:
    """run.json["encoder"]: the encoder settings every re-encode of this run uses."""
    enc = _encoder_settings(run)
    if enc and run.get("encoder") != enc:
        run["encoder"] = enc
        save_run(out, run)


def _download_spec(run: dict[str, Any]) -> StageSpec:
    opts = download_options(run)
    eng = engine_options(run)
    from curate.download import DOWNLOAD_FORMAT
    # the format: a file of another one (a re-encode re-timed to 0) is fetched again;
    # rendition "full" is what every download was before the option: left out, old runs stay done
    params = {"download": {k: v for k, v in opts.items() if k not in _DOWNLOAD_NON_INPUTS
                           and not (k == "rendition" and v == "full")},
              "encoder": _encoder_settings(run), "format": DOWNLOAD_FORMAT}
    rate = run["options"].get("max_requests_per_s", eng.get("max_requests_per_s"))
    from curate.health import download_health
    return StageSpec("download", functools.partial(_download_factory, "", opts), _download_error,
                     params=params,
                     concurrency=int(run["options"].get("download_workers") or eng["download_workers"]),
                     rate_per_s=float(rate) if rate else None,
                     health=download_health(eng.get("download_health"), opts), **_spec_kw(run, "download"))


def stage_download(out: str | Path, run: dict[str, Any], executor: Executor,
                   retry_failed: bool = False, echo: Echo = None) -> list[dict]:
    record_encoder(out, run)
    sources = [r for r in read_rows(out, "sources") if r["status"] == schemas.STATUS_OK]
    redo: set[str] = set()
    if retry_failed and schemas.has_manifest(out, "downloads"):
        redo = {d["source_id"] for d in read_rows(out, "downloads")
                if d["status"] == schemas.STATUS_FAILED and d["reason"] in TRANSIENT_REASONS
                and not _FINAL_HTTP.search(d["error"] or "")}
    media = Path(out) / "media" / "raw"
    media.mkdir(parents=True, exist_ok=True)
    spec = _download_spec(run)
    spec.factory = functools.partial(_download_factory, str(media), download_options(run))
    from curate.health import echo_summary, record_state
    spec.on_health = functools.partial(record_state, str(out))
    root = download_options(run).get("source_root")
    items = [{"key": r["source_id"], "row": r,
              "inputs": {**{k: r.get(k) for k in _DOWNLOAD_INPUTS},
                         **({"local": _local_source_id(r, root)} if r.get("path") else {})}}
             for r in sources]
    res = run_stage(out, spec, items, executor, redo=redo, schemas={"downloads": schemas.DOWNLOADS},
                    **_run_kw(run, "download"))
    table = _rebase_downloads(out, res.table("downloads") or _empty("downloads"))
    write_manifest(out, "downloads", table)
    summarize_failures("download", table, echo, reason_col="reason")
    from curate.ledger import update_ledger
    update_ledger(out)       # every source's availability, kept across reruns
    if res.ran:
        echo_summary(out, echo)
    return table.to_pylist()


def two_pass(run: dict[str, Any]) -> bool:
    """Score small, fetch full only for survivors (recipe ``download.rendition: small``)."""
    return (run["recipe"].get("download") or {}).get("rendition") == "small"


def stage_fetch_full(out: str | Path, run: dict[str, Any], executor: Executor, source_ids: list[str],
                     downloads: dict[str, dict], echo: Echo = None) -> tuple[dict[str, dict], dict[str, str]]:
    """The full rendition (the recipe's ``max_height`` cap) of exactly ``source_ids`` (the
    sources of selected clips) into ``media/full/``, for the shard stage to cut from.
    Returns (downloads with the full files' path and size, {source_id: why it failed})."""
    import copy
    full_run = copy.deepcopy(run)
    full_run["recipe"]["download"]["rendition"] = "full"
    media = Path(out) / "media" / "full"
    media.mkdir(parents=True, exist_ok=True)
    spec = _download_spec(full_run)
    spec.name = "download_full"
    spec.factory = functools.partial(_download_factory, str(media), download_options(full_run))
    from curate.health import record_state
    spec.on_health = functools.partial(record_state, str(out))
    sources = {r["source_id"]: r for r in read_rows(out, "sources")}
    items = [{"key": sid, "row": sources[sid], "inputs": {k: sources[sid].get(k) for k in _DOWNLOAD_INPUTS}}
             for sid in sorted(set(source_ids)) if sid in sources]
    res = run_stage(out, spec, items, executor, schemas={"downloads": schemas.DOWNLOADS},
                    **_run_kw(run, "download"))
    table = res.table("downloads")
    summarize_failures("download full rendition", table, echo, reason_col="reason")
    full, failed = dict(downloads), {}
    for r in (table.to_pylist() if table is not None else []):
        sid = r["source_id"]
        if r["status"] == schemas.STATUS_OK:
            # the full file's own clock: a stream copy starts on its own keyframe
            full[sid] = {**downloads.get(sid, {}), "path": r["path"], "width": r["width"],
                         "height": r["height"], "duration": r["duration"], "rendition": "full",
                         "seg_start": r.get("seg_start"), "seg_end": r.get("seg_end")}
        else:
            full.pop(sid, None)
            failed[sid] = f"full rendition: {r['reason']}: {r['error']}"
    return full, failed


# ----------------------------------------------------------------------------- split

def _split_factory(shot_params: dict, window_params: dict):
    from curate.shots import shot_rows
    from curate.windows import make_windows

    def fn(item: dict) -> dict:
        seg = item.get("seg") or (None, None)
        shots = shot_rows(item["key"], item["path"], seg_start=seg[0], seg_end=seg[1], **shot_params)
        # class and split are filled from the current sources when the windows table is
        # assembled: a relabelled source does not redo its shot detection
        windows = make_windows(shots, None, None, **window_params)
        return {"shots": shots, "windows": windows}
    return fn


def _split_error(item: dict, error: str) -> dict:
    return {"shots": [{"shot_id": None, "source_id": item["key"], "shot_index": None,
                       "status": schemas.STATUS_FAILED, "error": error}]}


def _ok_downloads(out: str | Path) -> list[dict]:
    sources = {r["source_id"]: r for r in read_rows(out, "sources")}
    rows = []
    for d in read_rows(out, "downloads"):
        if d["status"] == schemas.STATUS_OK and d["source_id"] in sources:
            rows.append({**sources[d["source_id"]], "path": d["path"], "width": d["width"],
                         "height": d["height"], "duration": d["duration"],
                         "seg_start": d["seg_start"], "seg_end": d["seg_end"]})
    return rows


def segment_of(d: dict) -> list[float | None]:
    """[seg_start, seg_end] of a downloads row: where the segment lies on the file's own
    clock (a stream copy keeps the source's timestamps). Every stage that opens a downloaded
    file adds seg_start to its segment-relative times."""
    return [d.get("seg_start"), d.get("seg_end")]


def _rel(path: str, out: str | Path) -> str:
    """``path`` relative to ``out`` when it lies inside (fingerprints: a run copied or moved
    to another folder is the same run), else as given."""
    import os
    a, o = os.path.abspath(path), os.path.abspath(out)
    return os.path.relpath(a, o) if a.startswith(o + os.sep) else str(path)


def _file_id(path: str, out: str | Path) -> list[Any]:
    """What identifies a file in a fingerprint: its path (relative to ``out`` inside it) and
    size."""
    try:
        st = Path(path).stat()
        return [_rel(path, out), st.st_size]
    except OSError:
        return [_rel(path, out), None]


def _local_source_id(row: dict, source_root: str | None) -> list[Any] | None:
    """Size and mtime of a local source file (None for URLs): a file replaced at the same path
    is a new input and is read again."""
    if not row.get("path"):
        return None
    p = Path(row["path"])
    if not p.is_absolute() and source_root:
        p = Path(source_root) / p
    try:
        st = p.stat()
    except OSError:
        return [None, None]
    return [st.st_size, st.st_mtime_ns]


def _rebase_downloads(out: str | Path, table: pa.Table) -> pa.Table:
    """Download paths under this output's ``media/raw``, wherever the output was when they
    were downloaded (a run copied or moved to another folder reads its own files)."""
    if table.num_rows == 0 or "path" not in table.column_names:
        return table
    media = Path(out) / "media" / "raw"
    paths = table["path"].to_pylist()
    new = [str(media / f"{sid}.mp4") if p and Path(p).name == f"{sid}.mp4"
           and Path(p).parent.parts[-2:] == ("media", "raw") else p
           for p, sid in zip(paths, table["source_id"].to_pylist())]
    if new == paths:
        return table
    i = table.column_names.index("path")
    return table.set_column(i, table.schema.field(i), pa.array(new, table.schema.field(i).type))


def _split_spec(run: dict[str, Any]) -> StageSpec:
    recipe = run["recipe"]
    return StageSpec("split", functools.partial(_split_factory, recipe["shots"], recipe["windows"]),
                     _split_error, params={"shots": recipe["shots"], "windows": recipe["windows"]},
                     **_spec_kw(run, "split"))


def _split_items(out: str | Path) -> list[dict]:
    return [{"key": s["source_id"], "path": s["path"], "seg": segment_of(s),
             "inputs": {"file": _file_id(s["path"], out), "duration": s["duration"], "seg": segment_of(s)}}
            for s in _ok_downloads(out)]


def stage_split(out: str | Path, run: dict[str, Any], executor: Executor, echo: Echo = None
                ) -> tuple[pa.Table, pa.Table]:
    """Shots and windows (Arrow: a VGGSound-scale windows table never becomes row dicts)."""
    spec = _split_spec(run)
    res = run_stage(out, spec, _split_items(out), executor,
                    schemas={"shots": schemas.SHOTS, "windows": schemas.WINDOWS}, **_run_kw(run, "split"))
    shots = res.table("shots") or _empty("shots")
    write_manifest(out, "shots", shots)
    windows = assemble_windows(out, run)
    summarize_failures("split", shots, echo)
    return shots, windows


def _ok_download_table(out: str | Path) -> pa.Table:
    """Columns source_id, path, duration of the ok downloads of current sources (download
    order): ``_ok_downloads`` without a row dict per source."""
    dl = _read_columns(out, "downloads", ["source_id", "status", "path", "duration", "seg_start", "seg_end"])
    src = _read_columns(out, "sources", ["source_id"]).column("source_id")
    ok = pc.and_(pc.equal(dl["status"], schemas.STATUS_OK), pc.is_in(dl["source_id"], value_set=src))
    return dl.filter(pc.fill_null(ok, False)).select(["source_id", "path", "duration", "seg_start", "seg_end"])


def _read_columns(out: str | Path, table: str, columns: list[str]) -> pa.Table:
    """Only ``columns`` of a manifest (cast to its schema), not the whole table."""
    import pyarrow.parquet as pq
    path = schemas.manifest_path(out, table)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes '{table}' first")
    schema = schemas.TABLES[table]
    return pq.read_table(path, columns=columns).cast(pa.schema([schema.field(c) for c in columns]))


def _take_by_key(keys: pa.ChunkedArray | pa.Array, table: pa.Table, key: str) -> tuple[pa.Array, pa.Array]:
    """(positions in ``table`` of each of ``keys`` (null: absent), found mask): a left join
    on a unique key as a ``take``, no sort and no copy of the left table."""
    pos = pc.index_in(keys, value_set=table[key].combine_chunks())
    return pos, pc.is_valid(pos)


def _split_current(out: str | Path, spec: StageSpec) -> dict[str, str]:
    """key -> fingerprint of the split items (``_split_items``), from Arrow columns."""
    t = _ok_download_table(out)
    cols = ("source_id", "path", "duration", "seg_start", "seg_end")
    return {sid: fingerprint({"inputs": {"file": _file_id(path, out), "duration": dur, "seg": [a, b]},
                              "params": spec.params})
            for sid, path, dur, a, b in zip(*(t[c].to_pylist() for c in cols))}


def _ok_paths(out: str | Path) -> dict[str, str]:
    t = _ok_download_table(out)
    return dict(zip(t["source_id"].to_pylist(), t["path"].to_pylist()))


def _ok_segments(out: str | Path) -> dict[str, list[float | None]]:
    """source_id -> [seg_start, seg_end] of the ok downloads (``segment_of``)."""
    t = _ok_download_table(out)
    return {sid: [a, b] for sid, a, b in zip(*(t[c].to_pylist() for c in ("source_id", "seg_start", "seg_end")))}


def _source_labels(out: str | Path) -> pa.Table:
    src = _read_columns(out, "sources", ["source_id", "class_name", "split"])
    return src.rename_columns(["source_id", "_class", "_split"])


def _base_windows(out: str | Path, run: dict[str, Any]) -> pa.Table:
    """The split stage's current windows, class and split from the current sources."""
    spec = _split_spec(run)
    current = _split_current(out, spec)
    base = Checkpoint(out, "split").tables(current, {"windows": schemas.WINDOWS}).get("windows")
    if base is None or base.num_rows == 0:
        return _empty("windows")
    labels = _source_labels(out)
    pos, _ = _take_by_key(base["source_id"], labels, "source_id")   # first row of a source id
    base = base.set_column(base.column_names.index("class_name"), "class_name", labels["_class"].take(pos))
    base = base.set_column(base.column_names.index("split"), "split", labels["_split"].take(pos))
    return base.select(schemas.WINDOWS.names).cast(schemas.WINDOWS)


_SCORED_COLS = ["status", "error", *schemas.ALL_SCORES, *schemas.NOTE_COLUMNS]


def assemble_windows(out: str | Path, run: dict[str, Any], write: bool = True) -> pa.Table:
    """windows = the split stage's current windows, with the scores of the score records
    computed from the same inputs (file, shot, window times, class text, parameters).

    A window whose inputs changed comes back unscored; class and split always come from the
    current sources. Written only when its content changed."""
    base = _base_windows(out, run)
    scored = _current_scores(out, run, base)
    if scored is not None and scored.num_rows:
        # the last scored row of a window wins: reversed, ``index_in`` finds it first
        scored = scored.select(["window_id", *_SCORED_COLS])
        scored = scored.take(pa.array(np.arange(scored.num_rows - 1, -1, -1)))
        pos, has = _take_by_key(base["window_id"], scored, "window_id")
        for c in _SCORED_COLS:
            col = pc.if_else(has, scored[c].take(pos), base[c])
            base = base.set_column(base.column_names.index(c), c, col)
        del scored
        base = base.select(schemas.WINDOWS.names).cast(schemas.WINDOWS)
    if write:
        write_manifest(out, "windows", base)
    return base


# ----------------------------------------------------------------------------- score

def _decode_factory():
    from decoding.media import decode_grid

    def prep(item: dict):
        # the whole segment, once, for all its windows; grid times relative to the segment
        a, b = item.get("seg") or (None, None)
        if a is None:
            return decode_grid(item["path"])
        return decode_grid(item["path"], 0.0, b - a, offset=a)
    return prep


def _score_factory(models: dict, run_models: dict, th: dict, gate: list[str],
                   order: tuple[str, ...] | None = None):
    import torch

    from curate.scoring import deterministic_torch

    deterministic_torch()       # a window's scores: the same bits in every run
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scorers = build_scorers(models, run_models, device)

    def batch(items: list[dict], grids: list) -> list[dict]:
        """All the segments of an actor call (``scoring.score_segments``: per-segment
        forward passes, so the result does not depend on the call's composition)."""
        return _score_many(scorers, th, gate, items, grids, order)

    def fn(item: dict, grid) -> dict:
        return batch([item], [grid])[0]
    fn.batch = batch   # the scoring actor passes a whole call here (engine._StageActor)
    return fn


#: score columns a rescore item carries per window (``inputs["stored"]``)
_STORED = (*schemas.ALL_SCORES, *schemas.NOTE_COLUMNS)


def _item_windows(item: dict) -> list[dict]:
    """The window rows of a score item: id, shot and times, plus the stored scores of a
    rescore (the other filters' scores gate its cascade)."""
    ws = [dict(zip(_WINDOW_INPUTS, w)) for w in item["inputs"]["windows"]]
    for w, stored in zip(ws, item["inputs"].get("stored") or ()):
        w.update(zip(_STORED, stored))
    return ws


def _score_many(scorers, th: dict, gate: list[str], items: list[dict], grids: list,
                order: tuple[str, ...] | None = None) -> list[dict]:
    from curate.scoring import SegmentJob, score_segments

    jobs = [SegmentJob(g, _item_windows(it), it["text"], set(it["only"]) if it.get("only") else None,
                       path=it.get("path"), offset=(it.get("seg") or [None])[0] or 0.0)
            for it, g in zip(items, grids)]
    rows = score_segments(jobs, scorers, th, cascade=True, gate=set(gate), order=order)
    return [{"windows": [_past_video_end(r, g) for r in rs]} for rs, g in zip(rows, grids)]


def _past_video_end(row: dict, grid) -> dict:
    """A window reaching past where the video really ends saw repeated last frames: its
    scores mean nothing, so it is failed with the decode note."""
    if grid.video_end is None or row["end"] <= grid.video_end + 1e-3:
        return row
    note = "; ".join(grid.notes) or f"video ends at {grid.video_end:.2f} s"
    return {**row, "status": schemas.STATUS_FAILED, "error": f"decode: {note}; window past the video's end"}


def _score_error(item: dict, error: str) -> dict:
    return {"windows": [{**w, "status": schemas.STATUS_FAILED, "error": f"score: {error}"}
                        for w in _item_windows(item)]}


_WINDOW_INPUTS = ("window_id", "shot_id", "start", "end")
#: rows per block turned into Python values at a time while building score items
_ITEM_BLOCK_ROWS = 65536


def _score_items(out: str | Path, windows: pa.Table, wanted: dict[str, set[str] | None] | None,
                 tag: str, paths: dict[str, str] | None = None) -> list[dict]:
    """One item per (source, filters to score): the segment is decoded once per item."""
    return list(_iter_score_items(out, windows, wanted, tag, paths))


def _iter_score_items(out: str | Path, windows: pa.Table, wanted: dict[str, set[str] | None] | None,
                      tag: str, paths: dict[str, str] | None = None) -> Iterator[dict]:
    """Score items from the windows table, columnar: windows grouped by (source, filters to
    score) in sorted order, window order kept inside a group. ``wanted``: window id -> filters
    to rescore (None: every ok window, all filters). An item carries per window only what
    the worker needs, (id, shot, start, end) and, for a rescore, the stored scores; the
    Python values of one block of rows exist at a time."""
    from manifests.sources import display_name

    if paths is None:
        paths = _ok_paths(out)
    segs = _ok_segments(out)
    t = windows
    mask = pc.and_(pc.equal(t["status"], schemas.STATUS_OK),
                   pc.is_in(t["source_id"], value_set=pa.array(list(paths), pa.string())))
    if wanted is not None:
        mask = pc.and_(mask, pc.is_in(t["window_id"], value_set=pa.array(list(wanted), pa.string())))
    t = t.filter(pc.fill_null(mask, False))
    if t.num_rows == 0:
        return
    only = [""] * t.num_rows if wanted is None else \
        ["+".join(sorted(wanted[w])) if wanted[w] else "" for w in t["window_id"].to_pylist()]
    cols = ["source_id", "class_name", *_WINDOW_INPUTS, *(_STORED if wanted is not None else ())]
    t = t.select(cols).append_column("_only", pa.array(only, pa.string()))
    del only
    # '+' sorts before every filter-name character: the order of the (source, only-tuple) keys
    t = t.append_column("_i", pa.array(np.arange(t.num_rows), pa.int64()))
    t = t.sort_by([("source_id", "ascending"), ("_only", "ascending"), ("_i", "ascending")])
    sid = t["source_id"].combine_chunks().dictionary_encode().indices.to_numpy()
    onl = t["_only"].combine_chunks().dictionary_encode().indices.to_numpy()
    starts = np.concatenate([[0], np.flatnonzero((sid[1:] != sid[:-1]) | (onl[1:] != onl[:-1])) + 1,
                             [t.num_rows]])
    g = 0
    while g < len(starts) - 1:   # blocks of whole groups of about _ITEM_BLOCK_ROWS rows
        h = int(np.searchsorted(starts, starts[g] + _ITEM_BLOCK_ROWS, side="right")) - 1
        h = max(h, g + 1)
        a0 = int(starts[g])
        block = t.slice(a0, int(starts[h]) - a0)
        v = {c: block[c].to_pylist() for c in (*cols, "_only")}
        wins = list(map(list, zip(*(v[c] for c in _WINDOW_INPUTS))))
        stored = list(map(list, zip(*(v[c] for c in _STORED)))) if wanted is not None else None
        for a, b in zip(starts[g:h] - a0, starts[g + 1:h + 1] - a0):
            s_id, onl_s = v["source_id"][a], v["_only"][a]
            text = display_name(v["class_name"][a] or "")
            only_l = onl_s.split("+") if onl_s else None
            key = s_id + (f"@{onl_s}@{tag}" if onl_s else "")
            seg = segs.get(s_id) or [None, None]
            inputs = {"file": _file_id(paths[s_id], out), "seg": seg, "text": text, "only": only_l,
                      "windows": wins[a:b]}
            if onl_s:   # a rescore reads the stored scores of the other filters: they are inputs
                inputs["stored"] = stored[a:b]
            yield {"key": key, "path": paths[s_id], "seg": seg, "only": only_l, "text": text,
                   "inputs": inputs}
        g = h


def _score_spec(run: dict[str, Any], th: dict, gate: list[str]) -> StageSpec:
    eng = engine_options(run)
    models = resolve_models(run)
    order = cascade_order(run)
    factory = functools.partial(_score_factory, models, run["recipe"]["models"], th, gate, order)
    # thresholds are not an input: they only decide where the cascade stopped, and
    # `curate score` (rescore) scores exactly the windows a looser threshold admits
    params = {"models": weight_ids(models), "run_models": run["recipe"]["models"],
              "gate": sorted(gate), "filters": run["recipe"]["filters"]}
    if order != registry.LEGACY_ORDER:   # the skip notes follow the order (older runs: none)
        params["order"] = list(order)
    return StageSpec("score", factory, _score_error, stateful=True, prepare=_decode_factory,
                     num_gpus=1.0 / max(float(eng["score_actors_per_gpu"]), 1.0),
                     batch_size=int(eng["score_batch_size"]), params=params, **_spec_kw(run, "score"))


def _current_scores(out: str | Path, run: dict[str, Any], base: pa.Table) -> pa.Table | None:
    """Scored rows of the score records whose fingerprint matches the current inputs."""
    if "score" not in run["recipe"]["stages"] or base.num_rows == 0:
        return None
    ck = Checkpoint(out, "score")
    if not ck.parts():
        return None
    gate, _ = gating(run)
    th = thresholds(run, run.get("selection_overrides"))
    spec = _score_spec(run, th, gate)
    # items one block at a time: only keys and fingerprints are kept
    current = {it["key"]: item_fingerprint(spec, it) for it in _iter_score_items(out, base, None, "")}
    # a rescore record counts while the base record of its source is current
    idx = ck.index()
    for k, (fp, _n, _l) in idx.items():
        if "@" in k and current.get(k.split("@")[0]) == run.get("_rescore_base", {}).get(k):
            current[k] = fp
    return ck.tables(current, {"windows": schemas.WINDOWS}).get("windows")


#: GPU share of one scoring actor when Ray sees GPUs (default 1 / score_actors_per_gpu)
SCORE_GPUS_PER_ACTOR = 0.5


def stage_score(out: str | Path, run: dict[str, Any], executor: Executor,
                rescore: bool = False, num_gpus: float | None = None, echo: Echo = None) -> pa.Table:
    """Score every window not yet scored (from its current inputs); with ``rescore``, score
    exactly the windows the current thresholds admit but the cascade skipped, and only their
    missing filters. Returns the assembled windows table (Arrow: no row dicts at scale)."""
    from curate.select import needs_scoring_table, rescore_filters

    # the same rows ``assemble_windows`` fingerprints: the split stage's, unscored
    base = _base_windows(out, run)
    gate, _ = gating(run)
    th = thresholds(run, run.get("selection_overrides"))
    spec = _score_spec(run, th, gate)
    if num_gpus is not None:
        spec.num_gpus = num_gpus
    # the run records the sync classifier's preprocessing convention (issue 15)
    conv = spec.params["models"].get("sync", {}).get("convention")
    if conv and run.get("sync_convention") != conv:
        run["sync_convention"] = conv
        save_run(out, run)
    paths = _ok_paths(out)
    if rescore:
        import hashlib
        assembled = assemble_windows(out, run, write=False)
        wanted: dict[str, set[str] | None] = {}
        order = cascade_order(run)
        for first, ids in needs_scoring_table(assembled, th, set(gate), order).items():
            wanted.update({i: rescore_filters(first, order) for i in ids})
        if not wanted:
            return assembled
        tag = hashlib.sha1("\n".join(sorted(wanted)).encode()).hexdigest()[:12]
        items = _score_items(out, assembled, wanted, tag, paths)
        del assembled
        need = {it["key"].split("@")[0] for it in items}
        base_fp = {it["key"]: item_fingerprint(spec, it)
                   for it in _iter_score_items(out, base, None, "", paths) if it["key"] in need}
        bases = run.setdefault("_rescore_base", {})
        for it in items:
            bases[it["key"]] = base_fp.get(it["key"].split("@")[0])
        save_run(out, run)
    else:
        items = _score_items(out, base, None, "", paths)
    del base
    res = run_stage(out, spec, items, executor, schemas={"windows": schemas.WINDOWS},
                    **_run_kw(run, "score"))
    del items
    table = assemble_windows(out, run)
    summarize_failures("score", table, echo)
    log.info("score: %d items scored, %d already done", res.ran, res.skipped)
    return table


# ----------------------------------------------------------------------------- select

def stage_select(out: str | Path, run: dict[str, Any], overrides: list[str] | None = None,
                 decisions_file: str | Path | None = None) -> dict[str, Any]:
    """Thresholds on stored scores -> decisions -> merged clips -> balanced, split selection
    (columnar, ``curate.select.select_stage``). Touches no model: re-selecting takes seconds."""
    from curate.select import select_stage
    return select_stage(out, run, overrides=overrides, decisions_file=decisions_file)


# ----------------------------------------------------------------------------- shard

def _cut_factory(cap: int | None):
    from curate.cut import cut_clip

    def fn(item: dict) -> dict:
        # clip times are relative to the segment: on the file's clock they start at seg_start
        info = cut_clip(item["src"], item["dst"], item["start"], item["end"], max_short_side=cap,
                        offset=item.get("offset") or 0.0)
        return {"cuts": [{"key": item["key"], "path": item["dst"], "status": schemas.STATUS_OK,
                          "error": None, "duration": info.get("duration"),
                          **{c: info.get(c) for c in CUT_COLUMNS}}]}
    return fn


#: what the cut reports of each clip, kept in the selected / clips manifests and sample JSON
CUT_COLUMNS = schemas.CUT_COLUMNS


def _rebase_cut(cut: dict, clip_dir: Path) -> dict:
    """A cut clip's path under this output's ``media/clips`` (the output may have moved)."""
    p = cut.get("path")
    if p and Path(p).parent.parts[-2:] == ("media", "clips"):
        return {**cut, "path": str(clip_dir / Path(p).name)}
    return cut


def _cut_error(item: dict, error: str) -> dict:
    return {"cuts": [{"key": item["key"], "path": None, "status": schemas.STATUS_FAILED, "error": error}]}


def class_list(run: dict[str, Any], selected: list[dict]) -> list[str]:
    """Class index order: the recipe's class list when it has one, else sorted names."""
    names = sorted({s["class_name"] for s in selected if s["class_name"]})
    if run["recipe"].get("classes"):
        from manifests.classes import recipe_folders
        base = recipe_folders(run["recipe"]["classes"])
        return base + [n for n in names if n not in base]
    return names


def _shards_unchanged(out: str | Path, fp: str) -> list[dict] | None:
    """The shard rows of the last write when it was made from the same inputs and its
    files are all still there (a finished rerun rewrites no tar)."""
    import json
    state = Path(out) / "work" / "shard" / "state.json"
    if not state.exists() or not schemas.has_manifest(out, "shards"):
        return None
    try:
        if json.loads(state.read_text()).get("fp") != fp:
            return None
    except (OSError, ValueError):
        return None
    rows = read_rows(out, "shards")
    shard_dir = Path(out) / "shards"
    if all((shard_dir / r["shard"]).exists() for r in rows):
        return rows
    return None


def stage_shard(out: str | Path, run: dict[str, Any], executor: Executor, echo: Echo = None) -> list[dict]:
    """Cut every selected clip (Ray tasks), then write each split's shards and their index."""
    from manifests.atomic import write_json
    from shards.writer import make_sample, split_groups, write_shards
    from curate.reproduce import unique_cut_items
    from curate.runner import fingerprint

    recipe = run["recipe"]
    all_selected = read_rows(out, "selected")
    # a clip with no (or an invalid) split cannot go to a shard: recorded in `selected`
    groups, unshardable = split_groups(s for s in all_selected if s["status"] == schemas.STATUS_OK)
    why = {(r["key"], r["split"]): r["error"] for r in unshardable}
    for s in all_selected:
        if (s["key"], s["split"]) in why and s["status"] == schemas.STATUS_OK:
            s["status"], s["error"] = schemas.STATUS_FAILED, why[(s["key"], s["split"])]
    selected = [s for g in groups.values() for s in g]
    downloads = {d["source_id"]: d for d in _ok_downloads(out)}
    full_failed: dict[str, str] = {}
    if two_pass(run):   # scored on the small rendition: cut from the full one
        downloads, full_failed = stage_fetch_full(out, run, executor, [s["source_id"] for s in selected],
                                                  downloads, echo)
    clips = {c["clip_id"]: c for c in read_rows(out, "clips")} if schemas.has_manifest(out, "clips") else {}
    clip_dir = Path(out) / "media" / "clips"
    clip_dir.mkdir(parents=True, exist_ok=True)
    cap = recipe["shards"].get("max_short_side")
    items = [_cut_item(s, downloads[s["source_id"]], clip_dir, out) for s in selected if s["source_id"] in downloads]
    items = unique_cut_items(items)   # a clip listed in train and test is cut once
    spec = StageSpec("cut", functools.partial(_cut_factory, cap), _cut_error,
                     params={"cap": cap, "encoder": _encoder_settings(run)}, **_spec_kw(run, "cut"))
    res = run_stage(out, spec, items, executor, **_run_kw(run, "cut"))
    cut_table = res.table("cuts")
    cuts = {c["key"]: _rebase_cut(c, clip_dir) for c in (cut_table.to_pylist() if cut_table is not None else [])}
    for s in selected:      # no full rendition: the clip is not cut (and says why)
        if s["source_id"] in full_failed:
            cuts[s["key"]] = {"key": s["key"], "status": schemas.STATUS_FAILED, "error": full_failed[s["source_id"]]}
    # before the fingerprint: a rerun fills the same values (split_groups may copy the rows)
    _fill_cut_columns(all_selected, cuts)
    _fill_cut_columns(selected, cuts)
    classes = class_list(run, selected)
    fp = fingerprint({"selected": selected, "cuts": res.current, "classes": classes,
                      "shards": recipe["shards"], "sources": sorted(downloads),
                      "clips": sorted(clips)})
    rows = _shards_unchanged(out, fp)
    if rows is None:
        rows = []
        for split, members in groups.items():
            samples = [make_sample(s, cuts[s["key"]]["path"], classes.index(s["class_name"]),
                                   source=downloads[s["source_id"]], clip=clips.get(s["clip_id"]),
                                   duration=cuts[s["key"]].get("duration"))
                       for s in members if cuts.get(s["key"], {}).get("status") == schemas.STATUS_OK]
            rows += write_shards(out, samples, split, max_count=recipe["shards"]["max_count"],
                                 max_bytes=recipe["shards"]["max_bytes"])
        write_manifest(out, "shards", rows)
        write_json(Path(out) / "work" / "shard" / "state.json", {"fp": fp})
    _record_cut_failures(out, all_selected, cuts)
    _record_cuts_in_clips(out, clips, all_selected)
    if cut_table is not None:
        summarize_failures("cut", cut_table, echo)
    return rows


def _cut_item(s: dict, download: dict, clip_dir: Path, out: str | Path) -> dict:
    dst = str(clip_dir / f"{s['key']}.mp4")
    offset = download.get("seg_start") or 0.0
    return {"key": s["key"], "src": download["path"], "dst": dst, "start": s["start"], "end": s["end"],
            "offset": offset,
            "inputs": {"src": _file_id(download["path"], out), "dst": _rel(dst, out), "start": s["start"],
                       "end": s["end"], "offset": offset}}


def _fill_cut_columns(selected: list[dict], cuts: dict[str, dict]) -> None:
    """cut_start / cut_end / av_offset_ms of each cut clip into its selected row."""
    for s in selected:
        c = cuts.get(s["key"] or "")
        ok = c is not None and c["status"] == schemas.STATUS_OK
        for col in CUT_COLUMNS:
            s[col] = c.get(col) if ok else None


def _record_cuts_in_clips(out: str | Path, clips: dict[str, dict], selected: list[dict]) -> None:
    """The merged clips a shard clip was cut from carry its cut columns too (written only
    when that changes the clips manifest)."""
    if not clips:
        return
    by_clip = {s["clip_id"]: s for s in selected if s.get("clip_id") in clips and s.get("cut_start") is not None}
    rows = [{**c, **{col: by_clip[cid][col] if cid in by_clip else None for col in CUT_COLUMNS}}
            for cid, c in clips.items()]
    write_manifest(out, "clips", rows)


def _record_cut_failures(out: str | Path, selected: list[dict], cuts: dict[str, dict]) -> None:
    """A clip that could not be cut stays in `selected`, failed, with the reason."""
    for s in selected:
        c = cuts.get(s["key"] or "")
        if s["status"] == schemas.STATUS_OK and c and c["status"] != schemas.STATUS_OK:
            s["status"], s["error"] = schemas.STATUS_FAILED, f"cut: {c['error']}"
    write_manifest(out, "selected", selected)


# ----------------------------------------------------------------------------- exact reproduction

def stage_reproduce_sources(out: str | Path, run: dict[str, Any], lists: list[str | Path]) -> list[dict]:
    """Sources of one or more AVSync15 lists (one row per distinct 10-s segment)."""
    from manifests.sources import read_avsync_list

    rows, seen = [], set()
    for lst in lists:
        for r in read_avsync_list(lst, url_template=run["recipe"].get("url_template")):
            if r["status"] == schemas.STATUS_OK and r["source_id"] in seen:
                continue        # the same segment listed in train and test: download once
            seen.add(r["source_id"])
            rows.append(r)
    write_manifest(out, "sources", rows)
    return rows


def stage_reproduce(out: str | Path, run: dict[str, Any], lists: list[str | Path]) -> list[dict]:
    """Exactly the clips the lists name (no scoring, no selection): the selected table."""
    from curate.reproduce import downloads_lookup, reproduce_list

    lookup = downloads_lookup(read_rows(out, "downloads"), read_rows(out, "sources"))
    selected: list[dict] = []
    for lst in lists:
        selected += reproduce_list(lst, lookup=lookup)
    write_manifest(out, "selected", selected)
    return selected
