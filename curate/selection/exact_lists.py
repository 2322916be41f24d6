"""Exact reproduction of a released AVSync15 list (train.txt / test.txt).

Each list line ``{class}/{ytid}_{segStart:06d}_{segEnd:06d}_{clipStart}_{clipEnd}[.mp4]``
names one clip with times relative to its 10-s segment (the grammar: ``manifests.names``; the
release's lines end in ``.mp4``, the reference loader joins them to the videos root). A CSV
form ``vid,label[,split]`` is read too: ``vid`` is the clip name with or without the class
folder and ``.mp4``, ``label`` the class (folder or spoken form), ``split`` per row.

``reproduce_list`` turns the entries into SELECTED rows for exactly those clips: the ``name``
is the clip name (no ``.mp4``, times as written), ``start``/``end`` the clip times from the
name, ``source_id`` the segment, ``split`` the row's (CSV) or the list file's (``train.txt``).
A clip listed in both train and test gives a row in each split (its segment is downloaded
once). Clips of any length inside the segment are reproduced (the release has clips shorter
than 3 s). A line whose source is missing, failed to download, is shorter than the clip, or
which cannot be parsed gives a row with status "failed"/"rejected" and the reason, so the
list's 1,500 lines always give 1,500 rows (a CSV header is not a line).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from manifests import bounded
from manifests.names import ClipName, clip_id_for, parse_clip_name, safe_id, short_repr
from manifests.schemas import MEASURED_COLUMNS, STATUS_FAILED, STATUS_OK, STATUS_REJECTED
from manifests.source_lists import folder_name
from shards.writer import key_from_name

log = logging.getLogger(__name__)

#: a clip may end this far past the probed media end (container durations are rounded)
DURATION_SLACK = 0.1
SPLIT_STEMS = ("train", "test", "val")


@dataclass(frozen=True)
class ListEntry:
    """One clip entry of a list: ``text`` as written (for the row when it does not parse),
    ``clip`` parsed (None with ``error`` when it does not), its ``split`` (None: the list's)."""
    text: str
    clip: ClipName | None
    split: str | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.clip.name if self.clip is not None else self.text


def _read_lines(list_path_or_names: str | os.PathLike | Iterable[str]) -> list[str]:
    if isinstance(list_path_or_names, (str, os.PathLike)):
        return bounded.read_text(list_path_or_names, "list").splitlines()
    return list(list_path_or_names)


def read_list(list_path_or_names: str | os.PathLike | Iterable[str]) -> list[str]:
    """Lines of a list file (or the given names), stripped; blank lines and '#' comments dropped."""
    lines = _read_lines(list_path_or_names)
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _is_csv(list_path_or_names: Any, lines: list[str]) -> bool:
    if isinstance(list_path_or_names, (str, os.PathLike)) and \
            Path(list_path_or_names).suffix.lower() == ".csv":
        return True
    return bool(lines) and lines[0].strip().lower().replace(" ", "").startswith("vid,")


def _txt_entry(line: str) -> ListEntry:
    why = bounded.long_line(line)
    if why:
        return ListEntry(short_repr(line, 80), None, error=why)
    try:
        return ListEntry(line, parse_clip_name(line, require_class=True))
    except ValueError as e:
        return ListEntry(line, None, error=str(e))


def _csv_entry(rec: dict[str, str]) -> ListEntry:
    vid, label = rec.get("vid", ""), rec.get("label", "")
    split = rec.get("split") or None
    try:
        cls = folder_name(label) if label else None
        prefix = vid.split("/", 1)[0] if "/" in vid else None
        if cls is not None and prefix is not None and prefix != cls:
            raise ValueError(f"class folder {prefix!r} in vid != label {label!r} ({cls!r})")
        clip = parse_clip_name(vid, None if prefix else cls, require_class=True)
    except ValueError as e:
        return ListEntry(vid or ",".join(rec.values()), None, split, str(e))
    return ListEntry(vid, clip, split)


def read_entries(list_path_or_names: str | os.PathLike | Iterable[str]) -> list[ListEntry]:
    """The clip entries of a list: ``.txt`` lines or CSV rows (header ``vid,label[,split]``)."""
    lines = read_list(list_path_or_names)
    if not _is_csv(list_path_or_names, lines):
        return [_txt_entry(ln) for ln in lines]
    records = bounded.csv_records("\n".join(lines))
    _, header = next(records, (0, []))
    if isinstance(header, str):
        raise ValueError(f"{list_path_or_names}: header: {header}")
    header = [h.strip().lower() for h in header]
    missing = {"vid", "label"} - set(header)
    if missing:
        raise ValueError(f"{list_path_or_names}: a CSV list needs columns vid,label[,split]; "
                         f"missing {sorted(missing)}")
    out = []
    for line, fields in records:
        if isinstance(fields, str):           # a field over the limit: this entry only
            out.append(ListEntry(f"line {line}", None, error=fields))
            continue
        rec = dict(zip(header, (f.strip() for f in fields)))
        entry = _csv_entry(rec)
        if len(fields) != len(header):
            entry = ListEntry(entry.text, None, entry.split,
                              f"expected {len(header)} columns, got {len(fields)}")
        out.append(entry)
    return out


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
    """Lookup over files ``<media_dir>/<safe_id(source_id)>.mp4``: the segment's duration
    from the download's sidecar (``curate.ops.fetch.read_segment``), else probed."""
    from curate.ops.fetch import read_segment
    from decoding.media import DecodeError, probe
    root = Path(media_dir)

    def look(source_id: str) -> tuple[str | None, float | None, str | None]:
        path = root / f"{safe_id(source_id)}.mp4"
        if not path.is_file():
            return None, None, f"reproduce: media missing: {path.name}"
        seg = read_segment(path)
        if seg is not None:
            return str(path), seg[1] - seg[0], None
        try:
            return str(path), probe(path)["duration"], None
        except DecodeError as e:
            return None, None, f"reproduce: media unreadable: {e}"
    return look


def _row(entry: ListEntry, split: str | None, look: MediaLookup) -> dict[str, Any]:
    row: dict[str, Any] = {"key": None, "name": entry.name, "clip_id": None, "source_id": None,
                           "class_name": None, "split": split, "start": None, "end": None,
                           "rank_score": None, "status": STATUS_OK, "error": None,
                           **dict.fromkeys(MEASURED_COLUMNS)}
    c = entry.clip
    if c is None:
        return {**row, "status": STATUS_REJECTED, "error": f"reproduce: bad name: {entry.error}"}
    try:
        row["key"] = key_from_name(c.name)
    except ValueError as err:
        return {**row, "status": STATUS_REJECTED, "error": f"reproduce: bad name: {err}"}
    source_id, s, e, cs, ce = c.source_id, c.seg_start, c.seg_end, c.clip_start, c.clip_end
    row.update(source_id=source_id, class_name=c.class_name, start=cs, end=ce,
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
    """AVSync15 list entries -> SELECTED rows for exactly those clips, in list order.

    Media come from ``downloads`` rows (+ ``sources`` to tell "not in sources" apart), or
    from ``media_dir`` (files ``<source_id>.mp4``, probed), or a custom ``lookup``
    (source_id -> (path, duration, error)). ``split`` defaults to the list file's stem
    when it is train/test/val; a CSV row's own split wins. The same clip again in the same
    split is a rejected row; in another split it is a second clip (both come out).
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
    for entry in read_entries(list_path_or_names):
        row_split = entry.split or split
        if (entry.name, row_split) in seen:
            rows.append({**_row(entry, row_split, lambda _: (None, None, None)), "key": None,
                         "status": STATUS_REJECTED, "error": "reproduce: duplicate line"})
            continue
        seen.add((entry.name, row_split))
        rows.append(_row(entry, row_split, lookup))
    n_ok = sum(r["status"] == STATUS_OK for r in rows)
    log.info("reproduce: %d lines -> %d clips ok, %d not", len(rows), n_ok, len(rows) - n_ok)
    return rows


def unique_cut_items(items: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Cut items with distinct keys, the first of each kept.

    The same clip listed in train and test is two selected rows with one key (the key comes
    from the name): it is cut once, and the shard stage writes that one file into both
    splits' shards. Items with one key but different cut arguments are an error.
    """
    out: dict[str, Mapping[str, Any]] = {}
    for it in items:
        first = out.setdefault(it["key"], it)
        if first is not it and first != it:
            raise ValueError(f"two different cuts share the key {it['key']!r}")
    return list(out.values())
