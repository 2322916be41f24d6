"""Deterministic encoder settings, declared once, for every re-encode of the pipeline.

The download stage's cut / remux fallback (``curate/ops/fetch/segment.py``) and the clip cut
(``curate/ops/cut.py``) both build their ffmpeg arguments from here, so two runs on the same
inputs write byte-identical files, also on a loaded machine:

- libx264 multi-threading (frame threads, lookahead threads) makes rate-control decisions
  depend on thread timing: under CPU load some runs gave different bytes. ``-threads 1``
  plus ``threads=1:lookahead-threads=1:sliced-threads=0`` removes every encoder thread.
- ``-fflags +bitexact`` and ``-flags:v/-flags:a +bitexact`` keep the muxer and encoders from
  writing version strings; ``-map_metadata -1``/``-map_chapters -1`` drop the source's tags
  (a source ``creation_time`` would otherwise be copied); with bitexact the mp4 muxer writes
  creation time 0.
- ffmpeg's native AAC encoder is deterministic (no threads, no randomness).

``encoder_settings()`` is the dict a run records in ``run.json``: the bytes also depend on
the ffmpeg build, so its version is part of it.
"""
from __future__ import annotations

import functools
import subprocess
from typing import Any

VIDEO_CODEC = "libx264"
AUDIO_CODEC = "aac"
PIX_FMT = "yuv420p"
X264_PARAMS = "threads=1:lookahead-threads=1:sliced-threads=0"

#: the one definition of what makes an encode reproducible (used by download and cut)
ENCODER_SETTINGS: dict[str, Any] = {
    "video_codec": VIDEO_CODEC, "pix_fmt": PIX_FMT, "threads": 1, "x264_params": X264_PARAMS,
    "audio_codec": AUDIO_CODEC, "bitexact": True, "map_metadata": -1,
}

#: quality of curated clips (DESIGN section 7: H.264 + AAC), cut by ``curate.ops.cut``
CUT_QUALITY: dict[str, Any] = {"crf": 18, "preset": "veryfast", "audio_bitrate": "128k"}
#: quality of a download re-encode (only where a stream copy fails): ``DownloadOptions``' defaults
DOWNLOAD_QUALITY: dict[str, Any] = {"crf": 18, "preset": "veryfast", "audio_bitrate": "192k"}

#: flags placed after the inputs, before the output name
BITEXACT_ARGS: tuple[str, ...] = (
    "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
    "-map_metadata", "-1", "-map_chapters", "-1",
)


def video_args(crf: int, preset: str) -> list[str]:
    """H.264 encoder arguments with every encoder thread removed."""
    return ["-c:v", VIDEO_CODEC, "-preset", str(preset), "-crf", str(int(crf)),
            "-pix_fmt", PIX_FMT, "-threads", "1", "-x264-params", X264_PARAMS]


def audio_args(bitrate: str) -> list[str]:
    """AAC (ffmpeg's native encoder) at ``bitrate``."""
    return ["-c:a", AUDIO_CODEC, "-b:a", str(bitrate)]


def encode_args(crf: int, preset: str, audio_bitrate: str) -> list[str]:
    """Video + audio + bitexact/metadata arguments of one deterministic encode."""
    return [*video_args(crf, preset), *audio_args(audio_bitrate), *BITEXACT_ARGS]


@functools.lru_cache(maxsize=1)
def ffmpeg_version() -> str | None:
    """First line of ``ffmpeg -version`` (None when ffmpeg cannot be run)."""
    try:
        res = subprocess.run(["ffmpeg", "-hide_banner", "-version"], capture_output=True,
                             text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (res.stdout or "").splitlines()
    return first[0].strip() if first else None


def download_quality(download_opts: Any = None) -> dict[str, Any]:
    """Quality settings (crf, preset, audio_bitrate) of the download re-encode:
    ``download_opts``' (a ``DownloadOptions``), default its defaults."""
    d = download_opts
    return dict(DOWNLOAD_QUALITY) if d is None else \
        {"crf": d.crf, "preset": d.preset, "audio_bitrate": d.audio_bitrate}


def encoder_settings(download_opts: Any = None) -> dict[str, Any]:
    """What to record in ``run.json["encoder"]``: the shared settings, the quality settings
    of the download re-encode (``download_quality``) and of the clip cut, and the ffmpeg
    version (bytes depend on the build)."""
    return {**ENCODER_SETTINGS, "ffmpeg": ffmpeg_version(),
            "download": download_quality(download_opts), "cut": dict(CUT_QUALITY)}
