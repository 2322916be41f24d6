"""The download stage: one source row in, one DOWNLOADS row out (manifests/schemas.py).

A source is a URL (YouTube or any site yt-dlp knows, or a direct media file) or a local
path. The downloaded file keeps what the server sent: the source's own encoded streams,
stream-copied (no re-encode) from the keyframe at or before the segment start to the
segment end, *with the source's timestamps* (``-copyts``). So the segment [start, end) lies
at [seg_start, seg_end) on the file's own clock (``seg_start = start`` plus the source's own
start time), recorded in the DOWNLOADS row and in a sidecar ``<source_id>.json``; every later
stage addresses the segment by those times and the audio-video alignment of the source is
never touched before the final clip (``curate/ops/cut.py``):

- sites yt-dlp extracts (YouTube...): yt-dlp's ``download_ranges`` (its ffmpeg fetches only
  the range and stream-copies it; we add ``-copyts``), the source's start time taken as 0
  (DASH streams start at 0);
- direct media files (yt-dlp's generic extractor, e.g. our loopback server): the whole file
  is fetched with yt-dlp, then [start, end) is stream-copied with ffmpeg;
- local ``path`` rows: stream-copied from the file; no network.

mp4 edit lists are written on a movie time scale of ``MOVIE_TIMESCALE`` units per second
(a multiple of every common audio rate and video time scale), so a stream starting at 11.925333 s
keeps that start exactly (ffmpeg's default, 1/1000 s, would move each stream by up to 0.5 ms).
Only where a stream copy cannot be written (a codec mp4 cannot hold, a copy that misses
the start) is the segment re-encoded, then cut on a frame instant with both streams at the
same instant (``curate.ops.cut.cut_clip``): the file's clock then starts at 0 at that frame, and
the row's note (``error``, status ok) says ``re-encoded: <why>``.

``download_source`` never raises for a per-source problem: the row says ``status`` failed
and a ``reason`` (REASONS): e.g. ``no_video`` (audio-only), ``partial`` (``decoded 4.04 of
10.00 s``: the file stops before its own declared end), ``bot_check`` (``pass --cookies``),
``timeout`` (no byte for ``socket_timeout`` s; retried at most ``timeout_retries`` times),
``js_challenge`` (YouTube's JavaScript challenge unsolved: no JS runtime or no challenge-solver
scripts; the message names the fix, ``curate.ops.ytopts.JS_FIX``).
A source shorter than the segment asked for is ok with reason ``short`` and the note
``short: 5.0 of 10.0 s`` in ``error``. Transient failures are retried after the server's
Retry-After, else after a jittered exponential backoff, within ``max_wait`` seconds in all.
Output is written under a temp name in ``media_dir`` and renamed when complete, so a target
file is always whole; an existing target whose sidecar is of the current ``DOWNLOAD_FORMAT``
(and of its size) and that probes fine is returned as ``cached`` without touching the
network, which makes reruns resumable (a file of an older format is fetched again).
"""
from __future__ import annotations

import dataclasses
import email.utils
import http.client
import json
import logging
import math
import os
import random
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from curate.ops.ffmpeg import FfmpegError, run_ffmpeg
from curate.ops.encoding import DOWNLOAD_QUALITY, BITEXACT_ARGS, download_quality, encode_args
from curate.execution.health import Gate, GateClosed, Permit
from decoding.media import DecodeError, NoVideoError, probe, stream_starts
from manifests.atomic import write_json
from manifests.faults import FAULT_TEXT, EnvironmentFault, disk_fault, fault_of
from manifests.scratch import commit, scratch_dir, write_fault
from manifests.schemas import STATUS_FAILED, STATUS_OK
from manifests.names import safe_id
from manifests.source_lists import YOUTUBE_URL

log = logging.getLogger(__name__)

REASONS = ("ok", "cached", "short", "unavailable", "http_error", "throttled", "timeout",
           "bot_check", "js_challenge", "no_video", "no_audio", "too_small", "partial", "corrupt", "bad_input",
           "empty_response", "error")

#: seconds a segment may fall short of what was asked / what the source declares before it
#: counts (frame, audio-priming and keyframe granularity stay below this)
DURATION_TOLERANCE = 0.25

#: version of what a downloaded file is: 2 = stream copy on the source's clock, segment
#: times in the row and the sidecar (1 was a re-encode re-timed to start at 0). Part of
#: the download fingerprint: files of another format are fetched again.
DOWNLOAD_FORMAT = 2

#: mp4 movie time scale of every stream copy: 2^10 * 3^2 * 5^4 * 7^2, a multiple of 8/11.025/
#: 16/22.05/24/32/44.1/48 kHz and of the 1000/12800/15360/30000/90000 video time scales, so edit
#: lists place each stream's start exactly (and < 2^31, as the mvhd box needs)
MOVIE_TIMESCALE = 282_240_000

#: a stream copy whose first video frame comes this much after the segment start missed it
#: (a container that cannot seek to a keyframe before it): re-encode instead
COPY_START_TOLERANCE = 0.05

#: 720p: Landscape requires sources of at least 1280x720 (seed 004), and the trainers crop
#: 256 px, so more than 720p only costs disk at VGGSound scale (~176k segments).
DEFAULT_MAX_HEIGHT = 720

#: yt-dlp message fragments meaning the video is gone for good (no retry)
_UNAVAILABLE = re.compile(
    r"video unavailable|private video|has been removed|no longer available|is not available"
    r"|account .* terminated|copyright claim|removed by the uploader|does not exist"
    r"|members[- ]only|this live event will begin|premieres in|video has been blocked"
    r"|not available in your country|geo.?restricted|sign in to confirm your age"
    r"|inappropriate for some users",
    re.IGNORECASE)
_TIMEOUT = re.compile(r"timed? ?out|timeout", re.IGNORECASE)
#: YouTube's anti-bot wall: only a logged-in session (cookies) gets past it; retrying is useless
_BOT_CHECK = re.compile(r"confirm you.?re not a bot|sign in to confirm(?! your age)", re.IGNORECASE)
_HTTP_STATUS = re.compile(r"HTTP Error (\d{3})")
#: the server answered with no body at all: asking again gets the same nothing
_EMPTY = re.compile(r"did not get any data|downloaded file is empty|the downloaded file is empty", re.I)
#: a 403 whose page is a bot check (a captcha wall), not a plain refusal
_BOT_BODY = re.compile(r"confirm you.?re not a (?:ro)?bot|unusual traffic|captcha|are you a robot"
                       r"|verify (?:that )?you are (?:a )?human|automated (?:queries|requests)", re.I)
#: bytes of a 403's body read to look for a bot check
_BODY_PEEK = 64 * 1024
_TRANSFER = re.compile(
    r"content too short|incomplete ?read|connection (?:reset|refused|aborted)"
    r"|remote end closed|broken pipe|unable to download video data|downloaded \d+ bytes, expected"
    r"|bytes read, \d+ more expected",
    re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: yt-dlp's words for an unsolved YouTube n / signature challenge or a missing JS runtime
_JS_CHALLENGE = re.compile(r"challenge solving failed|signature solving failed"
                           r"|solving .{0,30}challenge|no supported javascript runtime"
                           r"|challenge solver", re.IGNORECASE)


@dataclass
class DownloadOptions:
    """How sources are fetched. ``ydl_opts`` is passed to yt_dlp.YoutubeDL last (wins)."""
    url_template: str = YOUTUBE_URL          # for rows with a ytid but no url
    max_height: int | None = DEFAULT_MAX_HEIGHT   # format cap; None = best available
    min_width: int = 0                       # smaller -> failed, reason "too_small"
    min_height: int = 0                      # Landscape: min_width=1280, min_height=720
    require_audio: bool = True               # no audio stream -> failed, reason "no_audio"
    retries: int = 3                         # extra attempts for transient failures
    backoff: float = 1.0                     # seconds; attempt k waits ~backoff * 2**k, jittered
    max_wait: float = 120.0                  # seconds of retry waits per source, Retry-After included
    socket_timeout: float = 20.0             # a connect or read stalled this long -> "timeout"
    timeout_retries: int = 1                 # a stalled source is retried at most this often
    cookiefile: str | list[str] | None = None   # several: used in turn after bot checks
    extractor_args: dict[str, dict[str, list[str]]] | None = None   # yt-dlp's, allow-listed
    #: yt-dlp's js_runtimes ({"node": {"path": P}}, --js-runtime); None: the shipped deno
    js_runtimes: dict[str, dict[str, str]] | None = None
    proxy: str | None = None
    ratelimit: int | None = None             # bytes per second
    use_ranges: str = "auto"                 # auto: ranges unless a direct file; always; never
    #: "full": the best rendition under max_height; "small": the smallest whose short side is
    #: at least SMALL_SHORT_SIDE (what the filters read), for scoring (stages.download.stage_fetch_full)
    rendition: str = "full"
    crf: int = DOWNLOAD_QUALITY["crf"]       # quality of a re-encode (only where a copy fails)
    preset: str = DOWNLOAD_QUALITY["preset"]
    audio_bitrate: str = DOWNLOAD_QUALITY["audio_bitrate"]
    ffmpeg_timeout: float = 600.0            # seconds for one ffmpeg cut
    source_root: str | None = None           # resolves relative local paths (default: cwd)
    ydl_opts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if min(self.retries, self.backoff, self.max_wait, self.timeout_retries) < 0:
            raise ValueError("retries, timeout_retries, backoff and max_wait must be >= 0")
        if not self.socket_timeout > 0:
            raise ValueError("socket_timeout must be > 0 seconds")
        if self.rendition not in ("full", "small"):
            raise ValueError(f"rendition must be full or small, not {self.rendition!r}")
        if self.use_ranges not in ("auto", "always", "never"):
            raise ValueError(f"use_ranges must be auto, always or never, not {self.use_ranges!r}")
        if self.max_height is not None and self.min_height > self.max_height:
            raise ValueError(f"min_height {self.min_height} > max_height {self.max_height}: "
                             "no format could pass")
        if "{ytid}" not in self.url_template:
            raise ValueError("url_template must contain {ytid}")
        if self.extractor_args:
            from curate.ops.ytopts import check_extractor_args
            check_extractor_args(self.extractor_args)

    @property
    def cookiefiles(self) -> list[str]:
        c = self.cookiefile
        return [] if not c else [c] if isinstance(c, str) else [str(x) for x in c]


class _Failure(Exception):
    """A per-source failure with its recorded reason; ``transient`` ones are retried.

    ``retry_after``: seconds the server asked us to wait (HTTP Retry-After), if any."""

    def __init__(self, reason: str, message: str, transient: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.transient = reason, message, transient
        self.retry_after = retry_after


@dataclass
class _Plan:
    source_id: str
    start: float
    end: float | None
    url: str | None = None
    path: Path | None = None


# --------------------------------------------------------------------------- public

def download_source(row: Mapping[str, Any], media_dir: str | os.PathLike,
                    opts: DownloadOptions | None = None, gate: Gate | None = None) -> dict[str, Any]:
    """Fetch one source's segment to ``media_dir/<source_id>.mp4``; returns a DOWNLOADS row.

    ``gate``: the run's health control (``curate.execution.health``): every request asks it first and
    reports its outcome; a throttled source then waits with every other worker instead of
    spending its retries."""
    opts = opts or DownloadOptions()
    sid = row.get("source_id")
    if row.get("status") not in (None, STATUS_OK):
        # the sources stage already rejected this row; keep its reason, fetch nothing
        return _failed(sid, "bad_input", f"source row {row.get('status')}: {row.get('error')}")
    try:
        sid = safe_id(sid)
    except ValueError as e:
        return _failed(sid if isinstance(sid, str) else None, "bad_input", str(e))
    media_dir = Path(media_dir)
    target = media_dir / f"{sid}.mp4"
    cached = _cached_row(sid, target, opts, row)
    if cached is not None:
        return cached
    try:
        plan = _plan(row, sid, opts)
    except _Failure as f:
        return _failed(sid, f.reason, f.message)
    media_dir.mkdir(parents=True, exist_ok=True)
    if gate is not None and plan.url is not None:
        _yt_dlp()   # seconds in a fresh worker: before the gate's permit, not after
    return _with_retries(plan, target, opts, gate)


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

def _failed(sid: str | None, reason: str, message: str) -> dict[str, Any]:
    return downloads_row(sid, None, STATUS_FAILED, reason, message)


def _cached_row(sid: str, target: Path, opts: DownloadOptions,
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
        facts = {**_check(target, opts), **_segment_facts(seg)}
    except _Failure as f:
        # e.g. options got stricter or the file was damaged: fetch again
        log.info("download %s: existing file not reused (%s: %s)", sid, f.reason, f.message)
        target.unlink(missing_ok=True)
        return None
    try:   # a short source stays noted on every rerun
        short = _short_note(_Plan(sid, _seconds(row.get("start"), "start", default=0.0),
                                  _seconds(row.get("end"), "end", default=None)), facts)
    except _Failure:
        short = None
    note = _join(short, seg.get("note"))
    return downloads_row(sid, str(target), STATUS_OK, "short" if short else "cached", note, facts,
                         _rendition(row.get("path"), opts))


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


def _segment_facts(seg: Mapping[str, Any]) -> dict[str, Any]:
    return {"seg_start": float(seg["seg_start"]), "seg_end": float(seg["seg_end"]),
            "stream_copy": bool(seg.get("stream_copy")),
            "duration": float(seg["seg_end"]) - float(seg["seg_start"])}


def _join(*notes: str | None) -> str | None:
    kept = [n for n in notes if n]
    return "; ".join(kept) if kept else None


def _rendition(path: Any, opts: DownloadOptions) -> str:
    """A local file (a source row's ``path``, or a plan's) is used as it is (full); a
    fetched one is the rendition asked for."""
    return "full" if path else opts.rendition


def _short_note(plan: _Plan, facts: Mapping[str, Any]) -> str | None:
    """``short: 5.0 of 10.0 s`` when the segment is shorter than asked (the source ends early)."""
    if plan.end is None or not facts.get("duration"):
        return None
    want, got = plan.end - plan.start, float(facts["duration"])
    if got < want - DURATION_TOLERANCE:
        return f"short: {got:.1f} of {want:.1f} s"
    return None


def _complete(plan: _Plan, declared: float | None, facts: Mapping[str, Any]) -> str | None:
    """Fail a segment that stops before its source's declared end (a truncated or damaged
    file whose index survived decodes only part: ``decoded 4.0 of 10.0 s``); return the
    ``short`` note when the source itself is shorter than the segment asked for."""
    got = float(facts.get("duration") or 0.0)
    if declared:
        avail = (min(plan.end, declared) if plan.end is not None else declared) - plan.start
        if got < avail - DURATION_TOLERANCE:
            # a transfer may have been cut: a new download can fix it, a local file cannot
            raise _Failure("partial", f"decoded {got:.2f} of {avail:.2f} s (the file is "
                                      f"truncated or damaged)", transient=plan.url is not None)
    return _short_note(plan, facts)


def _outcome(f: _Failure) -> str:
    """What a failure tells the health control."""
    if f.reason in ("throttled", "bot_check"):
        return f.reason
    m = _HTTP_STATUS.search(f.message)
    return "server_error" if f.reason == "http_error" and m and int(m.group(1)) >= 500 else "other"


def _try_once(plan: _Plan, target: Path, opts: DownloadOptions, gate: Gate | None,
              last: _Failure, tried: bool) -> tuple[dict[str, Any] | None, _Failure, Permit | None]:
    """One attempt under the gate: (the final downloads row -- the file, or the gate closed --
    or None, the failure of this attempt (else ``last``), the gate's permit)."""
    permit: Permit | None = None
    if gate is not None:
        try:
            permit = gate.acquire()
        except GateClosed as g:
            msg = f"{last.message}; {g.message}" if tried else f"not downloaded: {g.message}"
            return _failed(plan.source_id, g.reason, msg), last, None
    cookies = opts.cookiefiles
    try_opts = opts
    if permit is not None and len(cookies) > 1:
        try_opts = dataclasses.replace(opts, cookiefile=cookies[permit.cookie % len(cookies)])
    try:
        facts, short, note = _attempt(plan, target, try_opts)
        if gate is not None:
            gate.report(permit, "ok")
        reason = "short" if short else "ok"
        return downloads_row(plan.source_id, str(target), STATUS_OK, reason, _join(short, note), facts,
                             _rendition(plan.path, opts)), last, permit
    except _Failure as f:
        return None, f, permit
    except Exception as e:   # noqa: BLE001 - a bug or an odd input must not lose the batch
        fault = fault_of(e)
        if fault is not None:      # the machine's, not the source's: the stage stops
            if gate is not None:
                gate.report(permit, "other")
            raise fault from e
        log.exception("download %s: unexpected error", plan.source_id)
        return None, _Failure("error", f"{type(e).__name__}: {e}"), permit


def _with_retries(plan: _Plan, target: Path, opts: DownloadOptions,
                  gate: Gate | None = None) -> dict[str, Any]:
    last = _Failure("error", "no attempt made")
    waited, timeouts, attempt, cookie_tries, throttles = 0.0, 0, 0, 0, 0
    tried = False
    cookies = opts.cookiefiles
    while True:
        row, last, permit = _try_once(plan, target, opts, gate, last, tried)
        if row is not None:
            return row
        tried = True
        if gate is not None:
            state = gate.report(permit, _outcome(last), last.retry_after, last.message[:200])
            if last.reason == "throttled":
                # the control pauses every worker; this source waits with them, its own
                # tries are not spent (a give-up of the control ends it, as ``throttled``).
                # Below the control's threshold it backs off alone, as without a control.
                throttles += 1
                if state.get("state") == "open":
                    time.sleep(min(retry_delay(min(throttles - 1, 6), opts.backoff, last.retry_after),
                                   max(opts.max_wait, 0.0)))
                continue
            if last.reason == "bot_check" and cookie_tries < len(cookies) - 1:
                cookie_tries += 1      # the control moved on to the next cookie file
                continue
        if not last.transient or attempt >= opts.retries:
            break
        # a server that stalled once mostly stalls again: don't hold the worker for
        # retries x socket_timeout
        timeouts += last.reason == "timeout"
        if timeouts > opts.timeout_retries:
            break
        delay = retry_delay(attempt, opts.backoff, last.retry_after)
        if waited + delay > opts.max_wait:
            last.message += (f" (gave up: waiting {delay:.0f} s more would pass max_wait "
                             f"{opts.max_wait:g} s)")
            break
        log.info("download %s: %s (%s), retry %d/%d in %.2f s", plan.source_id, last.reason,
                 last.message, attempt + 1, opts.retries, delay)
        time.sleep(delay)
        waited += delay
        attempt += 1
    log.warning("download %s failed: %s: %s", plan.source_id, last.reason, last.message)
    return _failed(plan.source_id, last.reason, last.message)


def retry_delay(attempt: int, backoff: float, retry_after: float | None = None,
                rng: random.Random | None = None) -> float:
    """Seconds before retry ``attempt + 1``: the server's Retry-After when it gave one, else
    exponential backoff with full jitter in [0.5, 1.5) x ``backoff * 2**attempt`` (many
    workers hit by one 429 must not come back in lock step)."""
    if retry_after is not None:
        return max(float(retry_after), 0.0)
    r = (rng or random).random()
    return backoff * 2 ** attempt * (0.5 + r)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """HTTP Retry-After as seconds: delta-seconds (``120``) or an HTTP-date; None if absent
    or unparseable. A date in the past is 0."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(when.timestamp() - now, 0.0)


def _attempt(plan: _Plan, target: Path, opts: DownloadOptions
             ) -> tuple[dict[str, Any], str | None, str | None]:
    """One try: fetch into a private scratch folder outside the output
    (``manifests.scratch``), check, commit (the file, then its sidecar).

    Returns the probe facts with the segment times, a ``short: ...`` note or None, and a
    ``re-encoded: ...`` note or None."""
    with scratch_dir(target.stem) as tmp:
        out = tmp / "segment.mp4"
        declared: float | None = None      # the source's own duration, when we saw the file
        # ``probed``: the probe of ``out`` its writer made (``out`` is unchanged since)
        if plan.path is not None:
            declared, seg, probed = _cut(plan.path, plan.start, plan.end, out, opts)
        else:
            fetched, already_cut = _fetch(plan, tmp / "dl", opts)
            if already_cut:
                seg, probed = _remux(fetched, plan.start, plan.end, out, opts)
            else:
                declared, seg, probed = _cut(fetched, plan.start, plan.end, out, opts)
        facts = {**_validate(out, probed, opts), **_segment_facts(seg)}
        short = _complete(plan, declared, facts)
        sidecar = {"format": DOWNLOAD_FORMAT, **seg, "bytes": out.stat().st_size}
        commit(out, target)
        write_json(sidecar_path(target), sidecar)
        return facts, short, seg.get("note")


def _plan(row: Mapping[str, Any], sid: str, opts: DownloadOptions) -> _Plan:
    start = _seconds(row.get("start"), "start", default=0.0)
    end = _seconds(row.get("end"), "end", default=None)
    if start < 0 or (end is not None and end <= start):
        raise _Failure("bad_input", f"bad segment [{start}, {end})")
    url, path = row.get("url"), row.get("path")
    if path:
        p = Path(path)
        if not p.is_absolute() and opts.source_root:
            p = Path(opts.source_root) / p
        if p.exists() and not p.is_file():
            # /dev/zero, a folder, a pipe: reading it would never end or mean nothing
            raise _Failure("bad_input", f"local path {p} is not a regular file "
                                        f"(a device, folder or pipe cannot be a source)")
        if not p.is_file():
            raise _Failure("unavailable", f"local file not found: {p}")
        return _Plan(sid, start, end, path=p)
    if not url:
        ytid = row.get("ytid")
        if not ytid:
            raise _Failure("bad_input", "row has neither url, path nor ytid")
        try:
            url = opts.url_template.format(ytid=safe_id(ytid))
        except ValueError as e:
            raise _Failure("bad_input", str(e)) from e
    if not re.match(r"https?://", str(url)):
        raise _Failure("bad_input", f"unsupported url {url!r} (http or https only)")
    return _Plan(sid, start, end, url=str(url))


def _seconds(v: Any, what: str, default: float | None) -> float | None:
    if v is None or v == "":
        return default
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise _Failure("bad_input", f"{what} is not a number: {v!r}") from None
    if not math.isfinite(x):
        raise _Failure("bad_input", f"{what} is not finite: {v!r}")
    return x


def _check(path: Path, opts: DownloadOptions) -> dict[str, Any]:
    """Probe facts of a finished segment, or the reason it is not acceptable."""
    return _validate(path, _probe_or_fail(path), opts)


def _validate(path: Path, facts: dict[str, Any], opts: DownloadOptions) -> dict[str, Any]:
    """``facts`` (the probe of the finished segment ``path``), or the reason it is not
    acceptable."""
    if not facts.get("duration") or not facts.get("width") or not facts.get("height"):
        raise _Failure("corrupt", f"no playable video in {path.name} (facts {facts})")
    if facts["width"] < opts.min_width or facts["height"] < opts.min_height:
        raise _Failure("too_small", f"{facts['width']}x{facts['height']} is below "
                                    f"{opts.min_width}x{opts.min_height}")
    if opts.require_audio and not facts["has_audio"]:
        raise _Failure("no_audio", "no audio stream")
    return facts


# --------------------------------------------------------------------------- yt-dlp

class _YdlLogger:
    """yt-dlp -> python logging. Its errors become our recorded reasons, so they log at INFO."""

    def __init__(self, sid: str) -> None:
        self.sid = sid
        #: the last warning about an unsolved JS challenge: a later "format not available"
        #: is then that, not the video's fault
        self.challenge: str | None = None

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp %s: %s", self.sid, msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp %s: %s", self.sid, msg)

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp %s: %s", self.sid, msg)
        if _JS_CHALLENGE.search(msg):
            self.challenge = _ANSI.sub("", msg).removeprefix("WARNING: ").strip()

    def error(self, msg: str) -> None:
        log.info("yt-dlp %s: %s", self.sid, _ANSI.sub("", msg))


#: every filter reads a 224-pixel grid: the small rendition is the smallest at least this
SMALL_SHORT_SIDE = 224


def _format(max_height: int | None, rendition: str = "full") -> str:
    """Prefer H.264+AAC in mp4 under the cap, then anything under the cap, then anything.

    ``small``: the worst (smallest) rendition whose both sides are >= 224 (240p / 360p on
    YouTube), mp4 first; a source with none falls back to the full choice."""
    if rendition == "small":
        f = f"[height>={SMALL_SHORT_SIDE}][width>=?{SMALL_SHORT_SIDE}]"   # a listing may omit width
        return f"wv*{f}[ext=mp4]+ba[ext=m4a]/wv*{f}+ba/w{f}/" + _format(max_height)
    if max_height is None:
        return "bv*[ext=mp4]+ba[ext=m4a]/bv*+ba/b"
    h = f"[height<=?{int(max_height)}]"
    return f"bv*{h}[ext=mp4]+ba[ext=m4a]/bv*{h}+ba/b{h}/bv*+ba/b"


def _ydl_params(opts: DownloadOptions, outdir: Path, sid: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "format": _format(opts.max_height, opts.rendition),
        "merge_output_format": "mp4",
        "outtmpl": {"default": str(outdir / "source.%(ext)s")},
        "noplaylist": True,
        "quiet": True,
        "no_warnings": False,
        "noprogress": True,
        "no_color": True,
        "cachedir": False,          # never write ~/.cache
        "updatetime": False,        # don't stamp files with the server's mtime
        "overwrites": True,
        "socket_timeout": opts.socket_timeout,
        # our own loop retries the whole source with backoff; yt-dlp retries only fragments
        "retries": 0,
        "fragment_retries": 3,
        "extractor_retries": 0,
        "logger": _YdlLogger(sid),
    }
    if opts.cookiefiles:
        params["cookiefile"] = opts.cookiefiles[0]
    from curate.ops.ytopts import js_runtimes
    params["js_runtimes"] = js_runtimes(opts.js_runtimes)
    if opts.extractor_args:
        params["extractor_args"] = {k: {a: list(v) for a, v in args.items()}
                                    for k, args in opts.extractor_args.items()}
    if opts.proxy:
        params["proxy"] = opts.proxy
    if opts.ratelimit:
        params["ratelimit"] = int(opts.ratelimit)
    params.update(opts.ydl_opts)
    return params


def _fetch(plan: _Plan, outdir: Path, opts: DownloadOptions) -> tuple[Path, bool]:
    """Download with yt-dlp; returns (file, whether it is already cut to the segment)."""
    yt_dlp = _yt_dlp()                      # heavy import, only where needed
    from yt_dlp.utils import download_range_func

    outdir.mkdir(parents=True, exist_ok=True)
    params = _ydl_params(opts, outdir, plan.source_id)
    info = None
    try:
        with yt_dlp.YoutubeDL(params) as ydl:
            _keep_403_pages(ydl)
            info = ydl.extract_info(plan.url, download=False)
            if info is None:
                raise _Failure("unavailable", "yt-dlp returned no information")
            _precheck_size(info, opts)
            ranged = _use_ranges(info, opts)
            if ranged:
                end = plan.end if plan.end is not None else math.inf
                # read lazily by yt-dlp (process_video_result and its ffmpeg downloader)
                ydl.params["download_ranges"] = download_range_func(None, [(plan.start, end)])
                # no force_keyframes_at_cuts: yt-dlp's ffmpeg then stream-copies the range
                # (from the keyframe before it); keep the source's timestamps, exactly
                ydl.params["force_keyframes_at_cuts"] = False
                ydl.params["external_downloader_args"] = {
                    **(ydl.params.get("external_downloader_args") or {}),
                    "ffmpeg_o": _copyts_args()}
            ydl.process_ie_result(info, download=True)
    except _Failure:
        raise
    except yt_dlp.utils.YoutubeDLError as e:
        _raise_disk_fault(e, outdir)
        raise _challenge_hint(_stream_hint(_classify(e), info), params.get("logger")) from e
    except (OSError, http.client.HTTPException) as e:
        _raise_disk_fault(e, outdir)
        raise _classify(e) from e
    files = [p for p in outdir.iterdir()
             if p.is_file() and not p.name.endswith((".part", ".ytdl", ".temp", ".json"))]
    if not files:
        raise _Failure("error", "yt-dlp finished without an output file")
    return max(files, key=lambda p: p.stat().st_size), ranged


def _yt_dlp():
    """The yt_dlp module; its absence is the machine's fault, not any source's."""
    try:
        import yt_dlp
    except ImportError as e:
        import sys
        raise EnvironmentFault(f"yt-dlp is not installed in this Python ({sys.executable}): "
                               f"pip install yt-dlp ({e})") from e
    return yt_dlp


def _raise_disk_fault(e: BaseException, outdir: Path) -> None:
    """A full or read-only disk under yt-dlp's error (it writes into ``outdir``, in scratch)
    stops the stage (``manifests.faults``) instead of failing the source."""
    err = disk_fault(e)
    if err is not None:
        raise write_fault(err.filename or outdir, err.strerror or str(err)) from e
    m = FAULT_TEXT.search(str(e))
    if m:
        raise write_fault(outdir, f"yt-dlp: {m.group(0)}") from e


def _stream_hint(f: _Failure, info: Mapping[str, Any] | None) -> _Failure:
    """A segmented stream (HLS / DASH) that yt-dlp hands to ffmpeg fails as a bare "ffmpeg
    exited with code 1": say what was being fetched and what to try."""
    info = info or {}
    proto = str(info.get("protocol") or "")
    hls = "m3u8" in proto or "m3u8" in str(info.get("url") or "")
    if "ffmpeg exited" in f.message and (hls or "dash" in proto):
        kind = "HLS (m3u8)" if hls else "DASH"
        f.message = (f"{kind} stream: yt-dlp's ffmpeg could not fetch the segment ({f.message}); "
                     f"check that ffmpeg reaches the stream's URLs (rerun with --verbose for "
                     f"ffmpeg's own error), or set \"use_ranges\": \"never\" in the recipe's "
                     f"download block to fetch the whole stream and cut it here")
        f.args = (f.message,)
    return f


def _challenge_hint(f: _Failure, logger: Any) -> _Failure:
    """A failure after yt-dlp warned that a JS challenge went unsolved ("Requested format is
    not available", a 403 on the media URL) is that challenge, not the video."""
    seen = getattr(logger, "challenge", None)
    if seen and f.reason not in ("js_challenge", "bot_check", "throttled", "timeout"):
        return _js_failure(f"{seen}; then: {f.message}")
    return f


def _js_failure(msg: str) -> _Failure:
    from curate.ops.ytopts import JS_FIX
    return _Failure("js_challenge", f"js_challenge: {JS_FIX}: {msg}")


def _use_ranges(info: Mapping[str, Any], opts: DownloadOptions) -> bool:
    if opts.use_ranges != "auto":
        return opts.use_ranges == "always"
    # a direct file has no cheaper way in than the whole file; sites stream segments
    return not info.get("direct")


def _precheck_size(info: Mapping[str, Any], opts: DownloadOptions) -> None:
    """Fail before downloading when the site lists formats and none is large enough."""
    if not (opts.min_width or opts.min_height):
        return
    sizes = [(f.get("width") or 0, f.get("height") or 0) for f in info.get("formats") or []
             if f.get("vcodec") != "none" and f.get("height")]
    if sizes and not any(w >= opts.min_width and h >= opts.min_height for w, h in sizes):
        best = max(sizes, key=lambda s: s[1])
        raise _Failure("too_small", f"largest format {best[0]}x{best[1]} is below "
                                    f"{opts.min_width}x{opts.min_height}")


def _causes(e: BaseException):
    """The exception and everything it wraps (yt-dlp keeps originals in exc_info / cause)."""
    seen = set()
    stack = [e]
    while stack:
        c = stack.pop()
        if c is None or id(c) in seen:
            continue
        seen.add(id(c))
        yield c
        exc_info = getattr(c, "exc_info", None)
        if isinstance(exc_info, tuple) and len(exc_info) > 1:
            stack.append(exc_info[1])
        stack.extend([getattr(c, "cause", None), c.__cause__, c.__context__])


def _classify(e: BaseException) -> _Failure:
    """Map a yt-dlp / network exception to (reason, transient)."""
    from yt_dlp.networking.exceptions import HTTPError, IncompleteRead
    from yt_dlp.utils import ContentTooShortError
    from yt_dlp.extractor.youtube.jsc.provider import (JsChallengeProviderError,
                                                       JsChallengeProviderRejectedRequest)

    msg = _ANSI.sub("", str(e)).removeprefix("ERROR: ").strip() or type(e).__name__
    for c in _causes(e):
        if isinstance(c, (JsChallengeProviderError, JsChallengeProviderRejectedRequest)):
            return _js_failure(msg)
        if isinstance(c, ContentTooShortError):
            return _Failure("http_error", f"incomplete transfer: {c}", transient=True)
        if isinstance(c, HTTPError):
            if c.status == 403 and _BOT_BODY.search(_body_of(c)):
                return _Failure("bot_check", f"bot_check: the server answered 403 with a bot "
                                             f"check page: pass --cookies ({msg})")
            return _http_failure(c.status, msg, _retry_after_of(c))
        if isinstance(c, (TimeoutError, socket.timeout)):
            return _Failure("timeout", msg, transient=True)
        if isinstance(c, (IncompleteRead, http.client.IncompleteRead, ConnectionError)):
            return _Failure("http_error", f"incomplete transfer: {msg}", transient=True)
    if _JS_CHALLENGE.search(msg):
        return _js_failure(msg)
    if _BOT_CHECK.search(msg):
        return _Failure("bot_check", f"bot_check: pass --cookies (YouTube wants a signed-in "
                                     f"session to confirm you're not a bot): {msg}")
    m = _HTTP_STATUS.search(msg)
    if m:
        return _http_failure(int(m.group(1)), msg)
    if _UNAVAILABLE.search(msg):
        return _Failure("unavailable", msg)
    if _TIMEOUT.search(msg):
        return _Failure("timeout", msg, transient=True)
    if _EMPTY.search(msg):
        return _Failure("empty_response", f"empty_response: the server sent no data ({msg})")
    if _TRANSFER.search(msg):
        return _Failure("http_error", f"incomplete transfer: {msg}", transient=True)
    if "unsupported url" in msg.lower():
        return _Failure("bad_input", msg)
    return _Failure("error", msg)


def _keep_403_pages(ydl: Any) -> None:
    """Keep the first ``_BODY_PEEK`` bytes of every 403 page ``ydl`` meets on the error
    (``_body_of``): yt-dlp's extractors close the response before the error reaches us, and
    only the page tells a bot check from a plain refusal."""
    from yt_dlp.networking.exceptions import HTTPError
    urlopen = ydl.urlopen

    def peeking(req: Any) -> Any:
        try:
            return urlopen(req)
        except HTTPError as e:
            if e.status == 403 and not hasattr(e, "curate_page"):
                try:
                    e.curate_page = e.response.read(_BODY_PEEK)
                except Exception:  # noqa: BLE001 - no page to keep
                    e.curate_page = b""
            raise
    ydl.urlopen = peeking


def _body_of(err: BaseException) -> str:
    """The kept start of an HTTP error's page (``_keep_403_pages``), as text, else ''."""
    data = getattr(err, "curate_page", b"")
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else ""


def _http_failure(status: int, msg: str, retry_after: float | None = None) -> _Failure:
    # 408/429/5xx may pass on a later try; 403/404/410 will not. A 429 is the site
    # throttling the crawler, not this source: recorded as ``throttled`` (retryable)
    transient = status in (408, 429) or status >= 500
    if retry_after is not None:
        msg = f"{msg} (Retry-After {retry_after:.0f} s)"
    reason = "throttled" if status == 429 else "http_error"
    return _Failure(reason, msg, transient=transient, retry_after=retry_after)


def _retry_after_of(err: BaseException) -> float | None:
    """Retry-After of a yt-dlp HTTPError's response (429/503), in seconds."""
    headers = getattr(getattr(err, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("Retry-After")
    except AttributeError:
        return None
    return parse_retry_after(value)


# --------------------------------------------------------------------------- ffmpeg

def _ffmpeg(args: list[str], opts: DownloadOptions) -> None:
    """``ops.ffmpeg.run_ffmpeg`` with its failures as the download's recorded reasons."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    try:
        run_ffmpeg(cmd, opts.ffmpeg_timeout)
    except FfmpegError as e:
        if e.timed_out:
            raise _Failure("timeout", str(e)) from e
        err = e.stderr.strip().splitlines()
        raise _Failure("corrupt", "ffmpeg: " + (" | ".join(err[-3:]) or f"exit {e.returncode}")) from e


def _encode_args(opts: DownloadOptions) -> list[str]:
    # deterministic encoder settings (curate/ops/encoding.py) of a whole-segment re-encode (the
    # format-1 download, kept for benchmarks/repro_encode.py and bench_sync_download.py)
    return ["-map", "0:v:0", "-map", "0:a:0?",
            *encode_args(opts.crf, opts.preset, opts.audio_bitrate), "-movflags", "+faststart"]


def _copyts_args() -> list[str]:
    # the source's timestamps unchanged, edit lists exact, no muxer version strings
    return ["-copyts", "-movie_timescale", str(MOVIE_TIMESCALE), *BITEXACT_ARGS]


def _copy_args() -> list[str]:
    # a stream copy is deterministic given its input; bitexact/no metadata keep the muxer so
    return ["-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", *_copyts_args(),
            "-movflags", "+faststart"]


def _probe_or_fail(path: Path) -> dict[str, Any]:
    """``probe(path)``, its errors as this stage's failure reasons."""
    try:
        return probe(path)
    except NoVideoError as e:
        raise _Failure("no_video", f"no_video: {e}") from e
    except DecodeError as e:
        raise _Failure("corrupt", str(e)) from e


def _probe_src(src: Path) -> dict[str, Any]:
    info = _probe_or_fail(src)
    if not info["duration"]:
        raise _Failure("corrupt", f"{src.name}: unknown duration")
    return info


def _cut(src: Path, start: float, end: float | None, out: Path, opts: DownloadOptions
         ) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """[start, end) of ``src`` (seconds from its start) to ``out`` (mp4): a stream copy from
    the keyframe at or before ``start`` on ``src``'s own clock, else a frame-instant
    re-encode. Returns the duration ``src`` declares (its index, to compare with what could
    be written), the segment record (seg_start, seg_end on ``out``'s clock, stream_copy,
    note) and the probe of ``out``."""
    info = _probe_src(src)
    dur, t_src = info["duration"], info.get("start_time") or 0.0
    if start >= dur:
        raise _Failure("bad_input", f"segment start {start:g} s is past the end ({dur:.2f} s)")
    args = ["-ss", f"{start:.6f}"] + (["-t", f"{end - start:.6f}"] if end is not None else [])
    try:
        _ffmpeg([*args, "-i", str(src), *_copy_args(), str(out)], opts)
        return (dur, *_copied_segment(out, t_src + start, None if end is None else t_src + end))
    except _Failure as f:
        # e.g. a codec mp4 cannot hold, or a copy that misses the start: re-encode
        log.info("stream copy of %s failed (%s), re-encoding", src.name, f.message)
        why = f.message
    return (dur, *_reencode(src, start, end, out, opts, offset=t_src, why=why, src_info=info))


def _copied_segment(out: Path, seg_start: float, seg_end: float | None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Segment times of a stream copy on its own clock (= the source's): the copy must
    begin at or before the segment start (it begins on the keyframe before it). Returns
    them with the probe of ``out``."""
    try:
        first_v, _first_a = stream_starts(out)
        facts = probe(out)
    except DecodeError as e:
        raise _Failure("corrupt", f"stream copy unreadable: {e}") from e
    if first_v is None or first_v > seg_start + COPY_START_TOLERANCE:
        raise _Failure("corrupt", f"stream copy starts at {first_v} s, after the segment start "
                                  f"{seg_start:.3f} s")
    file_end = (facts.get("start_time") or 0.0) + (facts.get("duration") or 0.0)
    end = file_end if seg_end is None else min(seg_end, file_end)
    return {"seg_start": seg_start, "seg_end": max(end, seg_start), "stream_copy": True,
            "note": None}, facts


#: what ``cut_clip`` returns beside the probe of the clip it wrote
_CUT_EXTRAS = ("path", "bytes", "cut_start", "cut_end", "av_offset_ms")


def _reencode(src: Path, start: float, end: float | None, out: Path, opts: DownloadOptions,
              offset: float, why: str, src_info: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The segment re-encoded, cut on a frame instant with both streams at that instant
    (``curate.ops.cut.cut_clip``); the file's clock starts at 0 there. ``src_info``: the
    probe of ``src`` (``_probe_src``) when the caller made one. Returns the segment record
    and the probe of ``out``."""
    from curate.ops.cut import CutError, cut_clip

    if end is None:
        info = src_info if src_info is not None else _probe_src(src)
        end = (info.get("start_time") or 0.0) + info["duration"] - offset
    try:
        info = cut_clip(src, out, start, end, offset=offset, quality=download_quality(opts),
                        scale=False, timeout=opts.ffmpeg_timeout)
    except CutError as e:
        raise _Failure("corrupt", f"ffmpeg: {e}") from e
    first_v, _ = stream_starts(out)
    t0 = first_v or 0.0
    length = float(info["cut_end"] - info["cut_start"])
    # cut_clip probed the clip it wrote, then moved it onto ``out`` (the same bytes)
    facts = {k: v for k, v in info.items() if k not in _CUT_EXTRAS}
    return {"seg_start": t0, "seg_end": t0 + length, "stream_copy": False,
            "note": f"re-encoded ({why}); starts at the frame {info['cut_start'] - start:.3f} s "
                    f"after the segment start"}, facts


def _remux(src: Path, start: float, end: float | None, out: Path, opts: DownloadOptions
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A yt-dlp range download (already the segment, on the source's clock) into mp4 at
    ``out``. Returns the segment record and the probe of ``out``."""
    try:
        _ffmpeg(["-i", str(src), *_copy_args(), str(out)], opts)
        return _copied_segment(out, start, end)
    except _Failure as f:
        return _reencode(src, start, end, out, opts, offset=0.0, why=f.message)
