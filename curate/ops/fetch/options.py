"""How sources are fetched: ``DownloadOptions`` (the recipe's ``download`` block)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from curate.ops.encoding import DOWNLOAD_QUALITY
from manifests.source_lists import YOUTUBE_URL


#: 720p: Landscape requires sources of at least 1280x720 (seed 004), and the trainers crop
#: 256 px, so more than 720p only costs disk at VGGSound scale (~176k segments).
DEFAULT_MAX_HEIGHT = 720


#: every filter reads a 224-pixel grid: the small rendition is the smallest at least this
SMALL_SHORT_SIDE = 224


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
    #: at least SMALL_SHORT_SIDE (what the filters read), for scoring (stagekit.downloading.fetch_full)
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
