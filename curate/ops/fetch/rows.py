"""The DOWNLOADS row (manifests/schemas.py) a download returns."""
from __future__ import annotations

from typing import Any, Mapping

from curate.ops.fetch.options import DownloadOptions
from manifests.schemas import STATUS_FAILED, STATUS_OK


def downloads_row(source_id: str | None, path: str | None, status: str, reason: str,
                  error: str | None = None,
                  facts: Mapping[str, Any] | None = None, rendition: str | None = None) -> dict[str, Any]:
    """A DOWNLOADS-schema row (every column present).

    ``duration`` is the segment's (``seg_end - seg_start``), not the file's: the file may
    begin up to a GOP earlier (the keyframe a stream copy starts on). An ok row with a note
    (reason ``short``, or a re-encode) carries the note in ``error``: the schema has no
    separate note column, and status ``ok`` says it is not a failure."""
    facts = facts or {}
    return {
        "source_id": source_id, "path": path, "status": status, "reason": reason, "error": error,
        "duration": facts.get("duration"), "width": facts.get("width"),
        "height": facts.get("height"), "fps": facts.get("fps"),
        "has_audio": facts.get("has_audio"), "sample_rate": facts.get("sample_rate"),
        "audio_channels": facts.get("audio_channels"),
        "seg_start": facts.get("seg_start"), "seg_end": facts.get("seg_end"),
        "stream_copy": facts.get("stream_copy"),
        "rendition": rendition if status == STATUS_OK else None,
    }


# --------------------------------------------------------------------------- flow

def failed(sid: str | None, reason: str, message: str) -> dict[str, Any]:
    return downloads_row(sid, None, STATUS_FAILED, reason, message)


def join_notes(*notes: str | None) -> str | None:
    kept = [n for n in notes if n]
    return "; ".join(kept) if kept else None


def rendition_of(path: Any, opts: DownloadOptions) -> str:
    """A local file (a source row's ``path``, or a plan's) is used as it is (full); a
    fetched one is the rendition asked for."""
    return "full" if path else opts.rendition
