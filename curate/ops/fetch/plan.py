"""What one source row asks for (``Plan``: a URL or a local file, the segment times) and
the checks of a finished segment against it (size, audio, truncation, ``short`` note)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from curate.ops.fetch.errors import Failure
from curate.ops.fetch.options import DownloadOptions
from curate.ops.fetch.segment import probe_or_fail
from manifests.names import safe_id


#: seconds a segment may fall short of what was asked / what the source declares before it
#: counts (frame, audio-priming and keyframe granularity stay below this)
DURATION_TOLERANCE = 0.25


@dataclass
class Plan:
    source_id: str
    start: float
    end: float | None
    url: str | None = None
    path: Path | None = None


def short_note(plan: Plan, facts: Mapping[str, Any]) -> str | None:
    """``short: 5.0 of 10.0 s`` when the segment is shorter than asked (the source ends early)."""
    if plan.end is None or not facts.get("duration"):
        return None
    want, got = plan.end - plan.start, float(facts["duration"])
    if got < want - DURATION_TOLERANCE:
        return f"short: {got:.1f} of {want:.1f} s"
    return None


def complete(plan: Plan, declared: float | None, facts: Mapping[str, Any]) -> str | None:
    """Fail a segment that stops before its source's declared end (a truncated or damaged
    file whose index survived decodes only part: ``decoded 4.0 of 10.0 s``); return the
    ``short`` note when the source itself is shorter than the segment asked for."""
    got = float(facts.get("duration") or 0.0)
    if declared:
        avail = (min(plan.end, declared) if plan.end is not None else declared) - plan.start
        if got < avail - DURATION_TOLERANCE:
            # a transfer may have been cut: a new download can fix it, a local file cannot
            raise Failure("partial", f"decoded {got:.2f} of {avail:.2f} s (the file is "
                                      f"truncated or damaged)", transient=plan.url is not None)
    return short_note(plan, facts)


def make_plan(row: Mapping[str, Any], sid: str, opts: DownloadOptions) -> Plan:
    start = seconds(row.get("start"), "start", default=0.0)
    end = seconds(row.get("end"), "end", default=None)
    if start < 0 or (end is not None and end <= start):
        raise Failure("bad_input", f"bad segment [{start}, {end})")
    url, path = row.get("url"), row.get("path")
    if path:
        p = Path(path)
        if not p.is_absolute() and opts.source_root:
            p = Path(opts.source_root) / p
        if p.exists() and not p.is_file():
            # /dev/zero, a folder, a pipe: reading it would never end or mean nothing
            raise Failure("bad_input", f"local path {p} is not a regular file "
                                        f"(a device, folder or pipe cannot be a source)")
        if not p.is_file():
            raise Failure("unavailable", f"local file not found: {p}")
        return Plan(sid, start, end, path=p)
    if not url:
        ytid = row.get("ytid")
        if not ytid:
            raise Failure("bad_input", "row has neither url, path nor ytid")
        try:
            url = opts.url_template.format(ytid=safe_id(ytid))
        except ValueError as e:
            raise Failure("bad_input", str(e)) from e
    if not re.match(r"https?://", str(url)):
        raise Failure("bad_input", f"unsupported url {url!r} (http or https only)")
    return Plan(sid, start, end, url=str(url))


def seconds(v: Any, what: str, default: float | None) -> float | None:
    """A row's time field in seconds (``default`` when empty); not a finite number: ``bad_input``."""
    if v is None or v == "":
        return default
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise Failure("bad_input", f"{what} is not a number: {v!r}") from None
    if not math.isfinite(x):
        raise Failure("bad_input", f"{what} is not finite: {v!r}")
    return x


def check_file(path: Path, opts: DownloadOptions) -> dict[str, Any]:
    """Probe facts of a finished segment, or the reason it is not acceptable."""
    return validate(path, probe_or_fail(path), opts)


def validate(path: Path, facts: dict[str, Any], opts: DownloadOptions) -> dict[str, Any]:
    """``facts`` (the probe of the finished segment ``path``), or the reason it is not
    acceptable."""
    if not facts.get("duration") or not facts.get("width") or not facts.get("height"):
        raise Failure("corrupt", f"no playable video in {path.name} (facts {facts})")
    if facts["width"] < opts.min_width or facts["height"] < opts.min_height:
        raise Failure("too_small", f"{facts['width']}x{facts['height']} is below "
                                    f"{opts.min_width}x{opts.min_height}")
    if opts.require_audio and not facts["has_audio"]:
        raise Failure("no_audio", "no audio stream")
    return facts


# --------------------------------------------------------------------------- yt-dlp
