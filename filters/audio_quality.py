"""Audio quality, no model (DESIGN section 13): what the waveform itself says about a window.

Scores, on the source's own sample rate and channels (``Grid.native_audio``: the same decode,
before the downmix and resampling to 16 kHz, which would hide all four):

- ``silence``: the fraction of 20-ms frames whose level (RMS over every channel) is below
  ``SILENCE_FLOOR_DBFS`` (0 dBFS: a full-scale square wave).
- ``bandwidth_hz``: the effective bandwidth, the frequency below which ``BANDWIDTH_ENERGY``
  (99%) of the window's spectral energy lies (Hann-windowed 2048-point frames, each frame's
  mean removed, power summed over frames and channels); 0 for a window with no energy. A
  16-kHz source upsampled into a 48-kHz container reads about 8 kHz. Lossy encoders low-pass
  too (AAC at YouTube's bitrates: roughly 15-20 kHz), and natural sound holds little energy
  up high, so this is a relative measure: compare windows, do not expect the Nyquist rate.
- ``clipping``: the fraction of samples (all channels) at or within 1 LSB (16-bit) of full
  scale, overshoots of a lossy decoder included (they are not clamped before this count).
- ``fake_stereo``: 1.0 when the file has two or more channels and they are the same sound:
  the energy of their differences from the first channel is at least ``FAKE_STEREO_DB``
  (40 dB) below the energy of their mean over the window (exact copies: no difference at
  all; a lossy encoder's M/S coding of copies leaves differences some 70 dB down), else 0.0.
  A mono file reads 0.0: it does not pretend.

``analyse`` frames a whole segment once; ``window_scores`` reads any window of it from
prefix sums, so the cost grows with the segment's seconds, not with its (overlapping)
windows. ``score`` is the same for one window's audio alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from filters.spec import Bound, FilterSpec

NAME = "audio_quality"

SILENCE_FLOOR_DBFS = -60.0
SILENCE_FRAME_SECONDS = 0.02
BANDWIDTH_ENERGY = 0.99
FFT_SIZE = 2048
FFT_HOP = 1024
#: one step of 16-bit audio, relative to full scale
LSB = 1.0 / 32768.0
FAKE_STEREO_DB = -40.0
#: the declared constants, part of the score fingerprint (a change rescores)
PARAMS = {"silence_floor_dbfs": SILENCE_FLOOR_DBFS, "silence_frame_s": SILENCE_FRAME_SECONDS,
          "bandwidth_energy": BANDWIDTH_ENERGY, "fft_size": FFT_SIZE, "fft_hop": FFT_HOP,
          "lsb": LSB, "fake_stereo_db": FAKE_STEREO_DB}


@dataclass
class Analysis:
    """A segment's audio framed once: what every window's scores are read from."""
    sample_rate: int
    n_samples: int
    n_channels: int
    silence_len: int              # samples per silence frame
    silent_cum: np.ndarray        # [F+1] prefix count of silent frames
    power: np.ndarray             # [G, FFT_SIZE // 2 + 1] power spectrum of each FFT frame
    clipped_cum: np.ndarray       # [N+1] prefix count of clipped samples over all channels
    side: np.ndarray              # [F] per silence frame: energy of the channel differences
    mid: np.ndarray               # [F] per silence frame: energy of the channels' mean


def _prefix(x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((1, *x.shape[1:]), x.dtype), np.cumsum(x, axis=0)])


def _frames(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    """``[C, N]`` -> ``[C, F, size]`` full frames starting every ``hop`` samples (a view)."""
    if x.shape[1] < size:
        return np.zeros((x.shape[0], 0, size), x.dtype)
    return np.lib.stride_tricks.sliding_window_view(x, size, axis=1)[:, ::hop]


def _power_spectra(x: np.ndarray) -> np.ndarray:
    """``[G, FFT_SIZE // 2 + 1]`` power per FFT frame, summed over channels."""
    fr = _frames(x, FFT_SIZE, FFT_HOP).astype(np.float64)
    fr = fr - fr.mean(axis=-1, keepdims=True)        # DC is no bandwidth
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FFT_SIZE) / FFT_SIZE)
    return (np.abs(np.fft.rfft(fr * hann, axis=-1)) ** 2).sum(axis=0)


def analyse(audio: np.ndarray, sample_rate: int) -> Analysis:
    """Frame ``audio`` (float ``[C, N]`` or ``[N]`` in [-1, 1], overshoots allowed)."""
    x = np.asarray(audio)
    x = x[None] if x.ndim == 1 else x
    if x.ndim != 2 or x.size == 0 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"audio_quality needs a non-empty float waveform [N] or [C, N], got "
                         f"{x.dtype} {x.shape}")
    if sample_rate <= 0:
        raise ValueError(f"audio_quality needs a positive sample rate, got {sample_rate}")
    n = x.shape[1]
    size = max(int(round(SILENCE_FRAME_SECONDS * sample_rate)), 1)
    fr = _frames(x, size, size).astype(np.float64)                  # [C, F, size]
    ms = (fr ** 2).mean(axis=(0, 2))
    silent = 10 * np.log10(np.maximum(ms, 1e-30)) < SILENCE_FLOOR_DBFS
    clipped = (np.abs(x) >= 1.0 - LSB).sum(axis=0)
    side = ((fr - fr[:1]) ** 2).sum(axis=(0, 2))
    mid = (fr.mean(axis=0) ** 2).sum(axis=-1)
    return Analysis(sample_rate, n, x.shape[0], size, _prefix(silent.astype(np.int64)),
                    _power_spectra(x), _prefix(clipped.astype(np.int64)), side, mid)


def _frame_range(i0: int, i1: int, size: int, hop: int, count: int) -> tuple[int, int]:
    """Frames (of ``size`` samples every ``hop``) lying wholly inside samples [i0, i1)."""
    a = -(-i0 // hop)
    b = (i1 - size) // hop + 1
    return min(max(a, 0), count), min(max(b, 0), count)


def _bandwidth(power: np.ndarray, sample_rate: int) -> float:
    total = power.sum()
    if total <= 0:
        return 0.0
    k = int(np.searchsorted(np.cumsum(power), BANDWIDTH_ENERGY * total))
    return float(min(k, len(power) - 1) * sample_rate / FFT_SIZE)


def window_scores(a: Analysis, start: float, end: float) -> dict[str, float]:
    """The four scores of the window [start, end) (seconds from the analysed audio's start;
    clamped into it)."""
    sr = a.sample_rate
    i0 = min(max(int(round(start * sr)), 0), a.n_samples)
    i1 = min(max(int(round(end * sr)), i0), a.n_samples)
    f0, f1 = _frame_range(i0, i1, a.silence_len, a.silence_len, len(a.silent_cum) - 1)
    g0, g1 = _frame_range(i0, i1, FFT_SIZE, FFT_HOP, len(a.power))
    if f1 <= f0 or i1 <= i0:
        raise ValueError(f"window [{start:g}, {end:g}) holds no audio frame "
                         f"({a.n_samples} samples at {sr} Hz)")
    if g1 <= g0:   # shorter than one FFT frame: the one frame the audio has, if any
        g0, g1 = 0, min(1, len(a.power))
    # summed per window, not from prefix sums: a loud segment's running sum would swamp a
    # quiet window's high bins in rounding
    power = a.power[g0:g1].sum(axis=0)
    n = i1 - i0
    return {
        "silence": float((a.silent_cum[f1] - a.silent_cum[f0]) / (f1 - f0)),
        "bandwidth_hz": _bandwidth(power, sr) if g1 > g0 else 0.0,
        "clipping": float((a.clipped_cum[i1] - a.clipped_cum[i0]) / (n * a.n_channels)),
        "fake_stereo": float(a.n_channels >= 2 and a.side[f0:f1].sum()
                             <= a.mid[f0:f1].sum() * 10 ** (FAKE_STEREO_DB / 10)),
    }


def score(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """The four scores of one window's whole audio (``[C, N]`` or ``[N]``)."""
    a = analyse(audio, sample_rate)
    return window_scores(a, 0.0, a.n_samples / sample_rate)


def run(seg, alive: list[int]) -> dict[int, str]:
    """The windows ``alive`` of one segment, read from one analysis of its native audio
    (``Grid.native``: the source's rate and channels; cached on the segment)."""
    cache = seg.cache(NAME)
    if "analysis" not in cache:
        cache["analysis"] = analyse(*seg.grid.native())
    a, t0 = cache["analysis"], seg.grid.start

    def one(k):
        s, e = seg.bounds(k)
        seg.rows[k].update(window_scores(a, s - t0, e - t0))
    return seg.per_window(alive, one)


FILTER = FilterSpec(
    name=NAME, columns=("silence", "bandwidth_hz", "clipping", "fake_stereo"),
    # the Foley-style defaults (HunyuanVideo-Foley drops clips more than 80% silent); only a
    # recipe that gates on this filter applies them. bandwidth_min and fake_stereo_max have
    # no default: ``--set audio_quality.bandwidth_min=8000``
    bounds=(Bound("silence", "silence_max", "max", 0.8),
            Bound("bandwidth_hz", "bandwidth_min", "min"),
            Bound("clipping", "clipping_max", "max", 0.01),
            Bound("fake_stereo", "fake_stereo_max", "max")),
    run=run, cost=0.0, needs_audio=True, gates=False, params=PARAMS, clip_max=True,
    doc="silence fraction, effective bandwidth, clipping fraction, identical channels")
