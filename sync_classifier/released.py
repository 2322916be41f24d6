"""The released code's preprocessing, as functions (lzhangbj/ASVA ``avsync/data.py``,
``scripts/avsync_eval.py``; facts in ``../shared/reference/asva_eval``).

What ``sync_classifier.conventions.Released`` is made of, and what the datasets
(``sync_classifier.data.ReleasedClipDataset``) call per item:

* clip placement: D = the shorter stream's duration; clips of 2 s, ``center-compact``
  (evaluation) or ``random-compact`` (training) starts over [0, D - 2]; each clip's time
  grid is start + m/6, m = 0..12, with m=0 moved by +1e-4 and m=12 by -1e-4; videos under
  12 fps are skipped;
* frames: the native frame nearest to each time (``argmin |t - pts|``, the earlier on a
  tie), candidates from the first frame with pts >= clip 0's first time to the last one
  with pts <= the last clip's frame 11;
* pixels: RGB24 / 255 as floats, torchvision ``Resize(short side, bicubic, antialias)``
  (long side truncated), centre crop, CLIP mean/std; no clamp, no re-quantising;
* audio: the whole AAC frames whose pts lie in the clip's [m=0, m=12] times, all channels
  joined, torchaudio sinc resampling to 16 kHz, centre crop to 32000 samples, mel of the
  left channel (``decoding.mel.released_mel``);
* evaluation: one anchor per video (``released_accuracy``); training: each clip flipped
  independently.

Imports ``decoding`` and torch only, so the datasets and the convention objects both may
import it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from decoding import native
from decoding.media import DecodeError
from decoding.mel import released_mel

MIN_FPS = 12.0          # the released dataset asserts video fps >= 12
# clip placements of a released instance: the compact run of clips `gap` apart (centred at
# evaluation, random in training), or spread evenly over the span (the released test set)
COMPACT, UNIFORM = "compact", "uniform"
PLACEMENTS = (COMPACT, UNIFORM)
EDGE = 1e-4             # the released "avoid endpoint rounding error" shift
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ---------------------------------------------------------------- accuracy

def released_accuracy(phi: torch.Tensor, tolerance: int = 5) -> dict:
    """The released A2V / V2A of one ``[K, K]`` phi (rows audio, columns video).

    A2V: the centre audio against every video clip, prediction ``argmax_j phi[c, j]``;
    V2A: every audio clip against the centre video, ``argmax_i phi[i, c]``; a hit is
    ``|pred - c| <= tolerance`` (``torch.argmax``: the first maximum on a tie)."""
    phi = torch.as_tensor(phi)
    c = phi.shape[0] // 2
    a2v = int(phi[c, :].argmax().item())
    v2a = int(phi[:, c].argmax().item())
    return {"a2v_pred": a2v, "v2a_pred": v2a,
            "a2v_hit": abs(a2v - c) <= tolerance, "v2a_hit": abs(v2a - c) <= tolerance}


# ---------------------------------------------------------------- clip placement

def clip_starts(range_start: float, range_end: float, num_clips: int, shift: float,
                rng: random.Random | None = None) -> np.ndarray:
    """Clip starts in [range_start, range_end] with gap ``shift``: centred (``rng`` None, the
    released ``center_compact_sample``) or from a uniform first start (``random_compact_sample``).
    Float64 expressions as released, so frame picks tie the same way."""
    span = (num_clips - 1) * shift
    if span > range_end - range_start:
        raise ValueError(f"range [{range_start:.3f}, {range_end:.3f}] s too short for "
                         f"{num_clips} clips {shift} s apart")
    if rng is None:
        first = range_start + (range_end - range_start - span) / 2.
    else:
        first = rng.uniform(range_start, range_end - span)
    return np.arange(num_clips) * shift + first


def uniform_starts(range_start: float, range_end: float, num_clips: int) -> np.ndarray:
    """``num_clips`` starts spread evenly over [range_start, range_end], both ends included:
    the released ``uniform_sample(..., endpoint=True)`` of ``sampling_type="uniform"``, which
    the authors' sync training config validates with (21 clips)."""
    return np.linspace(range_start, range_end, num_clips, endpoint=True)


def clip_time_grid(starts: np.ndarray, num_frames: int = 12, fps: int = 6) -> np.ndarray:
    """``[K, num_frames + 1]`` times start + m/fps; m=0 +1e-4 and the last -1e-4 (as released)."""
    t = np.asarray(starts, np.float64)[:, None] + (np.arange(num_frames + 1) / fps)[None, :]
    t[:, 0] += EDGE
    t[:, -1] -= EDGE
    return t


def offsets_spacing(offsets: Sequence[float]) -> tuple[int, float]:
    """(number of clips, gap) of evenly spaced offsets."""
    offs = sorted(offsets)
    if len(offs) < 2:
        return len(offs), 0.0
    gap = round(offs[1] - offs[0], 6)
    if any(abs((b - a) - gap) > 1e-6 for a, b in zip(offs, offs[1:])):
        raise ValueError(f"the released convention needs evenly spaced offsets, got {offsets}")
    return len(offs), gap


# ---------------------------------------------------------------- pixels and clips

def released_pixels(frames: np.ndarray, size: int, chunk: int = 16) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> float ``[N, 3, size, size]``: /255, torchvision's
    ``Resize(size, BICUBIC, antialias=True)`` (short side ``size``, long side truncated) on
    floats without clamping, ``CenterCrop(size)``, CLIP mean/std. Per frame, ``chunk`` at a time."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(frames), chunk):
        x = torch.from_numpy(np.ascontiguousarray(frames[i:i + chunk])).permute(0, 3, 1, 2).float() / 255.
        out.append((_resize_short(x, size) - mean) / std)
    return torch.cat(out)


def _resize_short(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if min(h, w) != size:
        nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bicubic",
                                            align_corners=False, antialias=True)
    return center_crop(x, size, size)


def center_crop(x: torch.Tensor, ch: int, cw: int) -> torch.Tensor:
    """torchvision ``CenterCrop`` on ``[..., H, W]`` (no padding needed here)."""
    h, w = x.shape[-2:]
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return x[..., top:top + ch, left:left + cw]


@dataclass
class ReleasedClips:
    """What ``released_clips`` made: model inputs and how they were chosen (for tests and logs)."""

    mel: torch.Tensor                 # [K, 1, 128, 204]
    video: torch.Tensor               # [K, 3, T, S, S]
    starts: np.ndarray                # [K] clip starts (s)
    frame_index: np.ndarray           # [K, T] file frame index of every chosen frame
    frame_pts: np.ndarray             # [K, T]
    first_candidate: int              # file index of the first candidate frame
    n_candidates: int
    audio_frames: list                # per clip (first index, last index, n frames)
    audio_samples: list               # per clip (native samples, 16 kHz samples before crop)


def released_clips(path: str | Path, starts: np.ndarray, frame_size: int = 224,
                   num_frames: int = 12, fps: int = 6, sample_rate: int = 16000,
                   flips: Sequence[bool] | None = None) -> ReleasedClips:
    """The released ``load_multi_video_clips`` + ``load_multi_audio_clips`` for clips at
    ``starts`` of the file at ``path``. ``flips``: per clip horizontal flip (training)."""
    times = clip_time_grid(starts, num_frames, fps)
    vt = times[:, :-1]
    nf = native.decode_native_frames(path, vt[0, 0], vt[-1, -1])
    pick = native.nearest_frame(nf.pts, vt)                       # [K, T] positions
    used, inverse = np.unique(pick, return_inverse=True)
    pixels = released_pixels(nf.frames[used], frame_size)         # [U, 3, S, S]
    video = pixels[torch.from_numpy(inverse.reshape(-1))]
    video = video.view(len(starts), num_frames, 3, frame_size, frame_size).permute(0, 2, 1, 3, 4)
    if flips is not None:
        video = torch.stack([v.flip(-1) if f else v for v, f in zip(video, flips)])
    video = video.contiguous()

    af = native.decode_audio_frames(path, times[0, 0], times[-1, -1])
    mels, aframes, asamples = [], [], []
    for k in range(len(starts)):
        wave, sel = native.join_audio_frames(af, times[k, 0], times[k, -1])
        w16 = native.sinc_resample(torch.from_numpy(wave), af.sample_rate, sample_rate)
        mels.append(released_mel(w16, sample_rate, target_samples=int(round(2.0 * sample_rate))))
        aframes.append((int(af.index[sel[0]]), int(af.index[sel[-1]]), len(sel)))
        asamples.append((int(wave.shape[1]), int(w16.shape[1])))
    return ReleasedClips(torch.stack(mels), video, np.asarray(starts), nf.index[pick],
                         nf.pts[pick], int(nf.index[0]), len(nf.pts), aframes, asamples)


def usable_span(path: str | Path, start: float = 0.0, end: float | None = None,
                need: float = 0.0) -> tuple[float, float]:
    """[start, end] clipped to the shorter stream as the released code reads it; raises
    ValueError (skip reason) for a video under 12 fps, without audio, or shorter than ``need``."""
    meta = native.released_metadata(path)
    if meta["audio_duration"] is None:
        raise ValueError("no audio stream")
    if meta["video_fps"] < MIN_FPS:
        raise ValueError(f"video at {meta['video_fps']:.3g} fps < {MIN_FPS:g} (the released "
                         "convention skips it)")
    stop = meta["av_duration"] if end is None else min(end, meta["av_duration"])
    if stop - start < need - 1e-9:
        raise ValueError(f"too short: {stop - start:.2f}s < {need:.2f}s needed")
    return start, stop


def released_instance(path: str | Path, offsets: Sequence[float], frame_size: int,
                      rng: random.Random | None, start: float = 0.0, end: float | None = None,
                      clip_len: float = 2.0, fps: int = 6, placement: str = COMPACT
                      ) -> ReleasedClips:
    """One instance: clips at released placements over the usable span (``rng`` None =
    centred, evaluation; else random-compact starts and one flip per clip, training).
    ``placement`` ``uniform``: the clips spread evenly over the span instead (the released
    test set of sync training); the span must still hold the compact one, as released."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown clip placement {placement!r}: choose {' or '.join(PLACEMENTS)}")
    num, gap = offsets_spacing(offsets)
    s, e = usable_span(path, start, end, clip_len + (num - 1) * gap)
    if placement == UNIFORM:
        starts = uniform_starts(s, e - clip_len, num)
    else:
        starts = clip_starts(s, e - clip_len, num, gap, rng)
    flips = None if rng is None else [bool(rng.randint(0, 1)) for _ in range(num)]
    try:
        return released_clips(path, starts, frame_size, int(round(clip_len * fps)), fps, flips=flips)
    except DecodeError as e:
        raise ValueError(str(e)) from e
