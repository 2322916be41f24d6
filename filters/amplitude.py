"""Audio waveform amplitude (seed 003, section 5.2): imperceptible audio.

Score: max |sample| of the whole window's waveform, float in [-1, 1], over every channel
(a mono mix could cancel out-of-phase channels). Keep when ``s >= min``.
"""
from __future__ import annotations

import numpy as np

from filters.spec import Bound, FilterSpec


def score(audio: np.ndarray) -> float:
    """``audio``: float ``[C, N]`` or ``[N]``."""
    audio = np.asarray(audio)
    if audio.ndim not in (1, 2) or audio.size == 0:
        raise ValueError(f"amplitude needs a non-empty waveform [N] or [C, N], got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"amplitude needs a float waveform in [-1, 1], got {audio.dtype}")
    return float(np.max(np.abs(audio)))


def run(seg, alive: list[int]) -> dict[int, str]:
    """The whole window's audio, every channel."""
    def one(k):
        seg.rows[k]["amplitude"] = score(seg.grid.audio_slice(*seg.bounds(k), channels=True))
    return seg.per_window(alive, one)


FILTER = FilterSpec(name="amplitude", columns=("amplitude",), run=run, cost=0.0, needs_audio=True,
                    bounds=(Bound("amplitude", "min", "min", 0.03),))
