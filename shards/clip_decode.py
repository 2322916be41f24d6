"""One 2-s window of an in-memory mp4, decoded under each convention (what
``sync_classifier.conventions`` ``Ours.loader_window`` / ``Released.loader_window`` call for
the trainer-side loader, ``shards.loader.ClipDecoder``; the module doc of ``shards.loader``
says what each gives).

Imports PyAV, torch and ``decoding`` only.
"""
from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from decoding import native
from decoding.media import DecodeError, decode_open
from decoding.mel import imagebind_mel, released_mel

WINDOW_S = 2.0
FPS = 6
NUM_FRAMES = 12
SIZE = 256
SAMPLE_RATE = 16000


def _durations(c) -> tuple[float, float | None]:
    """(video duration, audio duration or None) of an open file, in seconds."""
    if not c.streams.video:
        raise DecodeError("no video stream")
    total = float(c.duration / av.time_base) if c.duration else None

    def dur(s) -> float | None:
        if s.duration:
            return float(s.duration * s.time_base)
        return total

    v = dur(c.streams.video[0])
    a = dur(c.streams.audio[0]) if c.streams.audio else None
    if v is None:
        raise DecodeError("unknown video duration")
    return v, a


def window_start(duration: float, train: bool, rng: random.Random, window: float = WINDOW_S) -> float:
    """AVSyncD's window start: uniform in train, centred in test, 0 when the clip is short."""
    slack = duration - window
    if slack <= 0:
        return 0.0
    return rng.uniform(0.0, slack) if train else slack / 2.0


# ---------------------------------------------------------------- the released convention

def released_start(av_duration: float, train: bool, rng: random.Random,
                   window: float = WINDOW_S) -> float:
    """The released window start: ``max(0, uniform(0, D - 2))`` in train (``uniform`` with
    ``b < a`` draws in ``[b, a]``, so short clips start at 0), ``max(0, (D - 2) / 2)`` in test."""
    if train:
        return max(0.0, rng.uniform(0.0, av_duration - window))
    return max(0.0, (av_duration - window) / 2.0)


def released_frame_picks(pts: np.ndarray, start: float, window: float = WINDOW_S,
                         fps: int = FPS, num_frames: int = NUM_FRAMES) -> list[int]:
    """Positions in ``pts`` (ascending seconds, whole microseconds) of the frames the
    released ``load_video_clip_from_videoreader`` takes for a window at ``start``: among the
    frames with ``pts <= start + window + 1 / (2 fps)`` (its ``takewhile``), the stepped
    choice of ``decoding.native.stepped_frames``. Empty when no frame qualifies."""
    step = 1.0 / fps
    pts = np.asarray(pts, np.float64)
    pts = pts[:int(np.searchsorted(pts, start + window + step / 2.0, side="right"))]
    try:
        return [int(i) for i in native.stepped_frames(pts, start, step, num_frames)]
    except DecodeError:
        return []


def generation_pixels(frames: np.ndarray, size: int = SIZE) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> float32 ``[N, 3, size, size]`` in [0, 1] as the released
    ``load_and_transform_images_stable_diffusion`` (square target): centre crop the long side
    to the short one, then bilinear antialiased resize (no clamping, no re-quantising).
    ``sync_classifier.generated_eval.metrics_video`` starts from these pixels too."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    if h <= w:  # target aspect 1 >= h / w: trim the width
        x0 = (w - h) // 2
        x = x[..., x0:x0 + h]
    else:
        y0 = (h - w) // 2
        x = x[..., y0:y0 + w, :]
    if tuple(x.shape[-2:]) != (size, size):   # a same-size resize is the identity: skipped
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                            align_corners=False, antialias=True)
    return x.contiguous()


def released_frames(data: bytes | str | Path, start: float, window: float = WINDOW_S,
                    fps: int = FPS, num_frames: int = NUM_FRAMES, decode_from: float | None = None
                    ) -> tuple[native.NativeFrames, list[int]]:
    """(the decoded frames with ``decode_from <= pts <= start + window + 1 / (2 fps)``, the
    positions of the ``num_frames`` taken, ``released_frame_picks``) of the window at
    ``start`` of an mp4 (bytes or a path). ``decode_from`` defaults to ``start``
    (``sync_classifier.generated_eval.released_clip`` passes ``max(start, 0)``)."""
    step = 1.0 / fps
    t0 = start if decode_from is None else decode_from
    vf = native.decode_native_frames(data, t0, start + window + step / 2.0)
    picks = released_frame_picks(vf.pts, start, window, fps, num_frames)
    if not picks:
        raise DecodeError(f"no video frame at or after {start:.3f} s")
    return vf, picks


def released_wave(data: bytes | str | Path, start: float, window: float = WINDOW_S,
                  sample_rate: int = SAMPLE_RATE
                  ) -> tuple[torch.Tensor, native.AudioFrames, np.ndarray]:
    """(the ``[C, N]`` wave at ``sample_rate``, the decoded audio frames, the positions of
    those joined) of the window at ``start``: the whole AAC frames with pts in
    ``[start, start + window]``, joined, sinc resampled (``decoding.native.sinc_resample``)."""
    af = native.decode_audio_frames(data, start, start + window)
    wave, used = native.join_audio_frames(af, start, start + window)
    return native.sinc_resample(torch.from_numpy(wave), af.sample_rate, sample_rate), af, used


@dataclass
class ReleasedClip:
    """One window as the released generation dataset loads it."""
    video: torch.Tensor        # float32 [3, T, S, S] in [0, 1]
    mel: torch.Tensor          # float32 [1, 128, 204]
    start: float
    frame_index: list[int]     # decoded-frame index (display order, from 0) per output frame
    audio_frames: list[int]    # decode indices of the AAC frames joined


def decode_released(data: bytes, start: float, size: int = SIZE, flip: bool = False,
                    window: float = WINDOW_S, fps: int = FPS, num_frames: int = NUM_FRAMES,
                    sample_rate: int = SAMPLE_RATE) -> ReleasedClip:
    """The released dataset's video and mel of the window at ``start`` of an in-memory mp4."""
    vf, picks = released_frames(data, start, window, fps, num_frames)
    video = generation_pixels(vf.frames[picks], size)
    if flip:
        video = video.flip(-1)
    wave, af, used = released_wave(data, start, window, sample_rate)
    mel = released_mel(wave, sample_rate=sample_rate)
    return ReleasedClip(video=video.permute(1, 0, 2, 3).contiguous(), mel=mel, start=start,
                        frame_index=[int(vf.index[i]) for i in picks],
                        audio_frames=[int(af.index[i]) for i in used])



# ---------------------------------------------------------------- one window, either convention

def ours_window(data: bytes, rng: random.Random, d: Any
                ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(video ``[T, 3, S, S]``, mel ``[1, 128, 204]``, window start) of our exact decode (``ours``): the
    frame on screen at each time, exactly the window's samples. ``d``: the decoder's
    settings (``train``, ``random_flip``, ``normalize``, ``window``, ``fps``, ``size``,
    ``sample_rate``)."""
    # one open: the durations, then the window's frames and only the window's audio
    try:
        with av.open(io.BytesIO(data)) as c:
            v_dur, a_dur = _durations(c)
            if a_dur is None:
                raise DecodeError("clip has no audio stream")
            start = window_start(min(v_dur, a_dur), d.train, rng, d.window)
            grid = decode_open(c, start, start + d.window, d.fps, d.size, d.size,
                               d.sample_rate, mono=True)
    except av.error.FFmpegError as e:
        raise DecodeError(f"cannot decode the sample's mp4: {e}") from e
    if not grid.has_audio:
        raise DecodeError("clip has no decodable audio")
    frames, wave = grid.frames, grid.audio
    # a short clip: keep only real samples; imagebind_mel pads the fbank (ImageBind's way)
    n_real = int(round(max(a_dur - start, 0.0) * d.sample_rate))
    wave = wave[:max(min(n_real, wave.shape[0]), int(0.025 * d.sample_rate))]
    # channels first on the bytes, then one float pass (the same values as converting first)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    video = video.to(torch.float32).div_(255.0)
    if d.train and d.random_flip and rng.random() < 0.5:
        video = video.flip(-1)
    if d.normalize:
        video = video.mul_(2.0).sub_(1.0)
    return video, imagebind_mel(wave, sample_rate=d.sample_rate), start


def released_window(data: bytes, rng: random.Random, d: Any
                    ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(video ``[3, T, S, S]``, mel ``[1, 128, 204]``, window start) as the released generation
    dataset gives them; ``d`` as for ``ours_window``."""
    meta = native.released_metadata(data)
    if meta["audio_duration"] is None:
        raise DecodeError("clip has no audio stream")
    start = released_start(meta["av_duration"], d.train, rng, d.window)
    flip = d.train and d.random_flip and rng.random() < 0.5
    clip = decode_released(data, start, d.size, flip, d.window, d.fps,
                           int(round(d.window * d.fps)), d.sample_rate)
    video = clip.video.mul_(2.0).sub_(1.0) if d.normalize else clip.video
    return video, clip.mel, start
