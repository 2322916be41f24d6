"""Cutting curated clips out of downloaded segments with ffmpeg, on frame instants.

A clip is re-encoded (H.264 yuv420p crf 18 + AAC, deterministic settings of
``curate/ops/encoding.py``: the same inputs give the same bytes), never stream-copied: a stream
copy can only start on a keyframe.

Both streams are cut at the same instant, a video frame's. ``frame_instants`` reads the
source's packets: the clip starts at t0, the first frame at or after the requested start,
and ends at t1, the first frame at or after the requested end (exclusive). ffmpeg seeks with
``-seek_timestamp 1 -ss t0`` (times on the file's own clock: a stream-copied download keeps
its source's timestamps, so its clock does not start at 0) and ``-accurate_seek``: it
decodes from the keyframe before t0 and drops every video frame before t0 and every audio
sample before t0 (sample-exact), so the clip's first frame and first audio sample are both
t0 of the source. ``-fps_mode passthrough`` keeps each frame on its own instant (no frame
repeated or dropped to fill a constant rate: a variable-rate source stays variable) in the
source's time base. t0 is given in whole microseconds rounded down, at most 1 us before the
frame; the audio follows within half a sample.

After the cut the clip's first video frame time and first audio sample time are read back
as a player shows them (edit lists, AAC priming): ``av_offset_ms`` in the result, which the
shard stage records and ``curate verify`` checks.

The short side is capped (never upscaled) and both sides rounded down to even numbers
(yuv420p). ffmpeg writes the clip in scratch space outside the output
(``manifests.scratch``) and it is renamed into place when finished, so a reader never sees
half a clip and a killed build's ffmpeg never writes in the output.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from curate.ops.ffmpeg import FfmpegError, run_ffmpeg
from curate.ops.encoding import CUT_QUALITY, encode_args
from decoding.media import DecodeError, av_offset_ms, frame_instants, probe
from manifests.scratch import scratch_path

log = logging.getLogger(__name__)

STDERR_TAIL = 2000  # characters of ffmpeg's stderr kept in a CutError


class CutError(RuntimeError):
    """ffmpeg could not cut the clip; the message carries the tail of ffmpeg's stderr."""


class RepairRefused(CutError):
    """The shifted audio would reach past the source's start or end: no repair (the message
    says by how much)."""


#: a shifted audio span may reach this far past the source's edges (s): a rounding of its
#: clock, never a missing stretch of sound
EDGE_SLACK_S = 1e-3


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


def _seek_input(src: Path, t: float) -> list[str]:
    """``src`` opened at ``t`` on its own clock, sample- and frame-exact."""
    return ["-accurate_seek", "-seek_timestamp", "1", "-ss", f"{t:.6f}", "-i", str(src)]


def ffmpeg_command(src: Path, dst: Path, start: float, end: float, size: tuple[int, int] | None,
                   quality: dict | None = None, audio_shift: float = 0.0) -> list[str]:
    """The argument list of one cut of [start, end) on ``src``'s own clock, ``start`` a frame
    instant (no shell involved). ``size`` None keeps the source's size. ``audio_shift`` (s,
    whole microseconds): the audio comes from ``audio_shift`` later in the source (a second
    opening of it), so the clip's audio at t is the source's at t + audio_shift."""
    q = quality or CUT_QUALITY
    t0 = math.floor(start * 1e6) / 1e6      # never after the frame: ffmpeg keeps it
    vf = ["-vf", f"scale={size[0]}:{size[1]}:flags=bicubic,setsar=1"] if size else []
    audio = (["-map", "0:a:0?"] if not audio_shift else
             # each input's timestamps start at its own seek point: both streams start at 0
             ["-map", "1:a:0"])
    shifted = _seek_input(src, round(t0 + audio_shift, 6)) if audio_shift else []
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        *_seek_input(src, t0), *shifted,
        "-t", f"{end - t0:.6f}", "-map", "0:v:0", *audio,
        *vf, "-filter_threads", "1", "-fps_mode", "passthrough", "-enc_time_base:v", "-1",
        *encode_args(q["crf"], q["preset"], q["audio_bitrate"]),
        "-movflags", "+faststart", "-f", "mp4", str(dst),
    ]


def _check_args(src: Path, start: float, end: float) -> None:
    if not src.is_file():
        raise CutError(f"source {src} does not exist")
    if not (start >= 0 and end > start):
        raise CutError(f"invalid clip interval [{start}, {end})")


def shift_of(audio_shift: float) -> float:
    """The audio shift a cut applies (s): whole microseconds, as ffmpeg's seek is given."""
    return round(float(audio_shift), 6)


def check_shift_span(t0: float, t1: float, shift: float, file_start: float, file_end: float,
                     offset: float = 0.0) -> None:
    """RepairRefused when the audio of ``[t0, t1)`` moved by ``shift`` (file clock) would
    reach past the source's start or end: the repaired clip would run out of sound."""
    a, b = t0 + shift, t1 + shift
    if a < file_start - EDGE_SLACK_S:
        raise RepairRefused(f"repair refused: the audio would start {file_start - a:.3f} s before "
                            f"the source's start (shift {shift * 1000:+.1f} ms)")
    if b > file_end + EDGE_SLACK_S:
        raise RepairRefused(f"repair refused: the audio would run {b - file_end:.3f} s past the "
                            f"source's end at {file_end - offset:.3f} s (shift {shift * 1000:+.1f} ms)")


def cut_clip(src: str | os.PathLike, dst: str | os.PathLike, start: float, end: float,
             max_short_side: int | None = None, timeout: float = 600.0, offset: float = 0.0,
             quality: dict | None = None, scale: bool = True, audio_shift: float = 0.0) -> dict:
    """Cut ``[start, end)`` into ``dst`` on frame instants, both streams at the same instant.

    Times are seconds relative to ``offset`` on ``src``'s clock (a download's ``seg_start``).
    ``audio_shift`` (s; rounded to whole microseconds, ``shift_of``): a repair, the clip's
    audio at t is the source's at t + audio_shift (``curate.selection.repair``: positive
    undoes late audio); RepairRefused when the source holds no audio there.
    Returns the probe of the written clip (``decoding.media.probe``: duration, width, height,
    fps, has_audio, ...) plus ``path``, ``bytes``, ``cut_start`` / ``cut_end`` (the frame
    instants actually cut, relative to ``offset`` like ``start``), ``av_offset_ms`` (read
    back from the clip). Raises CutError on any failure; the destination is then left
    untouched.
    """
    audio_shift = shift_of(audio_shift)
    src, dst = Path(src), Path(dst)
    _check_args(src, start, end)
    try:
        info = probe(src)
    except DecodeError as e:
        raise CutError(f"cannot probe source: {e}") from e
    file_end = (info.get("start_time") or 0.0) + (info["duration"] or math.inf)
    if start + offset >= file_end:
        raise CutError(f"clip starts at {start:.3f} s, after the source's end "
                       f"({file_end - offset:.3f} s)")
    try:
        t0, t1 = frame_instants(src, start + offset, end + offset)
    except DecodeError as e:
        raise CutError(str(e)) from e
    if audio_shift:
        check_shift_span(t0, t1, audio_shift, info.get("start_time") or 0.0, file_end, offset)
    # the display size: ffmpeg rotates the input upright (autorotate) before the scale
    # filter, and scaling coded pixels to the display size squares non-square pixels
    size = output_size(info.get("display_width") or info["width"],
                       info.get("display_height") or info["height"], max_short_side) if scale else None
    with scratch_path(dst) as tmp:
        _ffmpeg(ffmpeg_command(src, tmp, t0, t1, size, quality, audio_shift), timeout)
        try:
            out = probe(tmp)
            offset_ms = av_offset_ms(tmp)
        except DecodeError as e:
            raise CutError(f"ffmpeg wrote an unreadable clip: {e}") from e
    want = end - start
    if out["duration"] is not None and out["duration"] < want - 0.1:
        # the segment ended early: keep the clip, but say so (callers see the duration)
        log.warning("%s: clip is %.3f s, asked for %.3f s", dst.name, out["duration"], want)
    return {**out, "path": str(dst), "bytes": dst.stat().st_size, "cut_start": t0 - offset,
            "cut_end": t1 - offset, "av_offset_ms": offset_ms}


def _ffmpeg(cmd: list[str], timeout: float) -> None:
    """``ops.ffmpeg.run_ffmpeg`` with its failures as ``CutError``."""
    try:
        run_ffmpeg(cmd, timeout)
    except FfmpegError as e:
        if e.timed_out:
            raise CutError(f"ffmpeg timed out after {timeout:.0f} s") from e
        raise CutError(f"ffmpeg exited with {e.returncode}: {e.stderr.strip()[-STDERR_TAIL:]}") from e
    except OSError as e:  # ffmpeg missing from PATH
        raise CutError(f"cannot run ffmpeg: {e}") from e
