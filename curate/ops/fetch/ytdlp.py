"""The yt-dlp call: its options (format choice, timeouts, cookies, JS runtimes), the
download (ranged or whole), and the hints added to its failures."""
from __future__ import annotations

import http.client
import logging
import math
from pathlib import Path
from typing import Any, Mapping

from curate.ops.fetch.errors import ANSI, BODY_PEEK, JS_CHALLENGE, Failure, classify, js_failure
from curate.ops.fetch.options import SMALL_SHORT_SIDE, DownloadOptions
from curate.ops.fetch.plan import Plan
from curate.ops.fetch.segment import copyts_args
from manifests.faults import FAULT_TEXT, EnvironmentFault, disk_fault
from manifests.scratch import write_fault

log = logging.getLogger(__name__)


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
        if JS_CHALLENGE.search(msg):
            self.challenge = ANSI.sub("", msg).removeprefix("WARNING: ").strip()

    def error(self, msg: str) -> None:
        log.info("yt-dlp %s: %s", self.sid, ANSI.sub("", msg))


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


def ydl_params(opts: DownloadOptions, outdir: Path, sid: str) -> dict[str, Any]:
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


def fetch(plan: Plan, outdir: Path, opts: DownloadOptions) -> tuple[Path, bool]:
    """Download with yt-dlp; returns (file, whether it is already cut to the segment)."""
    yt_dlp = import_yt_dlp()                      # heavy import, only where needed
    from yt_dlp.utils import download_range_func

    outdir.mkdir(parents=True, exist_ok=True)
    params = ydl_params(opts, outdir, plan.source_id)
    info = None
    try:
        with yt_dlp.YoutubeDL(params) as ydl:
            _keep_403_pages(ydl)
            info = ydl.extract_info(plan.url, download=False)
            if info is None:
                raise Failure("unavailable", "yt-dlp returned no information")
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
                    "ffmpeg_o": copyts_args()}
            ydl.process_ie_result(info, download=True)
    except Failure:
        raise
    except yt_dlp.utils.YoutubeDLError as e:
        _raise_disk_fault(e, outdir)
        raise _challenge_hint(_stream_hint(classify(e), info), params.get("logger")) from e
    except (OSError, http.client.HTTPException) as e:
        _raise_disk_fault(e, outdir)
        raise classify(e) from e
    files = [p for p in outdir.iterdir()
             if p.is_file() and not p.name.endswith((".part", ".ytdl", ".temp", ".json"))]
    if not files:
        raise Failure("error", "yt-dlp finished without an output file")
    return max(files, key=lambda p: p.stat().st_size), ranged


def import_yt_dlp():
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


def _stream_hint(f: Failure, info: Mapping[str, Any] | None) -> Failure:
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


def _challenge_hint(f: Failure, logger: Any) -> Failure:
    """A failure after yt-dlp warned that a JS challenge went unsolved ("Requested format is
    not available", a 403 on the media URL) is that challenge, not the video."""
    seen = getattr(logger, "challenge", None)
    if seen and f.reason not in ("js_challenge", "bot_check", "throttled", "timeout"):
        return js_failure(f"{seen}; then: {f.message}")
    return f


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
        raise Failure("too_small", f"largest format {best[0]}x{best[1]} is below "
                                    f"{opts.min_width}x{opts.min_height}")


def _keep_403_pages(ydl: Any) -> None:
    """Keep the first ``BODY_PEEK`` bytes of every 403 page ``ydl`` meets on the error
    (``body_of``): yt-dlp's extractors close the response before the error reaches us, and
    only the page tells a bot check from a plain refusal."""
    from yt_dlp.networking.exceptions import HTTPError
    urlopen = ydl.urlopen

    def peeking(req: Any) -> Any:
        try:
            return urlopen(req)
        except HTTPError as e:
            if e.status == 403 and not hasattr(e, "curate_page"):
                try:
                    e.curate_page = e.response.read(BODY_PEEK)
                except Exception:  # noqa: BLE001 - no page to keep
                    e.curate_page = b""
            raise
    ydl.urlopen = peeking
