"""Raw pixel difference (seed 003, section 5.2): static or too-sharp motion.

Score: mean over the 9 consecutive pairs of the 10 sampled frames of mean |f_i - f_{i-1}|
with RGB scaled to [0, 1]. Keep when ``min <= s <= max`` (both ends inclusive).
"""
from __future__ import annotations

import numpy as np

from filters.spec import Bound, FilterSpec


def score(frames: np.ndarray) -> float:
    """``frames``: uint8 ``[T, H, W, 3]`` (T = 10 by the sampling convention, any T >= 2 works)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise ValueError(f"pixel_diff needs uint8 frames [T>=2, H, W, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"pixel_diff needs uint8 frames, got {frames.dtype}")
    # int16 differences are exact; the mean is taken in float64 so edge tests are exact too
    d = np.abs(np.diff(frames.astype(np.int16), axis=0))
    per_pair = d.reshape(d.shape[0], -1).mean(axis=1, dtype=np.float64) / 255.0
    return float(per_pair.mean())


def run(seg, alive: list[int]) -> dict[int, str]:
    """The 10 uniform frames of each window (``filters.sampling``)."""
    def one(k):
        seg.rows[k]["pixel_diff"] = score(seg.frames(seg.uniform10(k)))
    return seg.per_window(alive, one)


FILTER = FilterSpec(
    name="pixel_diff", columns=("pixel_diff",), run=run, cost=0.0,
    bounds=(Bound("pixel_diff", "min", "min", 0.01), Bound("pixel_diff", "max", "max", 0.15)))
