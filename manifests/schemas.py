"""Every Parquet table of a curation run, declared once.

A row never disappears: each table has ``status`` and ``error`` so a failure is recorded
where it happened. Times are seconds relative to the downloaded 10-s segment.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from manifests.bounded import regular_file

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_REJECTED = "rejected"
STATUS_SKIPPED = "skipped"

_s = pa.string()
_f = pa.float64()
_i = pa.int64()
_b = pa.bool_()

#: the score columns (``ALL_SCORES``, ``SCORE_COLUMNS``, ``NOTE_COLUMNS``, ``FILTERS``) come
#: from the filters' declarations (``filters.registry``): module attributes computed on use,
#: like the two tables that hold them (``WINDOWS``, ``CLIPS``) and ``TABLES``
_FROM_FILTERS = ("FILTERS", "SCORE_COLUMNS", "ALL_SCORES", "NOTE_COLUMNS", "CLIP_MAX_COLUMNS",
                 "CLIP_COLUMNS", "CLIP_ONLY_COLUMNS", "CERT_CLIP_COLUMNS")

_status = [pa.field("status", _s), pa.field("error", _s)]
#: filled by the shard stage: the frame instants actually cut (relative to the segment, like
#: start/end; the name keeps the list's times) and the clip's first audio sample time minus
#: its first video frame time, read back from the written clip (ms)
#: a repair (``curate.selection.repair``, recipe ``repair``): ``av_shift_ms`` the audio shift the
#: cut applied (the clip's audio at t is the source's at t + shift; positive = the source's
#: audio was late; 0 = none), ``repaired`` whether the clip shipped repaired (its rescore
#: found offset 0), ``repair_note`` why a repair was made, refused or rejected (None: repair off)
REPAIR_COLUMNS = ("av_shift_ms", "repaired", "repair_note")
CUT_COLUMNS = ("cut_start", "cut_end", "av_offset_ms", *REPAIR_COLUMNS)
_CUT_TYPES = {"repaired": _b, "repair_note": _s}
_CUT = [pa.field(c, _CUT_TYPES.get(c, _f)) for c in CUT_COLUMNS]
#: filled by the certify stage (``filters/synchformer.py``: Synchformer on the merged clip's
#: first and last 4.8-s contexts): signed offset (s), its probability and the probability of
#: offset 0 for each, DeSync (mean |offset|, av-benchmark), and a note (a centred context, or
#: why there is no certificate)
CERT_COLUMNS = ("sf_offset_first", "sf_prob_first", "sf_p0_first",
                "sf_offset_last", "sf_prob_last", "sf_p0_last", "desync_s")
CERT_NOTE = "cert_note"
_CERT = [*(pa.field(c, _f) for c in CERT_COLUMNS), pa.field(CERT_NOTE, _s)]
#: columns measured after selection, kept by a re-select for rows of the same clip and times
MEASURED_COLUMNS = (*CUT_COLUMNS, *CERT_COLUMNS, CERT_NOTE)

SOURCES = pa.schema([
    pa.field("source_id", _s), pa.field("ytid", _s), pa.field("start", _f), pa.field("end", _f),
    pa.field("label", _s), pa.field("class_name", _s), pa.field("split", _s),
    pa.field("url", _s), pa.field("path", _s), *_status,
])

DOWNLOADS = pa.schema([
    pa.field("source_id", _s), pa.field("path", _s), pa.field("status", _s),
    pa.field("reason", _s), pa.field("error", _s), pa.field("duration", _f),
    pa.field("width", _i), pa.field("height", _i), pa.field("fps", _f),
    pa.field("has_audio", _b), pa.field("sample_rate", _i), pa.field("audio_channels", _i),
    # where the segment lies on the downloaded file's own clock (a stream copy keeps its
    # source's timestamps and starts on the keyframe before the segment); duration = the
    # segment's; stream_copy False = re-encoded (the note in error says why)
    pa.field("seg_start", _f), pa.field("seg_end", _f), pa.field("stream_copy", _b),
    # "small" (scored at the smallest rendition >= 224 px) or "full"; the scores of a
    # source's windows were computed on this file (the shard stage cuts from the full rendition)
    pa.field("rendition", _s),
])

SHOTS = pa.schema([
    pa.field("shot_id", _s), pa.field("source_id", _s), pa.field("shot_index", _i),
    pa.field("start", _f), pa.field("end", _f), *_status,
])

def _windows() -> pa.Schema:
    from filters import registry
    return pa.schema([
        pa.field("window_id", _s), pa.field("source_id", _s), pa.field("shot_id", _s),
        pa.field("class_name", _s), pa.field("split", _s), pa.field("start", _f), pa.field("end", _f),
        *_status,
        *[pa.field(c, _f) for c in registry.ALL_SCORES],
        *[pa.field(c, _s) for c in registry.NOTE_COLUMNS],
    ])


DECISIONS = pa.schema([
    pa.field("window_id", _s), pa.field("keep", _b), pa.field("reason", _s),
])


def _clips() -> pa.Schema:
    from filters import registry
    return pa.schema([
        pa.field("clip_id", _s), pa.field("source_id", _s), pa.field("shot_id", _s),
        pa.field("class_name", _s), pa.field("split", _s), pa.field("start", _f), pa.field("end", _f),
        pa.field("n_windows", _i), *[pa.field(c, _f) for c in registry.ALL_SCORES],
        *[pa.field(c, _f) for c in registry.CLIP_MAX_COLUMNS],
        *[pa.field(c, _f) for c in registry.CLIP_ONLY_COLUMNS], *_status,
        *_CUT, *_CERT,
    ])


def _selected() -> pa.Schema:
    """The selected clips; the filters' certificate columns (``ClipColumn.certificate``: the
    sync classifier's clip offset) are copied from the clip by select."""
    from filters import registry
    return pa.schema([
        pa.field("key", _s), pa.field("name", _s), pa.field("clip_id", _s), pa.field("source_id", _s),
        pa.field("class_name", _s), pa.field("split", _s), pa.field("start", _f), pa.field("end", _f),
        pa.field("rank_score", _f), *_status, *_CUT, *_CERT,
        *[pa.field(c, _f) for c in registry.CERT_CLIP_COLUMNS],
    ])

SHARDS = pa.schema([
    pa.field("key", _s), pa.field("split", _s), pa.field("shard", _s), pa.field("offset", _i),
    pa.field("size", _i), pa.field("sha256", _s),
])

#: one row per source ever downloaded by the run, kept across reruns (curate/reports/ledger.py)
LEDGER = pa.schema([
    pa.field("source_id", _s), pa.field("ytid", _s), pa.field("url", _s),
    pa.field("availability", _s), pa.field("reason", _s), pa.field("error", _s),
    pa.field("first", _s), pa.field("changes", _i), pa.field("current", _b),
])

def _tables() -> dict[str, pa.Schema]:
    return {"sources": SOURCES, "downloads": DOWNLOADS, "shots": SHOTS, "windows": _windows(),
            "decisions": DECISIONS, "clips": _clips(), "selected": _selected(), "shards": SHARDS,
            "ledger": LEDGER}


def __getattr__(name: str) -> Any:
    if name in _FROM_FILTERS:
        from filters import registry
        return getattr(registry, name)
    derived = {"WINDOWS": _windows, "CLIPS": _clips, "SELECTED": _selected, "TABLES": _tables}
    if name in derived:
        return derived[name]()
    raise AttributeError(f"module 'manifests.schemas' has no attribute {name!r}")


def manifest_path(out: str | os.PathLike, table: str) -> Path:
    if table not in _tables():
        raise KeyError(f"unknown table {table!r}; known: {sorted(_tables())}")
    return Path(out) / "manifests" / f"{table}.parquet"


def to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) to a table of ``schema``; missing columns become null, unknown ones are an error."""
    rows = list(rows)
    names = set(schema.names)
    for r in rows:
        extra = set(r) - names
        if extra:
            raise ValueError(f"columns not in schema: {sorted(extra)}")
    cols = {n: [r.get(n) for r in rows] for n in schema.names}
    return pa.table(cols, schema=schema)


def write_atomic(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write Parquet to a temp file in the same folder, then rename: readers never see half a file."""
    from manifests.atomic import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def write_manifest(out: str | os.PathLike, table: str, data: pa.Table | Iterable[Mapping[str, Any]]) -> Path:
    """Write one of the declared tables, cast to its schema."""
    schema = _tables()[table]
    if not isinstance(data, pa.Table):
        data = to_table(data, schema)
    else:
        data = data.select(schema.names).cast(schema)
    path = manifest_path(out, table)
    if path.exists():
        # a rerun that changes nothing rewrites nothing (mtimes and bytes stay)
        try:
            if pq.read_table(path, schema=schema).equals(data):
                return path
        except Exception:  # noqa: BLE001 - an unreadable old file is simply replaced
            pass
    return write_atomic(data, path)


def read_manifest(out: str | os.PathLike, table: str) -> pa.Table:
    path = manifest_path(out, table)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes '{table}' first")
    regular_file(path, "manifest")
    try:
        return pq.read_table(path, schema=_tables()[table])
    except UNREADABLE as e:
        raise unreadable(path, table, e) from e


#: what pyarrow raises for a file that is not the Parquet table it should be
UNREADABLE = (OSError, ValueError, pa.ArrowException)


def unreadable(path: Path, table: str, e: BaseException) -> ValueError:
    """One line naming a manifest that cannot be read, and what to do."""
    why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return ValueError(f"manifest {path} cannot be read ({why}): rerun the stage that writes "
                      f"'{table}' (finished work is kept)")


def read_rows(out: str | os.PathLike, table: str) -> list[dict[str, Any]]:
    return read_manifest(out, table).to_pylist()


def has_manifest(out: str | os.PathLike, table: str) -> bool:
    return manifest_path(out, table).exists()
