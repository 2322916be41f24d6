"""Exact reproduction of a released AVSync15 list (train.txt / test.txt).

Each list line ``{class}/{ytid}_{segStart:06d}_{segEnd:06d}_{clipStart}_{clipEnd}`` names one
clip with times relative to its 10-s segment. ``reproduce_list`` turns the lines into
SELECTED rows for exactly those clips: the ``name`` is the line verbatim, ``start``/``end``
are the clip times from the name, ``source_id`` is the segment. A line whose source is
missing, failed to download, is shorter than the clip, or which cannot be parsed gives a
row with status "failed"/"rejected" and the reason, so the list's 1,500 lines always give
1,500 rows.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from curate.merge import clip_id_for
from manifests.schemas import STATUS_FAILED, STATUS_OK, STATUS_REJECTED
from manifests.sources import parse_avsync_name, safe_id
from shards.writer import key_from_name

log = logging.getLogger(__name__)

#: a clip may end this far past the probed media end (container durations are rounded)
DURATION_SLACK = 0.1
SPLIT_STEMS = ("train", "test", "val")


def _parts(name: str) -> tuple[str, str, int, int, float, float]:
    """(class, ytid, seg_start, seg_end, clip_start, clip_end); ValueError when malformed."""
    p = parse_avsync_name(name)
    if p.class_name is None:
        raise ValueError(f"{name!r}: no class folder ('class/...')")
    return p.class_name, p.ytid, p.seg_start, p.seg_end, p.clip_start, p.clip_end


def read_list(list_path_or_names: str | os.PathLike | Iterable[str]) -> list[str]:
    """Lines of a list file (or the given names), stripped; blank lines and '#' comments dropped."""
    if isinstance(list_path_or_names, (str, os.PathLike)):
        lines: Iterable[str] = Path(list_path_or_names).read_text().splitlines()
    else:
        lines = list_path_or_names
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _split_from(list_path_or_names: Any, split: str | None) -> str | None:
    if split is not None or not isinstance(list_path_or_names, (str, os.PathLike)):
        return split
    stem = Path(list_path_or_names).stem.lower()
    return stem if stem in SPLIT_STEMS else None


MediaLookup = Callable[[str], "tuple[str | None, float | None, str | None]"]


def downloads_lookup(downloads: Iterable[Mapping[str, Any]],
                     sources: Iterable[Mapping[str, Any]] | None = None) -> MediaLookup:
    """Lookup over DOWNLOADS rows: source_id -> (path, duration, error)."""
    by_id = {d["source_id"]: d for d in downloads}
    known = {s["source_id"] for s in sources} if sources is not None else None

    def look(source_id: str) -> tuple[str | None, float | None, str | None]:
        d = by_id.get(source_id)
        if d is None:
            if known is not None and source_id not in known:
                return None, None, "reproduce: source not in the sources table"
            return None, None, "reproduce: source has no download row"
        if d.get("status") != STATUS_OK:
            return None, None, (f"reproduce: download {d.get('status')}: "
                                f"{d.get('reason') or ''} {d.get('error') or ''}".rstrip())
        return d.get("path"), d.get("duration"), None
    return look


def media_dir_lookup(media_dir: str | os.PathLike) -> MediaLookup:
    """Lookup over files ``<media_dir>/<safe_id(source_id)>.mp4``, probed for duration."""
    from decoding.media import DecodeError, probe
    root = Path(media_dir)

    def look(source_id: str) -> tuple[str | None, float | None, str | None]:
        path = root / f"{safe_id(source_id)}.mp4"
        if not path.is_file():
            return None, None, f"reproduce: media missing: {path.name}"
        try:
            return str(path), probe(path)["duration"], None
        except DecodeError as e:
            return None, None, f"reproduce: media unreadable: {e}"
    return look


def _row(name: str, split: str | None, look: MediaLookup) -> dict[str, Any]:
    row: dict[str, Any] = {"key": None, "name": name, "clip_id": None, "source_id": None,
                           "class_name": None, "split": split, "start": None, "end": None,
                           "rank_score": None, "status": STATUS_OK, "error": None}
    try:
        cls, ytid, s, e, cs, ce = _parts(name)
        row["key"] = key_from_name(name)
    except (ValueError, KeyError, TypeError) as err:
        return {**row, "status": STATUS_REJECTED, "error": f"reproduce: bad name: {err}"}
    source_id = f"{ytid}_{s:06d}_{e:06d}"
    row.update(source_id=source_id, class_name=cls, start=cs, end=ce,
               clip_id=clip_id_for(source_id, cs, ce))
    if not (0.0 <= cs < ce <= (e - s) + 1e-6):
        return {**row, "status": STATUS_REJECTED,
                "error": f"reproduce: clip [{cs}, {ce}] not inside the {e - s}s segment"}
    try:
        _, duration, err = look(source_id)
    except ValueError as exc:      # safe_id refused the identifier
        return {**row, "status": STATUS_REJECTED, "error": f"reproduce: unsafe id: {exc}"}
    if err is not None:
        return {**row, "status": STATUS_FAILED, "error": err}
    if duration is not None and ce > duration + DURATION_SLACK:
        return {**row, "status": STATUS_REJECTED,
                "error": f"reproduce: clip ends at {ce}s, media lasts {duration:.2f}s"}
    return row


def reproduce_list(list_path_or_names: str | os.PathLike | Iterable[str],
                   downloads: Iterable[Mapping[str, Any]] | None = None, *,
                   sources: Iterable[Mapping[str, Any]] | None = None,
                   media_dir: str | os.PathLike | None = None,
                   lookup: MediaLookup | None = None,
                   split: str | None = None) -> list[dict[str, Any]]:
    """AVSync15 list lines -> SELECTED rows for exactly those clips, in list order.

    Media come from ``downloads`` rows (+ ``sources`` to tell "not in sources" apart), or
    from ``media_dir`` (files ``<source_id>.mp4``, probed), or a custom ``lookup``
    (source_id -> (path, duration, error)). ``split`` defaults to the list file's stem
    when it is train/test/val. Duplicate lines: the later ones are rejected rows.
    """
    if lookup is None:
        if downloads is not None:
            lookup = downloads_lookup(downloads, sources)
        elif media_dir is not None:
            lookup = media_dir_lookup(media_dir)
        else:
            raise ValueError("reproduce_list needs downloads rows, media_dir or lookup")
    split = _split_from(list_path_or_names, split)
    rows, seen = [], set()
    for name in read_list(list_path_or_names):
        if name in seen:
            rows.append({**_row(name, split, lambda _: (None, None, None)), "key": None,
                         "status": STATUS_REJECTED, "error": "reproduce: duplicate line"})
            continue
        seen.add(name)
        rows.append(_row(name, split, lookup))
    n_ok = sum(r["status"] == STATUS_OK for r in rows)
    log.info("reproduce: %d lines -> %d clips ok, %d not", len(rows), n_ok, len(rows) - n_ok)
    return rows
