"""An independent reference for the released ASVA sync-classifier clips, written from
../shared/reference/asva_eval/README.md (items 1-5), not from our code: plain PyAV decoding,
torchvision's own transforms, and the audio chain of tests/kaldi_reference.py.
tests/sync_classifier/test_released_convention.py checks it against the released code's
outputs on the pinned reference videos, then compares ``sync_classifier.conventions`` and
the scoring of the released convention with it element by element.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from tests.kaldi_reference import released_mel, resample

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def ref_clip_starts(av_duration: float, n: int = 31, gap: float = 0.04, clip: float = 2.0) -> np.ndarray:
    """README item 1: first = (D - 2 - 30 * 0.04) / 2, clip k at k * 0.04 + first (float64)."""
    first = (av_duration - clip - (n - 1) * gap) / 2
    return np.asarray([k * gap + first for k in range(n)], np.float64)


def us_pts(pts: int, time_base) -> float:
    """A pts as torchvision's ``video_reader`` reports it: whole microseconds * 1e-6."""
    return int(round(pts * time_base.numerator * 1_000_000 / time_base.denominator)) * 1e-6


def decode_all(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray, int]:
    """(rgb24 frames [N, H, W, 3], their pts, planar float audio frames [C, n], their pts,
    sample rate): every frame of the file in decode order."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames, vpts = zip(*[(f.to_ndarray(format="rgb24"), us_pts(f.pts, v.time_base))
                             for f in c.decode(v)])
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        audio, apts = zip(*[(np.asarray(f.to_ndarray(), np.float32).reshape(a.channels, -1),
                             us_pts(f.pts, a.time_base)) for f in c.decode(a)])
        rate = a.rate
    return np.stack(frames), np.asarray(vpts), list(audio), np.asarray(apts), rate


def released_pixels(frames: np.ndarray, size: int) -> torch.Tensor:
    """README item 3 with torchvision's own transforms: /255, Resize(size, bicubic,
    antialias) on floats, CenterCrop(size), CLIP normalisation -> [N, 3, size, size]."""
    from filters.torch_compat import import_torchvision   # the CPU wheel's torchvision
    T = import_torchvision().transforms
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.
    x = T.Resize(size, interpolation=T.InterpolationMode.BICUBIC, antialias=True)(x)
    return T.Normalize(CLIP_MEAN, CLIP_STD)(T.CenterCrop(size)(x))


@dataclass
class RefClips:
    video: torch.Tensor              # [K, 3, 12, S, S]
    mel: np.ndarray                  # [len(mels), 1, 128, 204]
    frame_index: np.ndarray          # [K, 12]
    audio_frames: list               # per clip (first, last, count) AAC frame indices


def ref_released_clips(path: str | Path, starts, size: int = 224, mels=None) -> RefClips:
    """README items 1-5 for clips at ``starts``: time grid start + m/6 (m=0 +1e-4, m=12
    -1e-4); candidate frames from the first with pts >= clip 0's m=0 time to the last with
    pts <= the last clip's m=11 time, nearest by |t - pts| (first on a tie); audio = whole
    AAC frames with pts in [start + 1e-4, start + 2 - 1e-4], joined, resampled to 16 kHz,
    released mel (only for the clips ``mels`` lists, None: all; ``mel`` holds those)."""
    frames, vpts, audio, apts, rate = decode_all(path)
    starts = np.asarray(starts, np.float64)
    grid = starts[:, None] + np.arange(13)[None, :] / 6
    grid[:, 0] += 1e-4
    grid[:, -1] -= 1e-4
    cand = np.flatnonzero((vpts >= grid[0, 0]) & (vpts <= grid[-1, 11]))
    pick = cand[np.abs(grid[:, :12, None] - vpts[cand][None, None, :]).argmin(axis=-1)]
    px = released_pixels(frames[np.unique(pick)], size)
    pos = {f: i for i, f in enumerate(np.unique(pick))}
    video = torch.stack([px[[pos[f] for f in row]] for row in pick]).permute(0, 2, 1, 3, 4)
    used = []
    want = range(len(starts)) if mels is None else mels
    out = []
    for k, (s, e) in enumerate(zip(grid[:, 0], grid[:, -1])):
        sel = np.flatnonzero((apts >= s) & (apts <= e))
        used.append((int(sel[0]), int(sel[-1]), len(sel)))
        if k in want:
            wave = np.concatenate([audio[i] for i in sel], axis=1)
            out.append(released_mel(resample(wave, rate, 16000)))
    return RefClips(video.contiguous(), np.stack(out), pick, used)
