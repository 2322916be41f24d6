"""decoding.mel against an independent, loop-by-loop numpy implementation of Kaldi fbank.

The reference below is written from the Kaldi documentation (feature-window.cc /
mel-computations.cc): snip-edges framing, per-frame DC removal, pre-emphasis 0.97 with the
first sample against itself, symmetric Hann window, zero pad to 512, |FFT|^2, triangular
filters on mel = 1127 ln(1 + f/700) between 20 Hz and Nyquist, log with float eps floor.
Its outputs on the fixed signal are also pinned as literals, so a change in either
implementation is caught.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from decoding.mel import EPSILON, fbank, imagebind_mel, mel_scale

torch.set_num_threads(1)


def _signal() -> np.ndarray:
    """2 s at 16 kHz: 440 Hz sine plus a linear chirp 100 Hz -> 6 kHz."""
    t = np.arange(32000) / 16000.0
    chirp = np.sin(2 * np.pi * (100.0 * t + 1475.0 * t * t))
    return (0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.3 * chirp).astype(np.float32)


def _ref_fbank(x: np.ndarray, sr: int = 16000, nbins: int = 128) -> np.ndarray:
    x = np.asarray(x, np.float64)
    size, shift, padded = 400, 160, 512
    m = 1 + (len(x) - size) // shift
    hann = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / (size - 1)) for n in range(size)])

    def mel(f: float) -> float:
        return 1127.0 * math.log(1.0 + f / 700.0)

    lo, hi = mel(20.0), mel(sr / 2)
    d = (hi - lo) / (nbins + 1)
    w = np.zeros((nbins, padded // 2 + 1))
    for b in range(nbins):
        left, center, right = lo + b * d, lo + (b + 1) * d, lo + (b + 2) * d
        for k in range(padded // 2):
            mk = mel(k * sr / padded)
            if left < mk < right:
                w[b, k] = (mk - left) / (center - left) if mk <= center else (right - mk) / (right - center)
    out = np.zeros((m, nbins))
    for i in range(m):
        f = x[i * shift:i * shift + size].copy()
        f -= f.mean()
        g = np.empty(size)
        g[0] = f[0] - 0.97 * f[0]
        g[1:] = f[1:] - 0.97 * f[:-1]
        g *= hann
        spec = np.abs(np.fft.rfft(np.concatenate([g, np.zeros(padded - size)]))) ** 2
        out[i] = np.log(np.maximum(w @ spec, np.finfo(np.float32).eps))
    return out


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    return _ref_fbank(_signal())


def test_reference_pinned_values(ref: np.ndarray) -> None:
    assert ref.shape == (198, 128)
    np.testing.assert_allclose(ref[0, :5], [-5.747616, -7.082428, -3.639046, -15.942385, -0.567606],
                               atol=1e-5)
    assert ref[50, 60] == pytest.approx(5.454283, abs=1e-5)
    assert ref[120, 100] == pytest.approx(-11.342076, abs=1e-5)
    assert ref.mean() == pytest.approx(-11.701418, abs=1e-5)
    assert ref[:, 10].mean() == pytest.approx(-9.314364, abs=1e-5)


def test_fbank_matches_reference(ref: np.ndarray) -> None:
    x = _signal()
    out64 = fbank(torch.from_numpy(x.astype(np.float64))).numpy()
    np.testing.assert_allclose(out64, ref, atol=1e-8)
    out32 = fbank(x)
    assert out32.dtype == torch.float32 and out32.shape == (198, 128)
    # float32 rounding only matters for energies near the eps floor
    big = ref > -10
    assert np.abs(out32.numpy() - ref)[big].max() < 1e-3
    assert np.abs(out32.numpy() - ref).max() < 2e-2


def test_frame_count_and_silence() -> None:
    for n, frames in [(32000, 198), (400, 1), (559, 1), (560, 2), (16000, 98)]:
        assert fbank(np.zeros(n, np.float32)).shape == (frames, 128)
    assert fbank(np.zeros(399, np.float32)).shape == (0, 128)
    silent = fbank(np.full(32000, 0.25, np.float32))  # DC only: removed per frame
    np.testing.assert_allclose(silent.numpy(), math.log(EPSILON), rtol=0, atol=1e-6)


def test_tone_peaks_at_its_mel_bin() -> None:
    t = np.arange(16000) / 16000.0
    fb = fbank((0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32))
    lo, hi = mel_scale(20.0), mel_scale(8000.0)
    centers = lo + (np.arange(128) + 1) * (hi - lo) / 129
    expected = int(np.argmin(np.abs(centers - mel_scale(1000.0))))
    assert abs(int(fb.mean(0).argmax()) - expected) <= 1


def test_imagebind_mel(ref: np.ndarray) -> None:
    x = _signal()
    mb = imagebind_mel(x)
    assert mb.shape == (1, 128, 204) and mb.dtype == torch.float32
    expected = (np.pad(_ref_fbank(x - x.mean()).T, ((0, 0), (0, 6))) + 4.268) / 9.138
    assert np.abs(mb[0].numpy() - expected).max() < 5e-3
    assert float(expected.mean()) == pytest.approx(-0.775800, abs=1e-5)
    # padded columns are zeros before normalisation
    np.testing.assert_allclose(mb[0, :, 198:].numpy(), 4.268 / 9.138, atol=1e-6)
    # torch input and a [1, N] shape give the same; longer audio is cut to 204 frames
    assert torch.allclose(imagebind_mel(torch.from_numpy(x)[None]), mb)
    assert imagebind_mel(np.tile(x, 2)).shape == (1, 128, 204)


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        imagebind_mel(np.zeros((2, 32000), np.float32))
    with pytest.raises(ValueError):
        imagebind_mel(np.zeros(100, np.float32))
    with pytest.raises(ValueError):
        fbank(np.zeros(32000, np.int16))
