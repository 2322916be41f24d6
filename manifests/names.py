"""The AVSync15 clip-name grammar, defined once.

``[{class}/]{ytid}_{segStart:06d}_{segEnd:06d}_{clipStart}_{clipEnd}[.mp4]``

* ``class``: the class folder (``dog_barking``, ``playing_violin__fiddle``), a safe id;
* ``ytid``: the YouTube id, a safe id that may itself contain ``_`` and ``-`` (so the four
  time fields are taken from the right);
* ``segStart``/``segEnd``: the 10-s source segment, integer seconds, 6 digits;
* ``clipStart``/``clipEnd``: the clip inside the segment, decimal seconds relative to it
  (``2.5``, ``6.0``); kept as written so that a name round-trips exactly;
* ``.mp4``: the released lists name files (the reference loader joins each line to the
  videos root); the suffix is accepted and dropped.

Used by the source reader (``manifests.source_lists``), exact reproduction (``curate.selection.exact_lists``)
and the shard writer (``shards.writer.parse_name`` / ``key_from_name``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SIX_DIGITS = re.compile(r"\d{6}")
_DECIMAL = re.compile(r"\d+(?:\.\d+)?")
MEDIA_SUFFIX = ".mp4"


def safe_id(s: str) -> str:
    """Return ``s`` if it is 1..128 characters of ``[A-Za-z0-9_-]``, else raise ValueError.

    YouTube ids contain '-' and '_' and pass; anything that could traverse a path
    ('/', '..', spaces, NUL) does not.
    """
    if not isinstance(s, str) or _SAFE_ID.fullmatch(s) is None:
        why = f"{len(s)} characters, over 128" if isinstance(s, str) and len(s) > 128 else \
            "must be 1-128 characters of [A-Za-z0-9_-]"
        raise ValueError(f"unsafe id {short_repr(s)}: {why}")
    return s


def short_repr(value: object, limit: int = 60) -> str:
    """``repr`` for messages, cut to ``limit`` characters with the full length said: a
    100,000-character field gives a one-line message, not a 100-KB one."""
    r = repr(value)
    if len(r) <= limit:
        return r
    n = f" ({len(value)} characters)" if isinstance(value, (str, bytes)) else ""
    return r[:limit] + "..." + n


def short_text(text: str, limit: int = 120) -> str:
    """``text`` for a line of output, cut to ``limit`` characters with the full length said."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def source_id(ytid: str, start: float, end: float) -> str:
    """``{ytid}_{start:06d}_{end:06d}`` with integer seconds (VGGSound style)."""
    return f"{ytid}_{int(start):06d}_{int(end):06d}"


def format_clip_time(t: float) -> str:
    """Minimal decimal form as in the release: 2.5, 6.0, 10.0, 3.25 (millisecond precision)."""
    s = f"{float(t):.3f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


@dataclass(frozen=True)
class ClipName:
    """One clip name. Equality compares the values (``2.5`` == ``2.50``); ``clip_start_text`` /
    ``clip_end_text`` keep the times as written (default: :func:`format_clip_time`)."""
    class_name: str | None
    ytid: str
    seg_start: int
    seg_end: int
    clip_start: float
    clip_end: float
    clip_start_text: str = field(default="", compare=False)
    clip_end_text: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.clip_start_text:
            object.__setattr__(self, "clip_start_text", format_clip_time(self.clip_start))
        if not self.clip_end_text:
            object.__setattr__(self, "clip_end_text", format_clip_time(self.clip_end))

    @property
    def source_id(self) -> str:
        return source_id(self.ytid, self.seg_start, self.seg_end)

    @property
    def clip(self) -> str:
        """The file stem after the class folder, times as written."""
        return f"{self.source_id}_{self.clip_start_text}_{self.clip_end_text}"

    @property
    def name(self) -> str:
        """``class/clip`` (``clip`` alone without a class), no ``.mp4``."""
        return self.clip if self.class_name is None else f"{self.class_name}/{self.clip}"


def strip_media_suffix(name: str) -> str:
    return name.strip().removesuffix(MEDIA_SUFFIX)


def parse_clip_name(name: str, class_name: str | None = None,
                    require_class: bool = False) -> ClipName:
    """Parse ``[class/]{ytid}_{segStart:06d}_{segEnd:06d}_{clipStart}_{clipEnd}[.mp4]``.

    ``class_name`` is used when the name carries no ``class/`` prefix (a prefix must agree
    with it); ``require_class``: a name without any class is an error. Raises ValueError with
    the reason on anything malformed.
    """
    if not isinstance(name, str):
        raise ValueError(f"not a clip name: {name!r}")
    text = strip_media_suffix(name)
    if "/" in text:
        prefix, text = text.split("/", 1)
        if "/" in text:
            raise ValueError(f"{name!r}: more than one '/'")
        if class_name is not None and class_name != prefix:
            raise ValueError(f"{name!r}: class folder {prefix!r} != {class_name!r}")
        class_name = prefix
    if class_name is not None:
        safe_id(class_name)
    elif require_class:
        raise ValueError(f"{name!r}: no class folder (expected class/ytid_SSSSSS_EEEEEE_cs_ce)")
    parts = text.rsplit("_", 4)
    if len(parts) != 5:
        raise ValueError(f"{name!r}: expected ytid_segStart_segEnd_clipStart_clipEnd")
    ytid, s, e, cs, ce = parts
    if not (_SIX_DIGITS.fullmatch(s) and _SIX_DIGITS.fullmatch(e)):
        raise ValueError(f"{name!r}: segment times must be 6 digits, got {s!r} {e!r}")
    if not (_DECIMAL.fullmatch(cs) and _DECIMAL.fullmatch(ce)):
        raise ValueError(f"{name!r}: clip times must be decimal seconds, got {cs!r} {ce!r}")
    safe_id(ytid)
    return ClipName(class_name, ytid, int(s), int(e), float(cs), float(ce), cs, ce)


def format_clip_name(class_name: str | None, ytid: str, seg_start: int, seg_end: int,
                     clip_start: float, clip_end: float) -> str:
    """Inverse of :func:`parse_clip_name` (times in minimal decimal form); without a class,
    the name has no ``class/`` prefix."""
    if class_name is not None:
        safe_id(class_name)
    return ClipName(class_name, safe_id(ytid), int(seg_start), int(seg_end), float(clip_start),
                    float(clip_end)).name


def split_source_id(source_id: str) -> tuple[str, int, int]:
    """``{ytid}_{segStart:06d}_{segEnd:06d}`` -> (ytid, start, end); ytids may contain '_'."""
    parts = source_id.rsplit("_", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"source_id {source_id!r} is not ytid_SSSSSS_EEEEEE")
    return parts[0], int(parts[1]), int(parts[2])


def ytid_of(source_id: object) -> str:
    """The video id of a source id, or the source id itself when it is not ``ytid_S_E``
    (a local or generic source)."""
    try:
        return split_source_id(source_id)[0]       # type: ignore[arg-type]
    except (ValueError, TypeError, AttributeError):
        return str(source_id)


def clip_id_for(source_id: str, start: float, end: float) -> str:
    """``{source_id}_{startMs:06d}_{endMs:06d}``: clips of one source never share both bounds."""
    return f"{source_id}_{int(round(start * 1000)):06d}_{int(round(end * 1000)):06d}"
