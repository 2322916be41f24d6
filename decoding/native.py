"""Native-frame decoding with torchvision ``video_reader`` semantics, and torchaudio's sinc
resampler: what the released ASVA code (lzhangbj/ASVA ``avsync/data.py``, ``avgen/data/utils.py``)
feeds its models, reproduced with PyAV.

The released pipeline reads every decoded frame with its own pts instead of a resampled grid:

* video: RGB24 frames (swscale at native size, no resize at decode), pts rounded to whole
  microseconds (``pts_us * 1e-6``, as torchvision reports them), counted in display order;
* audio: whole AAC (codec) frames, planar float ``[C, n]`` with their pts, so an audio window
  is "the frames whose pts lie inside it", not a sample range;
* metadata: stream durations and rates as ``VideoReader.get_metadata`` gives them (the video
  fps is FFmpeg's guessed rate, ``av_guess_frame_rate``, as torchvision's decoder takes it).

``released_metadata``, ``decode_native_frames``, ``decode_audio_frames`` read those;
``nearest_frame`` / ``stepped_frames`` pick frames by time; ``join_audio_frames``
concatenates the frames of a window; ``sinc_resample`` is ``torchaudio.functional.resample``
(windowed sinc, Hann or Kaiser, width 6, rolloff 0.99) re-implemented, because torchaudio
cannot be installed next to the CPU torch wheel used here.
"""
from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from decoding.media import DecodeError, planar_float


def _us(pts: int, time_base) -> float:
    """A pts in seconds as torchvision reports it: rounded to whole microseconds, then * 1e-6."""
    return int(round(pts * time_base.numerator * 1_000_000 / time_base.denominator)) * 1e-6


def _open(path: str | Path | bytes):
    """A container from a path or from the bytes of a file (a shard member: the trainer-side
    loader's released convention reads mp4s in memory)."""
    try:
        if isinstance(path, (bytes, bytearray, memoryview)):
            return av.open(io.BytesIO(path))
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise DecodeError(f"cannot open {_name(path)}: {e}") from e


def _name(src) -> str:
    """How an error names its source: the path, or the size of in-memory bytes."""
    return f"<{len(src)} bytes>" if isinstance(src, (bytes, bytearray, memoryview)) else str(src)


def released_metadata(path: str | Path | bytes) -> dict:
    """Stream facts as the released code reads them: ``video_duration``, ``video_fps``,
    ``audio_duration``, ``audio_sr``, ``audio_channels`` (None without audio), and
    ``av_duration`` = the shorter of the two durations."""
    with _open(path) as c:
        if not c.streams.video:
            raise DecodeError(f"{_name(path)}: no video stream")
        v = c.streams.video[0]
        vdur = _stream_duration(v, c)
        # torchvision's decoder reports av_guess_frame_rate (r_frame_rate for mp4), not the
        # average: a file with bursts of frames (r 30, average 10) reads 30 and is kept
        rate = v.guessed_rate
        out = {"video_duration": vdur, "video_fps": float(rate) if rate else 0.0,
               "audio_duration": None, "audio_sr": None, "audio_channels": None}
        if c.streams.audio:
            a = c.streams.audio[0]
            out.update(audio_duration=_stream_duration(a, c), audio_sr=float(a.rate),
                       audio_channels=a.channels)
    durs = [d for d in (out["video_duration"], out["audio_duration"]) if d is not None]
    out["av_duration"] = min(durs) if durs else None
    return out


def _stream_duration(stream, container) -> float | None:
    # torchvision reports whole microseconds: 180180 / 30000 s reads 6.005999999999999
    if stream.duration is not None:
        return _us(stream.duration, stream.time_base)
    if container.duration is not None:
        return int(container.duration) * 1e-6
    return None


@dataclass
class NativeFrames:
    """Decoded frames in display order: ``frames`` uint8 ``[N, H, W, 3]``, ``pts`` float64 s,
    ``index`` the 0-based position of each frame among all decoded frames of the file."""

    frames: np.ndarray
    pts: np.ndarray
    index: np.ndarray


def decode_native_frames(path: str | Path | bytes, t0: float = -math.inf, t1: float = math.inf
                         ) -> NativeFrames:
    """Every frame with ``t0 <= pts <= t1`` (pts as ``_us``) at its native size, RGB24.

    Decodes from the start of the file so that ``index`` counts every earlier frame."""
    frames, pts, index = [], [], []
    with _open(path) as c:
        if not c.streams.video:
            raise DecodeError(f"{_name(path)}: no video stream")
        for i, t, f in _decoded_in(path, c, c.streams.video[0], t0, t1, "video", frames):
            frames.append(f.to_ndarray(format="rgb24"))
            pts.append(t)
            index.append(i)
    if not frames:
        raise DecodeError(f"{_name(path)}: no video frame with pts in [{t0:.4f}, {t1:.4f}] s")
    return NativeFrames(np.stack(frames), np.asarray(pts, np.float64), np.asarray(index))


@dataclass
class AudioFrames:
    """Decoded audio (codec) frames: ``data[i]`` float32 ``[C, n_i]``, ``pts`` float64 s,
    ``index`` 0-based decode position; ``sample_rate`` Hz."""

    data: list
    pts: np.ndarray
    index: np.ndarray
    sample_rate: int


def decode_audio_frames(path: str | Path | bytes, t0: float = -math.inf, t1: float = math.inf
                        ) -> AudioFrames:
    """Every audio frame with ``t0 <= pts <= t1``, planar float ``[C, n]`` (all channels)."""
    data, pts, index = [], [], []
    with _open(path) as c:
        if not c.streams.audio:
            raise DecodeError(f"{_name(path)}: no audio stream")
        a = c.streams.audio[0]
        rate = int(a.rate)
        for i, t, f in _decoded_in(path, c, a, t0, t1, "audio", data):
            data.append(planar_float(f))
            pts.append(t)
            index.append(i)
    return AudioFrames(data, np.asarray(pts, np.float64), np.asarray(index, np.int64), rate)


def _decoded_in(path, container, stream, t0: float, t1: float, kind: str, got: list):
    """Yield ``(decode position, pts in s, frame)`` for the frames of ``stream`` with
    ``t0 <= pts <= t1``. A decode error after some frames ends the range (a damaged tail);
    before any (``got`` still empty) it is a DecodeError naming the file."""
    try:
        for i, f in enumerate(container.decode(stream)):
            if f.pts is None:
                continue
            t = _us(f.pts, stream.time_base)
            if t > t1:
                break
            if t >= t0:
                yield i, t, f
    except av.error.FFmpegError as e:
        if not got:
            raise DecodeError(f"{_name(path)}: {kind} decode failed: {e}") from e


def frames_in(pts: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Positions of the frames with ``t0 <= pts <= t1``."""
    return np.nonzero((pts >= t0) & (pts <= t1))[0]


def join_audio_frames(frames: AudioFrames, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """(samples ``[C, n]``, positions of the frames used): the whole frames whose pts lie in
    ``[t0, t1]``, joined. A window can start up to one frame late (the first boundary at or
    after ``t0``) and ends with the frame that starts before ``t1``."""
    sel = frames_in(frames.pts, t0, t1)
    if len(sel) == 0:
        raise DecodeError(f"no audio frame with pts in [{t0:.4f}, {t1:.4f}] s")
    return np.concatenate([frames.data[i] for i in sel], axis=1), sel


def nearest_frame(pts: np.ndarray, times) -> np.ndarray:
    """For each time, the position of the frame with the smallest ``|t - pts|`` (the earlier
    one on an exact tie, as ``argmin``)."""
    t = np.asarray(times, np.float64)
    return np.abs(t[..., None] - pts).argmin(axis=-1)


# ---------------------------------------------------------------- torchaudio's sinc resampler

@functools.lru_cache(maxsize=32)
def _sinc_kernel(orig: int, new: int, width_zc: int, rolloff: float, method: str,
                 beta: float | None, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """``[new, 1, 2 * width + orig]`` polyphase kernel (orig and new divided by their gcd)."""
    base = min(orig, new) * rolloff
    width = math.ceil(width_zc * orig / base)
    idx = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype)[:, None, None] / new + idx
    t *= base
    t = t.clamp_(-width_zc, width_zc)
    if method == "sinc_interp_hann":
        window = torch.cos(t * math.pi / width_zc / 2) ** 2
    elif method == "sinc_interp_kaiser":
        b = torch.tensor(float(14.769656459379492 if beta is None else beta))
        window = torch.i0(b * torch.sqrt(1 - (t / width_zc) ** 2)) / torch.i0(b)
    else:
        raise ValueError(f"resampling method must be sinc_interp_hann or sinc_interp_kaiser, got {method!r}")
    t *= math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * (base / orig)
    return kernels, width


def sinc_resample(wave, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
                  rolloff: float = 0.99, method: str = "sinc_interp_hann",
                  beta: float | None = None) -> torch.Tensor:
    """``torchaudio.functional.resample`` for ``[..., n]`` float audio: identity at equal rates,
    else a windowed-sinc polyphase filter computed in the input's dtype; output length
    ``ceil(new * n / orig)``."""
    x = torch.as_tensor(wave)
    if not torch.is_floating_point(x):
        raise ValueError(f"sinc_resample needs float audio, got {x.dtype}")
    if int(orig_freq) <= 0 or int(new_freq) <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_freq} -> {new_freq}")
    if int(orig_freq) == int(new_freq):
        return x
    g = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // g, int(new_freq) // g
    kernel, width = _sinc_kernel(orig, new, int(lowpass_filter_width), float(rolloff), method,
                                 None if beta is None else float(beta), x.dtype)
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    n = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target = int(math.ceil(new * n / orig))
    return out[..., :target].reshape(shape[:-1] + (min(target, out.shape[-1]),))


def stepped_frames(pts: np.ndarray, start: float, step: float, n: int) -> np.ndarray:
    """Positions of ``n`` frames picked as the released generated-video loader does
    (``avgen/data/utils.py: load_video_clip_from_videoreader``): walking the frames in order,
    a frame is taken when its pts is >= the current time, which then advances by ``step``
    (start, start + step, ... accumulated in float64, so each pick is the first frame with
    pts >= its time). Fewer than ``n`` picks are padded with the last one."""
    out: list[int] = []
    t = start
    for i, p in enumerate(pts):
        if p >= t:
            out.append(i)
            t += step
            if len(out) == n:
                break
    if not out:
        raise DecodeError(f"no frame at or after {start:.4f} s")
    return np.asarray(out + [out[-1]] * (n - len(out)))
