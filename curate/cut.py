"""Cutting curated clips out of downloaded segments with ffmpeg.

A clip is re-encoded (H.264 yuv420p crf 18 + AAC, deterministic settings of
``curate/encoding.py``: the same inputs give the same bytes), never stream-copied: a stream copy can
only start on a keyframe. ``-ss`` is given before ``-i`` with ``-accurate_seek`` (ffmpeg's
default when transcoding, spelled out here): ffmpeg seeks to the keyframe before ``start``,
decodes, and drops every frame whose timestamp is before ``start``. So the clip's first frame
is the first source frame at or after ``start`` (exactly the frame at ``start`` when ``start``
is on the source's frame grid, else at most one frame period later; a constant-rate output
repeats it to fill that gap), and timestamps begin at 0. Audio is trimmed to the same
interval. The frame rate is the source's; the short side is capped (never upscaled) and
both sides rounded down to even numbers (yuv420p).

The result is written under a temporary name in the destination folder and renamed into
place, so a reader never sees half a clip.
"""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from curate.encoding import encode_args
from decoding.media import DecodeError, probe
from manifests.atomic import atomic_path

log = logging.getLogger(__name__)

#: quality of curated clips (DESIGN section 7: H.264 + AAC); the deterministic encoder
#: flags (single-threaded x264, bitexact, no metadata) come from curate/encoding.py
QUALITY = {"crf": 18, "preset": "veryfast", "audio_bitrate": "128k"}
STDERR_TAIL = 2000  # characters of ffmpeg's stderr kept in a CutError


class CutError(RuntimeError):
    """ffmpeg could not cut the clip; the message carries the tail of ffmpeg's stderr."""


def _even(x: float) -> int:
    """Largest even integer <= x (>= 2): yuv420p needs even sizes, and the cap must hold."""
    return max(2, int(x + 1e-6) // 2 * 2)


def output_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int]:
    """Output width/height: short side capped at ``max_short_side`` (never upscaled), even."""
    if width <= 0 or height <= 0:
        raise CutError(f"invalid source size {width}x{height}")
    scale = 1.0
    if max_short_side is not None and min(width, height) > max_short_side:
        scale = max_short_side / min(width, height)
    return _even(width * scale), _even(height * scale)


def ffmpeg_command(src: Path, dst: Path, start: float, end: float, size: tuple[int, int]) -> list[str]:
    """The argument list of one cut (no shell involved)."""
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-accurate_seek", "-ss", f"{start:.6f}", "-i", str(src), "-t", f"{end - start:.6f}",
        "-map", "0:v:0", "-map", "0:a:0?",
        "-vf", f"scale={size[0]}:{size[1]}:flags=bicubic,setsar=1", "-filter_threads", "1",
        *encode_args(QUALITY["crf"], QUALITY["preset"], QUALITY["audio_bitrate"]),
        "-movflags", "+faststart", "-f", "mp4", str(dst),
    ]


def _check_args(src: Path, start: float, end: float) -> None:
    if not src.is_file():
        raise CutError(f"source {src} does not exist")
    if not (start >= 0 and end > start):
        raise CutError(f"invalid clip interval [{start}, {end})")


def cut_clip(src: str | os.PathLike, dst: str | os.PathLike, start: float, end: float,
             max_short_side: int | None = None, timeout: float = 600.0) -> dict:
    """Cut ``[start, end)`` (seconds in ``src``) into ``dst``, frame-accurately.

    Returns the probe of the written clip (``decoding.media.probe``: duration, width, height,
    fps, has_audio, ...) plus ``path`` and ``bytes``. Raises CutError on any failure; the
    destination is then left untouched.
    """
    src, dst = Path(src), Path(dst)
    _check_args(src, start, end)
    try:
        info = probe(src)
    except DecodeError as e:
        raise CutError(f"cannot probe source: {e}") from e
    if info["duration"] is not None and start >= info["duration"]:
        raise CutError(f"clip starts at {start:.3f} s, after the source's end ({info['duration']:.3f} s)")
    # the display size: ffmpeg rotates the input upright (autorotate) before the scale
    # filter, and scaling coded pixels to the display size squares non-square pixels
    size = output_size(info.get("display_width") or info["width"],
                       info.get("display_height") or info["height"], max_short_side)
    with atomic_path(dst) as tmp:
        _run_ffmpeg(ffmpeg_command(src, tmp, start, end, size), timeout)
        try:
            out = probe(tmp)
        except DecodeError as e:
            raise CutError(f"ffmpeg wrote an unreadable clip: {e}") from e
    want = end - start
    if out["duration"] is not None and out["duration"] < want - 0.1:
        # the segment ended early: keep the clip, but say so (callers see the duration)
        log.warning("%s: clip is %.3f s, asked for %.3f s", dst.name, out["duration"], want)
    return {**out, "path": str(dst), "bytes": dst.stat().st_size}


def _run_ffmpeg(cmd: list[str], timeout: float) -> None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise CutError(f"ffmpeg timed out after {timeout:.0f} s") from e
    except OSError as e:  # ffmpeg missing from PATH
        raise CutError(f"cannot run ffmpeg: {e}") from e
    if res.returncode != 0:
        tail = (res.stderr or "").strip()[-STDERR_TAIL:]
        raise CutError(f"ffmpeg exited with {res.returncode}: {tail}")
