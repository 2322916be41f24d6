"""What went wrong with one source: ``Failure`` (a recorded reason, retried when
``transient``) and the classification of yt-dlp / network exceptions into reasons."""
from __future__ import annotations

import email.utils
import http.client
import re
import socket
import time


REASONS = ("ok", "cached", "short", "unavailable", "http_error", "throttled", "timeout",
           "bot_check", "js_challenge", "no_video", "no_audio", "too_small", "partial", "corrupt", "bad_input",
           "empty_response", "error")

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
BODY_PEEK = 64 * 1024
_TRANSFER = re.compile(
    r"content too short|incomplete ?read|connection (?:reset|refused|aborted)"
    r"|remote end closed|broken pipe|unable to download video data|downloaded \d+ bytes, expected"
    r"|bytes read, \d+ more expected",
    re.IGNORECASE)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: yt-dlp's words for an unsolved YouTube n / signature challenge or a missing JS runtime
JS_CHALLENGE = re.compile(r"challenge solving failed|signature solving failed"
                           r"|solving .{0,30}challenge|no supported javascript runtime"
                           r"|challenge solver", re.IGNORECASE)


class Failure(Exception):
    """A per-source failure with its recorded reason; ``transient`` ones are retried.

    ``retry_after``: seconds the server asked us to wait (HTTP Retry-After), if any."""

    def __init__(self, reason: str, message: str, transient: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.transient = reason, message, transient
        self.retry_after = retry_after


def outcome(f: Failure) -> str:
    """What a failure tells the health control."""
    if f.reason in ("throttled", "bot_check"):
        return f.reason
    m = _HTTP_STATUS.search(f.message)
    return "server_error" if f.reason == "http_error" and m and int(m.group(1)) >= 500 else "other"


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


def classify(e: BaseException) -> Failure:
    """Map a yt-dlp / network exception to (reason, transient)."""
    from yt_dlp.networking.exceptions import HTTPError, IncompleteRead
    from yt_dlp.utils import ContentTooShortError
    from yt_dlp.extractor.youtube.jsc.provider import (JsChallengeProviderError,
                                                       JsChallengeProviderRejectedRequest)

    msg = ANSI.sub("", str(e)).removeprefix("ERROR: ").strip() or type(e).__name__
    for c in _causes(e):
        if isinstance(c, (JsChallengeProviderError, JsChallengeProviderRejectedRequest)):
            return js_failure(msg)
        if isinstance(c, ContentTooShortError):
            return Failure("http_error", f"incomplete transfer: {c}", transient=True)
        if isinstance(c, HTTPError):
            if c.status == 403 and _BOT_BODY.search(body_of(c)):
                return Failure("bot_check", f"bot_check: the server answered 403 with a bot "
                                             f"check page: pass --cookies ({msg})")
            return _http_failure(c.status, msg, _retry_after_of(c))
        if isinstance(c, (TimeoutError, socket.timeout)):
            return Failure("timeout", msg, transient=True)
        if isinstance(c, (IncompleteRead, http.client.IncompleteRead, ConnectionError)):
            return Failure("http_error", f"incomplete transfer: {msg}", transient=True)
    if JS_CHALLENGE.search(msg):
        return js_failure(msg)
    if _BOT_CHECK.search(msg):
        return Failure("bot_check", f"bot_check: pass --cookies (YouTube wants a signed-in "
                                     f"session to confirm you're not a bot): {msg}")
    m = _HTTP_STATUS.search(msg)
    if m:
        return _http_failure(int(m.group(1)), msg)
    if _UNAVAILABLE.search(msg):
        return Failure("unavailable", msg)
    if _TIMEOUT.search(msg):
        return Failure("timeout", msg, transient=True)
    if _EMPTY.search(msg):
        return Failure("empty_response", f"empty_response: the server sent no data ({msg})")
    if _TRANSFER.search(msg):
        return Failure("http_error", f"incomplete transfer: {msg}", transient=True)
    if "unsupported url" in msg.lower():
        return Failure("bad_input", msg)
    return Failure("error", msg)


def body_of(err: BaseException) -> str:
    """The kept start of an HTTP error's page (``_keep_403_pages``), as text, else ''."""
    data = getattr(err, "curate_page", b"")
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else ""


def _http_failure(status: int, msg: str, retry_after: float | None = None) -> Failure:
    # 408/429/5xx may pass on a later try; 403/404/410 will not. A 429 is the site
    # throttling the crawler, not this source: recorded as ``throttled`` (retryable)
    transient = status in (408, 429) or status >= 500
    if retry_after is not None:
        msg = f"{msg} (Retry-After {retry_after:.0f} s)"
    reason = "throttled" if status == 429 else "http_error"
    return Failure(reason, msg, transient=transient, retry_after=retry_after)


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


def js_failure(msg: str) -> Failure:
    from curate.ops.ytopts import JS_FIX
    return Failure("js_challenge", f"js_challenge: {JS_FIX}: {msg}")
