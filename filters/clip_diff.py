"""Image semantics difference (seed 003, section 5.2): shot changes PySceneDetect missed.

Score: CLIP image features of the 10 sampled frames, L2-normalised (raw ViT features have
norms near 10, which the 0.17..0.55 band could not fit: DESIGN section 3), then the max over
the 9 consecutive L2 distances. Keep when ``min <= s <= max`` (inclusive).
The model lives in ``filters.clip_model``; this module is the math only.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from filters.bands import keep_band

NAME = "clip_diff"
THRESHOLDS = {"min": 0.17, "max": 0.55}


def score(features: np.ndarray) -> float:
    """``features``: ``[T, D]`` image features (T = 10 by the sampling convention)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"clip_diff needs features [T>=2, D], got shape {f.shape}")
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    if not np.all(np.isfinite(f)) or np.any(norms == 0):
        raise ValueError("clip_diff: a feature vector is zero or not finite")
    f = f / norms
    return float(np.linalg.norm(np.diff(f, axis=0), axis=1).max())


def keep(s: float | None, thresholds: Mapping[str, float] = THRESHOLDS) -> tuple[bool, str | None]:
    return keep_band(NAME, s, thresholds)
