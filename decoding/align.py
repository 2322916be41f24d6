"""How far one audio track sits from another: the check of a repaired clip's audio.

A repaired clip (``curate.ops.cut``, ``audio_shift``) carries the source's audio moved by the
recorded shift. ``shifted_audio_lag`` decodes the clip's audio and the source's audio at the
recorded shift on the same sample rate and finds the lag (whole samples) at which they match
best by normalised cross-correlation: 0 (within one sample) when the shift is what the
record says. A re-encode (AAC) changes the samples slightly, never their times.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from decoding.media import decode_clip, probe

#: lags searched on each side (s): a wrong record by less than this shows as a lag, a
#: larger one as no match at all (a low correlation)
MAX_LAG_S = 0.25
#: the normalised correlation a match needs (AAC re-encoding keeps it above 0.99 on the
#: generated media; a wrong stretch of a click track stays far below)
MIN_CORRELATION = 0.9


def audio_lag(clip: np.ndarray, ref: np.ndarray, max_lag: int) -> tuple[int, float]:
    """(lag, normalised correlation) for which ``clip[i]`` best matches ``ref[i + lag]``,
    ``|lag| <= max_lag``. Both mono; the middle of ``clip`` (``max_lag`` from each edge) is
    compared, so every lag reads the same stretch."""
    n = min(len(clip), len(ref)) - 2 * max_lag
    if n <= 0:
        raise ValueError(f"audio of {min(len(clip), len(ref))} samples is too short to search "
                         f"lags of +-{max_lag}")
    x = clip[max_lag:max_lag + n].astype(np.float64)
    r = ref[:n + 2 * max_lag].astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(r) + n)))
    # corr[k] = sum_i x[i] r[i + k], k = 0 .. 2 max_lag
    corr = np.fft.irfft(np.fft.rfft(r, size) * np.conj(np.fft.rfft(x, size)), size)[:2 * max_lag + 1]
    energy = np.concatenate([[0.0], np.cumsum(r * r)])
    norms = np.sqrt(energy[n:n + 2 * max_lag + 1] - energy[:2 * max_lag + 1]) * np.sqrt(np.sum(x * x))
    score = np.where(norms > 0, corr / np.maximum(norms, 1e-30), 0.0)
    k = int(np.argmax(score))
    return k - max_lag, float(score[k])


def _mono(src: str | Path | bytes, start: float, end: float, rate: int, offset: float = 0.0) -> np.ndarray:
    g = decode_clip(src, start, end, short_side=32, crop=None, sample_rate=rate, offset=offset)
    return g.audio


def shifted_audio_lag(clip: str | Path | bytes, src: str | Path, start: float, end: float,
                      shift_s: float, offset: float = 0.0) -> tuple[int, float, int]:
    """(lag in samples, correlation, sample rate): the clip's audio against ``src``'s audio
    of ``[start + shift_s, end + shift_s)`` (seconds relative to ``offset`` on ``src``'s
    clock; ``start``/``end`` the frame instants cut), both at ``src``'s own rate."""
    rate = int(probe(src).get("sample_rate") or 16000)
    a = _mono(clip, 0.0, end - start, rate)
    b = _mono(src, start + shift_s, end + shift_s, rate, offset)
    return (*audio_lag(a, b, int(MAX_LAG_S * rate)), rate)
