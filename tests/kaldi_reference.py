"""Independent numpy references for the audio chain, written from the definitions (no code
of ``decoding`` is used), for tests that need a "what the released code computes" value on
audio made at test time. They are themselves checked against the real torchaudio's numbers
in tests/decoding/test_mel.py (``tests/decoding/data/torchaudio_reference.npz``).

* ``kaldi_fbank``: Kaldi's ``compute-fbank-feats`` as torchaudio.compliance.kaldi.fbank does
  it with ImageBind's options (feature-window.cc / mel-computations.cc): snip-edges framing
  of 25 ms every 10 ms, per-frame DC removal, pre-emphasis 0.97 with the first sample against
  itself, symmetric Hann window, zero pad to 512, ``|FFT|^2``, triangular filters on
  mel = 1127 ln(1 + f/700) between 20 Hz and Nyquist, ``log(max(e, float32 eps))``, in the
  input's dtype as torchaudio does. 16 kHz and 128 bins only: the filter weights are the
  real torchaudio's (``mel_weights``), which evaluates them in float32.
* ``resample``: torchaudio.functional.resample's windowed sinc (Hann window, 6 zero
  crossings, rolloff 0.99) as a direct sum over input samples in float64.
* ``released_mel``: ASVA's ``waveform_to_melspectrogram`` on ImageBind's
  ``waveform2melspec``: centre crop to 32000 samples, subtract the mean of all channels,
  fbank of channel 0, zero pad / cut to 204 frames, ``(x + 4.268) / 9.138``.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np


FIXTURE = Path(__file__).resolve().parent / "decoding" / "data" / "torchaudio_reference.npz"


@functools.lru_cache(maxsize=1)
def mel_weights() -> np.ndarray:
    """``[128, 257]`` triangles for 16 kHz and a 512-point FFT (Nyquist column 0), as
    torchaudio's ``get_mel_banks`` evaluates them: in float32, whose rounding of the ~10^3
    mel values moves weights by up to ~2e-5. numpy's float32 log is not torch's, so the
    weights are the ones the real torchaudio wrote into the fixture."""
    with np.load(FIXTURE) as z:
        return np.pad(z["mel_banks"].astype(np.float64), ((0, 0), (0, 1)))


def kaldi_fbank(x: np.ndarray, sr: int = 16000) -> np.ndarray:
    """``[frames, nbins]`` log-mel energies of a mono waveform, computed in its dtype (float32
    or float64, as torchaudio computes in the input's dtype)."""
    dt = np.float64 if np.asarray(x).dtype == np.float64 else np.float32
    x = np.asarray(x, dt)
    size, shift, padded = int(sr * 0.025), int(sr * 0.010), 512
    m = 1 + (len(x) - size) // shift if len(x) >= size else 0
    hann = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / (size - 1)) for n in range(size)], dt)
    w = mel_weights().astype(dt)
    out = np.zeros((m, w.shape[0]), dt)
    for i in range(m):
        f = x[i * shift:i * shift + size].copy()
        f -= f.mean(dtype=dt)
        g = np.empty(size, dt)
        g[0] = f[0] - dt(0.97) * f[0]
        g[1:] = f[1:] - dt(0.97) * f[:-1]
        g *= hann
        spec = np.abs(np.fft.rfft(np.concatenate([g, np.zeros(padded - size, dt)]))) ** 2
        out[i] = np.log(np.maximum(w @ spec.astype(dt), dt(np.finfo(np.float32).eps)))
    return out


def resample(x: np.ndarray, orig: int, new: int, zeros: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """``[..., n]`` -> ``[..., ceil(new n / orig)]`` in float64: output m is at time m / new
    and sums the inputs i within ``zeros`` zero crossings, weighted
    ``sinc(t) hann(t) c / orig`` at ``t = c (i / orig - m / new)`` with cutoff
    ``c = min(orig, new) * rolloff`` (rates divided by their gcd). torchaudio evaluates t in
    float32 as ``(-p / new + j / orig) * c`` (p = m mod new, j = i - (m div new) orig), which
    moves t by ~1e-5 for 44.1 kHz (441 / 160 phases); ``t`` is evaluated the same way here,
    the sum in float64."""
    x = np.asarray(x, np.float64)
    if orig == new:
        return x
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    c = min(orig, new) * rolloff
    n = x.shape[-1]
    m = np.arange(math.ceil(new * n / orig))
    q, p = m // new, m % new
    reach = int(math.ceil(zeros * orig / c)) + 1
    # input offsets j from the output's frame start q * orig, around its time m * orig / new
    j = (m * orig // new - q * orig)[:, None] + np.arange(-reach, reach + 1)[None]
    f32 = np.float32
    t = ((-p.astype(f32) / f32(new))[:, None] + j.astype(f32) / f32(orig)) * f32(c)
    t = np.clip(t.astype(np.float64), -zeros, zeros)
    k = np.sinc(t) * np.cos(t * math.pi / zeros / 2) ** 2 * (c / orig)
    i = q[:, None] * orig + j
    k = np.where((i >= 0) & (i < n), k, 0.0)
    return np.einsum("...mk,mk->...m", x[..., np.clip(i, 0, n - 1)], k)


def released_mel(wave: np.ndarray, target: int = 32000, frames: int = 204) -> np.ndarray:
    """``[1, 128, frames]`` of a ``[C, n]`` 16-kHz waveform, as the released chain makes it."""
    w = np.atleast_2d(np.asarray(wave))
    w = w if w.dtype == np.float64 else w.astype(np.float32)
    n = w.shape[1]
    i0 = (n - target) // 2 if n > target else 0
    w = w[:, i0:i0 + target]
    w = w - w.mean(dtype=w.dtype)
    fb = kaldi_fbank(w[0]).T
    fb = np.pad(fb, ((0, 0), (0, max(frames - fb.shape[1], 0))))[:, :frames]
    return ((fb + 4.268) / 9.138)[None]
