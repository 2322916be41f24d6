"""The ffmpeg paths that write the segment: a stream copy on the source's clock (``cut``),
the remux of a yt-dlp range download (``remux``), and the frame-instant re-encode where a
copy cannot be written."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from curate.ops.encoding import BITEXACT_ARGS, download_quality, encode_args
from curate.ops.ffmpeg import FfmpegError, run_ffmpeg
from curate.ops.fetch.errors import Failure
from curate.ops.fetch.options import DownloadOptions
from decoding.media import DecodeError, NoVideoError, probe, stream_starts

log = logging.getLogger(__name__)


#: mp4 movie time scale of every stream copy: 2^10 * 3^2 * 5^4 * 7^2, a multiple of 8/11.025/
#: 16/22.05/24/32/44.1/48 kHz and of the 1000/12800/15360/30000/90000 video time scales, so edit
#: lists place each stream's start exactly (and < 2^31, as the mvhd box needs)
MOVIE_TIMESCALE = 282_240_000

#: a stream copy whose first video frame comes this much after the segment start missed it
#: (a container that cannot seek to a keyframe before it): re-encode instead
COPY_START_TOLERANCE = 0.05


def _ffmpeg(args: list[str], opts: DownloadOptions) -> None:
    """``ops.ffmpeg.run_ffmpeg`` with its failures as the download's recorded reasons."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    try:
        run_ffmpeg(cmd, opts.ffmpeg_timeout)
    except FfmpegError as e:
        if e.timed_out:
            raise Failure("timeout", str(e)) from e
        err = e.stderr.strip().splitlines()
        raise Failure("corrupt", "ffmpeg: " + (" | ".join(err[-3:]) or f"exit {e.returncode}")) from e


def reencode_args(opts: DownloadOptions) -> list[str]:
    # deterministic encoder settings (curate/ops/encoding.py) of a whole-segment re-encode (the
    # format-1 download, kept for benchmarks/repro_encode.py and bench_sync_download.py)
    return ["-map", "0:v:0", "-map", "0:a:0?",
            *encode_args(opts.crf, opts.preset, opts.audio_bitrate), "-movflags", "+faststart"]


def copyts_args() -> list[str]:
    # the source's timestamps unchanged, edit lists exact, no muxer version strings
    return ["-copyts", "-movie_timescale", str(MOVIE_TIMESCALE), *BITEXACT_ARGS]


def _copy_args() -> list[str]:
    # a stream copy is deterministic given its input; bitexact/no metadata keep the muxer so
    return ["-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", *copyts_args(),
            "-movflags", "+faststart"]


def probe_or_fail(path: Path) -> dict[str, Any]:
    """``probe(path)``, its errors as this stage's failure reasons."""
    try:
        return probe(path)
    except NoVideoError as e:
        raise Failure("no_video", f"no_video: {e}") from e
    except DecodeError as e:
        raise Failure("corrupt", str(e)) from e


def _probe_src(src: Path) -> dict[str, Any]:
    info = probe_or_fail(src)
    if not info["duration"]:
        raise Failure("corrupt", f"{src.name}: unknown duration")
    return info


def cut(src: Path, start: float, end: float | None, out: Path, opts: DownloadOptions
        ) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """[start, end) of ``src`` (seconds from its start) to ``out`` (mp4): a stream copy from
    the keyframe at or before ``start`` on ``src``'s own clock, else a frame-instant
    re-encode. Returns the duration ``src`` declares (its index, to compare with what could
    be written), the segment record (seg_start, seg_end on ``out``'s clock, stream_copy,
    note) and the probe of ``out``."""
    info = _probe_src(src)
    dur, t_src = info["duration"], info.get("start_time") or 0.0
    if start >= dur:
        raise Failure("bad_input", f"segment start {start:g} s is past the end ({dur:.2f} s)")
    args = ["-ss", f"{start:.6f}"] + (["-t", f"{end - start:.6f}"] if end is not None else [])
    try:
        _ffmpeg([*args, "-i", str(src), *_copy_args(), str(out)], opts)
        return (dur, *_copied_segment(out, t_src + start, None if end is None else t_src + end))
    except Failure as f:
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
        raise Failure("corrupt", f"stream copy unreadable: {e}") from e
    if first_v is None or first_v > seg_start + COPY_START_TOLERANCE:
        raise Failure("corrupt", f"stream copy starts at {first_v} s, after the segment start "
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
        raise Failure("corrupt", f"ffmpeg: {e}") from e
    first_v, _ = stream_starts(out)
    t0 = first_v or 0.0
    length = float(info["cut_end"] - info["cut_start"])
    # cut_clip probed the clip it wrote, then moved it onto ``out`` (the same bytes)
    facts = {k: v for k, v in info.items() if k not in _CUT_EXTRAS}
    return {"seg_start": t0, "seg_end": t0 + length, "stream_copy": False,
            "note": f"re-encoded ({why}); starts at the frame {info['cut_start'] - start:.3f} s "
                    f"after the segment start"}, facts


def remux(src: Path, start: float, end: float | None, out: Path, opts: DownloadOptions
          ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A yt-dlp range download (already the segment, on the source's clock) into mp4 at
    ``out``. Returns the segment record and the probe of ``out``."""
    try:
        _ffmpeg(["-i", str(src), *_copy_args(), str(out)], opts)
        return _copied_segment(out, start, end)
    except Failure as f:
        return _reencode(src, start, end, out, opts, offset=0.0, why=f.message)
