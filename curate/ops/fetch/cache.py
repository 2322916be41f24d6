"""The sidecar ``<source_id>.json`` beside each downloaded file (its format, segment times
and size) and the reuse of a finished file on a rerun (``cached_row``)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from curate.ops.fetch.errors import Failure
from curate.ops.fetch.options import DownloadOptions
from curate.ops.fetch.plan import Plan, check_file, seconds, short_note
from curate.ops.fetch.rows import downloads_row, join_notes, rendition_of
from manifests.atomic import write_json
from manifests.scratch import commit as commit_file
from manifests.schemas import STATUS_OK

log = logging.getLogger(__name__)


#: version of what a downloaded file is: 2 = stream copy on the source's clock, segment
#: times in the row and the sidecar (1 was a re-encode re-timed to start at 0). Part of
#: the download fingerprint: files of another format are fetched again.
DOWNLOAD_FORMAT = 2


def cached_row(sid: str, target: Path, opts: DownloadOptions,
               row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The finished file of an earlier run, if it is still whole and meets ``opts``."""
    if not target.is_file():
        return None
    seg = _read_sidecar(target)
    if seg is None:
        log.info("download %s: existing file not reused (no sidecar of format %d)", sid,
                 DOWNLOAD_FORMAT)
        target.unlink(missing_ok=True)
        return None
    try:
        facts = {**check_file(target, opts), **segment_facts(seg)}
    except Failure as f:
        # e.g. options got stricter or the file was damaged: fetch again
        log.info("download %s: existing file not reused (%s: %s)", sid, f.reason, f.message)
        target.unlink(missing_ok=True)
        return None
    try:   # a short source stays noted on every rerun
        short = short_note(Plan(sid, seconds(row.get("start"), "start", default=0.0),
                                  seconds(row.get("end"), "end", default=None)), facts)
    except Failure:
        short = None
    note = join_notes(short, seg.get("note"))
    return downloads_row(sid, str(target), STATUS_OK, "short" if short else "cached", note, facts,
                         rendition_of(row.get("path"), opts))


def sidecar_path(target: str | os.PathLike) -> Path:
    """``<source_id>.json`` beside ``<source_id>.mp4``: the segment times inside the file."""
    return Path(target).with_suffix(".json")


def read_segment(target: str | os.PathLike) -> tuple[float, float] | None:
    """(seg_start, seg_end) of a downloaded file from its sidecar (None: not a current one)."""
    seg = _read_sidecar(Path(target))
    return (float(seg["seg_start"]), float(seg["seg_end"])) if seg else None


def _read_sidecar(target: Path) -> dict[str, Any] | None:
    try:
        seg = json.loads(sidecar_path(target).read_text(encoding="utf-8"))
        if seg.get("format") != DOWNLOAD_FORMAT or seg.get("bytes") != target.stat().st_size:
            return None
        float(seg["seg_start"]), float(seg["seg_end"])
        return seg
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def segment_facts(seg: Mapping[str, Any]) -> dict[str, Any]:
    return {"seg_start": float(seg["seg_start"]), "seg_end": float(seg["seg_end"]),
            "stream_copy": bool(seg.get("stream_copy")),
            "duration": float(seg["seg_end"]) - float(seg["seg_start"])}


def commit(out: Path, target: Path, seg: Mapping[str, Any]) -> None:
    """Move the checked segment ``out`` onto ``target``, then write its sidecar: a file
    without a current sidecar is never reused."""
    sidecar = {"format": DOWNLOAD_FORMAT, **seg, "bytes": out.stat().st_size}
    commit_file(out, target)
    write_json(sidecar_path(target), sidecar)
