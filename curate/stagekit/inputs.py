"""What the stages read of earlier stages' manifests (the ok downloads of current sources)
and how a file is named in a fingerprint."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from manifests import schemas
from manifests.schemas import read_rows
from manifests.columns import read_columns


def ok_downloads(out: str | Path) -> list[dict]:
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


def rel_path(path: str, out: str | Path) -> str:
    """``path`` relative to ``out`` when it lies inside (fingerprints: a run copied or moved
    to another folder is the same run), else as given."""
    import os
    a, o = os.path.abspath(path), os.path.abspath(out)
    return os.path.relpath(a, o) if a.startswith(o + os.sep) else str(path)


def file_id(path: str, out: str | Path) -> list[Any]:
    """What identifies a file in a fingerprint: its path (relative to ``out`` inside it) and
    size."""
    try:
        st = Path(path).stat()
        return [rel_path(path, out), st.st_size]
    except OSError:
        return [rel_path(path, out), None]


def ok_download_table(out: str | Path) -> pa.Table:
    """Columns source_id, path, duration of the ok downloads of current sources (download
    order): ``ok_downloads`` without a row dict per source."""
    dl = read_columns(out, "downloads", ["source_id", "status", "path", "duration", "seg_start", "seg_end"])
    src = read_columns(out, "sources", ["source_id"]).column("source_id")
    ok = pc.and_(pc.equal(dl["status"], schemas.STATUS_OK), pc.is_in(dl["source_id"], value_set=src))
    return dl.filter(pc.fill_null(ok, False)).select(["source_id", "path", "duration", "seg_start", "seg_end"])


def take_by_key(keys: pa.ChunkedArray | pa.Array, table: pa.Table, key: str) -> tuple[pa.Array, pa.Array]:
    """(positions in ``table`` of each of ``keys`` (null: absent), found mask): a left join
    on a unique key as a ``take``, no sort and no copy of the left table."""
    pos = pc.index_in(keys, value_set=table[key].combine_chunks())
    return pos, pc.is_valid(pos)


def ok_paths(out: str | Path) -> dict[str, str]:
    t = ok_download_table(out)
    return dict(zip(t["source_id"].to_pylist(), t["path"].to_pylist()))


def ok_segments(out: str | Path) -> dict[str, list[float | None]]:
    """source_id -> [seg_start, seg_end] of the ok downloads (``segment_of``)."""
    t = ok_download_table(out)
    return {sid: [a, b] for sid, a, b in zip(*(t[c].to_pylist() for c in ("source_id", "seg_start", "seg_end")))}


def source_labels(out: str | Path) -> pa.Table:
    src = read_columns(out, "sources", ["source_id", "class_name", "split"])
    return src.rename_columns(["source_id", "_class", "_split"])
