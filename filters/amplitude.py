"""Audio waveform amplitude (seed 003, section 5.2): imperceptible audio.

Score: max |sample| of the whole window's waveform, float in [-1, 1], over every channel
(a mono mix could cancel out-of-phase channels). Keep when ``s >= min``.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from filters.bands import keep_band

NAME = "amplitude"
THRESHOLDS = {"min": 0.03}


def score(audio: np.ndarray) -> float:
    """``audio``: float ``[C, N]`` or ``[N]``."""
    audio = np.asarray(audio)
    if audio.ndim not in (1, 2) or audio.size == 0:
        raise ValueError(f"amplitude needs a non-empty waveform [N] or [C, N], got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"amplitude needs a float waveform in [-1, 1], got {audio.dtype}")
    return float(np.max(np.abs(audio)))


def keep(s: float | None, thresholds: Mapping[str, float] = THRESHOLDS) -> tuple[bool, str | None]:
    return keep_band(NAME, s, thresholds)
