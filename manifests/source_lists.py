"""Source readers: VGGSound CSV, AVSync15 lists, generic CSV/Parquet -> rows of the sources table.

Every reader returns ``list[dict]`` in the ``manifests.schemas.SOURCES`` schema. A bad input
line is never dropped and never crashes the reader: it becomes a row with status
``rejected`` and an error ``"<file>:<line>: <reason>"``. A file that cannot be read at all is
a ``FileNotFoundError`` / ``ValueError`` naming the file.

Identifiers (ytids, class folders) are never trusted as paths: everything that ends up in a
file name goes through :func:`safe_id`.
"""
from __future__ import annotations

import csv
import logging
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from manifests import bounded
from manifests.names import ClipName, parse_clip_name, safe_id, short_repr, source_id
from manifests.schemas import SOURCES, STATUS_OK, STATUS_REJECTED

log = logging.getLogger(__name__)

YOUTUBE_URL = "https://www.youtube.com/watch?v={ytid}"
#: VGGSound segments are 10 s from the listed start second
VGGSOUND_SEGMENT_SECONDS = 10
VGGSOUND_SPLITS = frozenset({"train", "test"})
AVSYNC_SPLITS = frozenset({"train", "test"})
GENERIC_SPLITS = frozenset({"train", "val", "test"})

_SIX_DIGITS = re.compile(r"\d{6}")


# ---------------------------------------------------------------------------- names and ids

# safe_id, source_id and the clip-name grammar live in manifests.names (one definition, shared
# with curate.selection.exact_lists and shards.writer).


def class_key(label: str) -> str:
    """Normalise any spelling of a class: lowercase, each run of non-alphanumerics -> one space.

    ``"playing violin, fiddle"``, ``"playing_violin__fiddle"`` and ``"Playing violin fiddle"``
    all give ``"playing violin fiddle"``; ``"bee, wasp, etc. buzzing"`` -> ``"bee wasp etc buzzing"``.
    """
    return re.sub(r"[^0-9a-z]+", " ", str(label).lower()).strip()


def folder_name(label: str) -> str:
    """VGGSound label -> class folder as in the AVSync15 release.

    Lowercase; each ' ' and each ',' becomes '_' (one for one, so ``"playing violin, fiddle"``
    -> ``"playing_violin__fiddle"``). Our extension: any other character outside
    ``[a-z0-9_-]`` (the '.' of ``"etc."``, apostrophes, non-ASCII) is dropped, so that every
    folder name is a :func:`safe_id` and can be a path component and part of a shard key
    (keys contain no dots). Leading '-' are dropped too: a folder named ``-y`` reads as an
    option to every tool it is handed to. This is the one place the rule lives.
    """
    s = str(label).strip().lower().replace(" ", "_").replace(",", "_")
    s = re.sub(r"[^a-z0-9_-]", "", s).lstrip("-")
    if not s:
        raise ValueError(f"label {short_repr(label)} gives an empty class folder name")
    if len(s) > 128:
        raise ValueError(f"label {short_repr(label)} is too long for a class folder name "
                         f"({len(s)} characters, at most 128)")
    return safe_id(s)


def display_name(folder: str) -> str:
    """Class folder -> human/prompt form: each run of '_' becomes one space.

    ``"playing_violin_fiddle"`` -> ``"playing violin fiddle"`` (the text ImageBind scores against).
    """
    return re.sub(r"_+", " ", str(folder)).strip()


# ---------------------------------------------------------------------------- row helpers

def _row(**fields: Any) -> dict[str, Any]:
    row = {n: None for n in SOURCES.names}
    row.update(fields)
    return row


def _finish(row: dict[str, Any], where: str, reasons: list[str], seen: dict[str, str]) -> dict[str, Any]:
    """Set status/error; a repeated source_id on an otherwise good row is rejected as duplicate."""
    sid = row.get("source_id")
    if not reasons and sid is not None:
        if sid in seen:
            reasons.append(f"duplicate id {sid} (first at {seen[sid]})")
        else:
            seen[sid] = where
    if reasons:
        row.update(status=STATUS_REJECTED, error=f"{where}: " + "; ".join(reasons))
    else:
        row.update(status=STATUS_OK, error=None)
    return row


def _parse_seconds(text: Any, what: str, reasons: list[str], whole: bool) -> float | None:
    """Parse a time; append the reason and return None when it is not a finite number >= 0."""
    try:
        t = float(str(text).strip())
    except (TypeError, ValueError):
        reasons.append(f"unparseable {what} {short_repr(text)}")
        return None
    if not math.isfinite(t) or t < 0:
        reasons.append(f"{what} {text!r} is not a finite time >= 0")
        return None
    if whole and not t.is_integer():
        # source_id encodes segment times as integer seconds; a fraction would be lost
        reasons.append(f"{what} {text!r} is not a whole number of seconds")
        return None
    return t


def _check_id(ytid: str, reasons: list[str]) -> str | None:
    if not ytid:
        reasons.append("empty id")
        return None
    try:
        return safe_id(ytid)
    except ValueError:
        reasons.append(f"unsafe id {short_repr(ytid)}")
        return None


def _check_split(split: str | None, allowed: frozenset[str], reasons: list[str],
                 optional: bool = False) -> str | None:
    if split in (None, "") and optional:
        return None
    if split not in allowed:
        reasons.append(f"unknown split {short_repr(split)} (expected one of {sorted(allowed)})")
        return None
    return split


def _class_for(label: str, classes: Mapping[str, str] | None, reasons: list[str]) -> str | None:
    """Our class folder for a source label: via the recipe's map if given, else folder_name."""
    if not label or not class_key(label):
        reasons.append("empty label")
        return None
    if classes is not None:
        folder = classes.get(class_key(label))
        if folder is None:
            reasons.append(f"label not in recipe: {short_repr(label)}")
        return folder
    try:
        return folder_name(label)
    except ValueError as e:
        reasons.append(str(e))
        return None


def _read_text(path: Path) -> str:
    """A sources file's text, bounded (``manifests.bounded``: a regular file under the limit)."""
    return bounded.read_text(path, "source list")


def _csv_records(text: str) -> Iterator[tuple[int, list[str] | str]]:
    """(line number, fields) for every non-blank record; quoted fields may contain commas; a
    record with a field over the limit gives (line number, why) (``bounded.csv_records``)."""
    return bounded.csv_records(text)


def _header(path: Path, records: Iterator[tuple[int, list[str] | str]]) -> list[str]:
    _, header = next(records, (0, []))
    if isinstance(header, str):
        raise ValueError(f"{path}: header: {header}")
    return [h.strip().lower() for h in header]


def _url(template: str | None, ytid: str | None) -> str | None:
    """URL of a YouTube-style id; a template of None means the YouTube default."""
    return (template or YOUTUBE_URL).format(ytid=ytid) if ytid is not None else None


# ---------------------------------------------------------------------------- VGGSound

def read_vggsound_csv(path: str | Path, classes: Mapping[str, str] | None = None,
                      url_template: str | None = YOUTUBE_URL) -> list[dict[str, Any]]:
    """Read ``vggsound.csv``: no header; ``ytid,start,label,split``; segment = [start, start+10).

    ``classes`` maps ``class_key(VGGSound label)`` -> our class folder (see
    ``manifests.classes.recipe_classes``); rows with other labels are rejected with
    "label not in recipe". Without it every label is kept as ``folder_name(label)``.
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for line, fields in _csv_records(_read_text(path)):
        where, reasons = f"{path.name}:{line}", []
        if isinstance(fields, str):          # a field over the limit: this row only
            rows.append(_finish(_row(), where, [fields], seen))
            continue
        if len(fields) != 4:
            reasons.append(f"expected 4 columns (ytid, start, label, split), got {len(fields)}")
            rows.append(_finish(_row(label=",".join(fields)), where, reasons, seen))
            continue
        ytid_raw, start_raw, label, split_raw = (f.strip() for f in fields)
        ytid = _check_id(ytid_raw, reasons)
        start = _parse_seconds(start_raw, "start", reasons, whole=True)
        end = start + VGGSOUND_SEGMENT_SECONDS if start is not None else None
        split = _check_split(split_raw, VGGSOUND_SPLITS, reasons)
        cls = _class_for(label, classes, reasons)
        row = _row(source_id=source_id(ytid, start, end) if ytid and start is not None else None,
                   ytid=ytid_raw or None, start=start, end=end, label=label, class_name=cls,
                   split=split or split_raw or None, url=_url(url_template, ytid))
        rows.append(_finish(row, where, reasons, seen))
    _log_counts(path, rows)
    return rows


# ---------------------------------------------------------------------------- AVSync15 lists

def read_avsync_clips(path: str | Path) -> list[ClipName]:
    """The clips of an AVSync15 ``.txt`` list, clip times included (bad lines raise ValueError)."""
    path = Path(path)
    out = []
    for line_no, line in enumerate(_read_text(path).splitlines(), 1):
        if line.strip():
            if bounded.long_line(line):
                raise ValueError(f"{path.name}:{line_no}: {bounded.long_line(line)}")
            try:
                out.append(parse_clip_name(line))
            except ValueError as e:
                raise ValueError(f"{path.name}:{line_no}: {e}") from e
    return out


def _avsync_segment_row(ytid: str, seg: tuple[int, int], clip: tuple[float, float] | None,
                        label: str | None, split: str | None, url_template: str | None,
                        classes: Mapping[str, str] | None, reasons: list[str]) -> dict[str, Any]:
    """Source row of one AVSync segment; ``label`` is the class as the list spells it."""
    s, e = seg
    cls = _class_for(label or "", classes, reasons)
    if e <= s:
        reasons.append(f"end {e} <= start {s}")
    elif clip is not None and not (0 <= clip[0] < clip[1] <= e - s):
        reasons.append(f"clip {clip[0]:g}-{clip[1]:g} s not inside the {e - s}-s segment")
    return _row(source_id=source_id(ytid, s, e), ytid=ytid, start=float(s), end=float(e),
                label=label, class_name=cls, split=split, url=_url(url_template, ytid))


def _merge_segment(rows: list[dict[str, Any]], by_sid: dict[str, int], row: dict[str, Any],
                   where: str, reasons: list[str], seen: dict[str, str]) -> None:
    """One source row per distinct segment: a later clip of the same segment adds no row,
    unless it contradicts the first one's class, which is rejected.

    A segment listed in both train and test (a third-party copy of the 1,500-clip list has 5)
    is downloaded once: its row keeps the first split, and reproduction takes each clip's
    split from its own line, so both clips come out.
    """
    sid = row["source_id"]
    if not reasons and sid in by_sid:
        first = rows[by_sid[sid]]
        if first["class_name"] != row["class_name"]:
            reasons.append(f"segment {sid} listed with class_name {row['class_name']!r}, first "
                           f"as {first['class_name']!r} at {seen[sid]}")
        if not reasons:
            if first["split"] != row["split"]:
                log.info("%s: segment %s listed in split %r and in %r (at %s): downloaded once",
                         where, sid, row["split"], first["split"], seen[sid])
            return
        rows.append(_finish(row, where, reasons, {}))
        return
    rows.append(_finish(row, where, reasons, seen))
    if row["status"] == STATUS_OK:
        by_sid[sid] = len(rows) - 1


def _split_from_stem(path: Path, split: str | None) -> str | None:
    if split is None and path.stem in AVSYNC_SPLITS:
        return path.stem  # the release ships train.txt / test.txt
    return split


def _read_avsync_txt(path: Path, split: str | None, url_template: str | None,
                     classes: Mapping[str, str] | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    by_sid: dict[str, int] = {}
    seen: dict[str, str] = {}
    names: dict[str, str] = {}
    for line_no, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        where, reasons = f"{path.name}:{line_no}", []
        if bounded.long_line(line):
            rows.append(_finish(_row(), where, [bounded.long_line(line)], seen))
            continue
        try:
            name = parse_clip_name(line)
        except ValueError as e:
            reasons.append(f"unparseable name: {e}")
            rows.append(_finish(_row(label=line.strip()), where, reasons, seen))
            continue
        if name.class_name is None:
            reasons.append("no class folder (expected class/name)")
        key = name.name if name.class_name else line.strip()
        if key in names:
            reasons.append(f"duplicate id {key} (first at {names[key]})")
        names.setdefault(key, where)
        row = _avsync_segment_row(name.ytid, (name.seg_start, name.seg_end),
                                  (name.clip_start, name.clip_end), name.class_name, split,
                                  url_template, classes, reasons)
        if split is not None:
            _check_split(split, AVSYNC_SPLITS, reasons)
        _merge_segment(rows, by_sid, row, where, reasons, seen)
    return rows


def _parse_vid(vid: str) -> tuple[str, int, int] | ClipName:
    """``{ytid}_{s:06d}_{e:06d}`` -> (ytid, s, e); a full clip name -> ClipName.

    The segment form is recognised by its two trailing 6-digit fields; anything else must
    be a full name (clip times like 2.5), else ValueError.
    """
    parts = vid.rsplit("_", 2)
    if len(parts) == 3 and _SIX_DIGITS.fullmatch(parts[1]) and _SIX_DIGITS.fullmatch(parts[2]):
        safe_id(parts[0])
        return parts[0], int(parts[1]), int(parts[2])
    return parse_clip_name(vid)


def _read_avsync_csv(path: Path, text: str, split: str | None, url_template: str | None,
                     classes: Mapping[str, str] | None) -> list[dict[str, Any]]:
    records = _csv_records(text)
    cols = _header(path, records)
    missing = {"vid", "label"} - set(cols)
    if missing:
        raise ValueError(f"{path}: AVSync CSV needs columns vid,label[,split]; missing {sorted(missing)}")
    rows: list[dict[str, Any]] = []
    by_sid: dict[str, int] = {}
    seen: dict[str, str] = {}
    for line, fields in records:
        where, reasons = f"{path.name}:{line}", []
        if isinstance(fields, str):          # a field over the limit: this row only
            rows.append(_finish(_row(split=split), where, [fields], seen))
            continue
        rec = dict(zip(cols, (f.strip() for f in fields)))
        if len(fields) != len(cols):
            reasons.append(f"expected {len(cols)} columns, got {len(fields)}")
        vid, label = rec.get("vid", ""), rec.get("label", "")
        row_split = rec.get("split") or split
        try:
            parsed = _parse_vid(vid) if vid else None
        except ValueError as e:
            parsed = None
            reasons.append(f"unsafe or unparseable vid {short_repr(vid)}: {e}")
        if not vid:
            reasons.append("empty id")
        if parsed is None:
            rows.append(_finish(_row(label=label or None, split=row_split), where, reasons, seen))
            continue
        if isinstance(parsed, ClipName):
            ytid, seg = parsed.ytid, (parsed.seg_start, parsed.seg_end)
            clip: tuple[float, float] | None = (parsed.clip_start, parsed.clip_end)
        else:
            ytid, seg, clip = parsed[0], (parsed[1], parsed[2]), None
        row = _avsync_segment_row(ytid, seg, clip, label or None, row_split, url_template,
                                  classes, reasons)
        _check_split(row_split, AVSYNC_SPLITS, reasons, optional=True)
        _merge_segment(rows, by_sid, row, where, reasons, seen)
    return rows


def _is_avsync_csv(path: Path, text: str) -> bool:
    first = text.lstrip().split("\n", 1)[0].strip().lower()
    return path.suffix.lower() == ".csv" or first.startswith("vid,")


def read_avsync_list(path: str | Path, split: str | None = None,
                     url_template: str | None = YOUTUBE_URL,
                     classes: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Read an AVSync15 list -> one source row per distinct 10-s segment.

    Two forms: the release's ``.txt`` (``class/{ytid}_{s:06d}_{e:06d}_{cs}_{ce}`` per line; the
    split comes from ``split`` or the file name ``train.txt``/``test.txt``), and a CSV with
    header ``vid,label[,split]`` where vid is ``{ytid}_{s:06d}_{e:06d}`` or a full clip name.
    Clip times are not in the sources table: re-read them with :func:`read_avsync_clips` /
    :func:`parse_clip_name`. ``classes`` (optional) maps class_key -> folder as for VGGSound.
    """
    path = Path(path)
    text = _read_text(path)
    split = _split_from_stem(path, split)
    if _is_avsync_csv(path, text):
        rows = _read_avsync_csv(path, text, split, url_template, classes)
    else:
        rows = _read_avsync_txt(path, split, url_template, classes)
    _log_counts(path, rows)
    return rows


# ---------------------------------------------------------------------------- generic

GENERIC_COLUMNS = ("id", "start", "end", "label", "split")


def _generic_records(path: Path) -> tuple[list[str], Iterable[tuple[str, dict[str, Any]]]]:
    """(columns, iterator of (where, record)) for a CSV or Parquet manifest."""
    bounded.regular_file(path, "source manifest")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq  # local: only this reader needs it
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for a bad file
            raise ValueError(f"cannot read Parquet source manifest {path}: {e}") from e
        cols = [c.lower() for c in table.column_names]
        recs = ({k.lower(): v for k, v in r.items()} for r in table.to_pylist())
        return cols, ((f"{path.name}:row {i}", r) for i, r in enumerate(recs))
    records = _csv_records(_read_text(path))
    cols = _header(path, records)

    def gen() -> Iterator[tuple[str, dict[str, Any]]]:
        for line, fields in records:
            if isinstance(fields, str):      # a field over the limit: this row only
                yield f"{path.name}:{line}", {"__bad_width__": fields}
                continue
            rec = dict(zip(cols, (f.strip() for f in fields)))
            if len(fields) != len(cols):
                rec["__bad_width__"] = f"expected {len(cols)} columns, got {len(fields)}"
            yield f"{path.name}:{line}", rec
    return cols, gen()


def _text(v: Any) -> str:
    return "" if v is None else str(v).strip()


def _generic_row(rec: dict[str, Any], base: Path, classes: Mapping[str, str] | None,
                 reasons: list[str]) -> dict[str, Any]:
    if "__bad_width__" in rec:
        reasons.append(rec["__bad_width__"])
    ident, label = _text(rec.get("id")), _text(rec.get("label"))
    ytid = _check_id(ident, reasons)
    start = _parse_seconds(_text(rec.get("start")), "start", reasons, whole=True)
    end = _parse_seconds(_text(rec.get("end")), "end", reasons, whole=True)
    if start is not None and end is not None and end <= start:
        reasons.append(f"end {end:g} <= start {start:g}")
    split_raw = _text(rec.get("split"))
    _check_split(split_raw, GENERIC_SPLITS, reasons, optional=True)
    cls = _class_for(label, classes, reasons)
    url, local = _text(rec.get("url")), _text(rec.get("path"))
    if not url and not local:
        reasons.append("neither url nor path given")
    if url and not re.match(r"https?://", url):
        reasons.append(f"unsupported url {short_repr(url)} (http or https only)")
    # local files are resolved against the manifest's folder; existence is checked by the
    # download stage, which may run where the storage is mounted
    path = str((base / local).resolve()) if local else None
    ok_ids = ytid is not None and start is not None and end is not None
    return _row(source_id=source_id(ytid, start, end) if ok_ids else None, ytid=ident or None,
                start=start, end=end, label=label or None, class_name=cls,
                split=split_raw or None, url=url or None, path=path)


def read_generic(path: str | Path, classes: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """CSV (with header) or Parquet with columns id, url and/or path, start, end, label, split.

    ``path`` values are local files relative to the manifest's folder; ``url`` rows are
    downloaded later. source_id = ``{id}_{start:06d}_{end:06d}``, so start/end must be whole
    seconds. An empty split means "assign later" (the balance stage).
    """
    path = Path(path)
    cols, records = _generic_records(path)
    missing = [c for c in GENERIC_COLUMNS if c not in cols]
    if "url" not in cols and "path" not in cols:
        missing.append("url or path")
    if missing:
        raise ValueError(f"{path}: generic source manifest lacks columns {missing} (has {cols})")
    base = path.resolve().parent
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for where, rec in records:
        if set(rec) == {"__bad_width__"}:      # a field over the limit: only that said
            rows.append(_finish(_row(), where, [rec["__bad_width__"]], seen))
            continue
        reasons: list[str] = []
        rows.append(_finish(_generic_row(rec, base, classes, reasons), where, reasons, seen))
    _log_counts(path, rows)
    return rows


# ---------------------------------------------------------------------------- dispatch

def detect_format(path: str | Path) -> str:
    """'vggsound', 'avsync' or 'generic' from the extension and the first line."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "generic"
    if suffix == ".txt":
        return "avsync"
    first = _read_text(path).lstrip().split("\n", 1)[0]
    try:
        cols = [c.strip().lower() for c in next(csv.reader([first]), [])]
    except csv.Error:          # a header field over the limit: not a known header
        cols = []
    if cols and cols[0] == "vid":
        return "avsync"
    if "id" in cols and ("url" in cols or "path" in cols):
        return "generic"
    return "vggsound"


_READERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "vggsound": read_vggsound_csv,
    "avsync": read_avsync_list,
    "generic": read_generic,
}


def read_sources(path: str | Path, fmt: str = "auto", **kw: Any) -> list[dict[str, Any]]:
    """Read any supported source list; ``fmt`` is 'auto', 'vggsound', 'avsync' or 'generic'."""
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in _READERS:
        raise ValueError(f"unknown source format {fmt!r}; known: auto, {', '.join(_READERS)}")
    return _READERS[fmt](path, **kw)


def _log_counts(path: Path, rows: list[dict[str, Any]]) -> None:
    bad = sum(r["status"] != STATUS_OK for r in rows)
    log.info("%s: %d source rows, %d rejected", path, len(rows), bad)


def recipe_assigns_split(select_params: Mapping[str, Any] | None) -> bool:
    """True when the recipe's selection assigns train/test itself (``test_per_class`` or
    ``balanced_test``, curate/selection/balance.py); otherwise the source row's split is kept."""
    p = select_params or {}
    return p.get("test_per_class") is not None or bool(p.get("balanced_test"))


def require_split(rows: list[dict[str, Any]], assigned_by_recipe: bool) -> list[dict[str, Any]]:
    """An ok row with an empty split is kept when the recipe assigns splits, else rejected
    with the reason (a clip with no split cannot go into any shard). Changes rows in place."""
    n = 0
    for r in rows:
        if r.get("status") == STATUS_OK and not r.get("split") and not assigned_by_recipe:
            r.update(split=None, status=STATUS_REJECTED,
                     error="empty split: this recipe keeps the source split (no test_per_class "
                           "or balanced_test); give the row a split")
            n += 1
    if n:
        log.warning("%d source rows rejected for an empty split", n)
    return rows
