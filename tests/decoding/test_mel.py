"""decoding.mel against two references that share no code with it:

* the real torchaudio (``data/torchaudio_reference.npz``, written by
  ``make_torchaudio_reference.py`` in a throwaway venv): the released audio chain
  (``functional.resample`` + ImageBind's ``waveform2melspec`` on ``compliance.kaldi.fbank``)
  on fixed signals, and torchaudio's float32 filter weights;
* ``tests/kaldi_reference.py``, a loop-by-loop numpy fbank written from the Kaldi definitions
  (with torchaudio's weights), itself checked against the fixture here.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from decoding.mel import EPSILON, fbank, imagebind_mel, mel_banks, mel_scale, released_mel
from decoding.native import sinc_resample
from tests import kaldi_reference as kref
from tests.decoding.make_torchaudio_reference import CASES, FBANK64, OUT, signal

torch.set_num_threads(1)


def _signal() -> np.ndarray:
    """2 s at 16 kHz: 440 Hz sine plus a linear chirp 100 Hz -> 6 kHz."""
    t = np.arange(32000) / 16000.0
    chirp = np.sin(2 * np.pi * (100.0 * t + 1475.0 * t * t))
    return (0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.3 * chirp).astype(np.float32)


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    return kref.kaldi_fbank(_signal().astype(np.float64))


@pytest.fixture(scope="module")
def torchaudio_ref() -> dict:
    if not OUT.is_file():
        pytest.fail(f"fixture missing: {OUT} (tests/decoding/make_torchaudio_reference.py)")
    with np.load(OUT) as z:
        return {k: z[k] for k in z.files}


def _rel_max(got: np.ndarray, want: np.ndarray) -> float:
    """Largest element difference relative to the largest reference magnitude."""
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_filter_weights_are_torchaudios(torchaudio_ref: dict) -> None:
    # float32 weights in torchaudio's order of operations: equal, not close. Evaluated in
    # float64 (as before) they were up to 1.4e-5 off, the 2e-5 relative mel difference.
    want = torchaudio_ref["mel_banks"]
    got = mel_banks(128, 512, 16000)
    assert got.shape == (128, 257) and float(got[:, 256].abs().max()) == 0.0
    assert np.array_equal(got[:, :256].numpy(), want)
    assert np.array_equal(mel_banks(128, 512, 16000, dtype=torch.float64)[:, :256].numpy(),
                          want.astype(np.float64))


@pytest.mark.parametrize("name", list(CASES))
def test_released_chain_matches_torchaudio(torchaudio_ref: dict, name: str) -> None:
    """sinc_resample + released_mel against the real torchaudio's chain run in float64: within
    1e-6 relative (measured 1.6e-7: our output is float32; the issue asked for 1e-5). A
    float32 mel is not compared at that bound: it carries the CPU's float32 FFT rounding
    (torchaudio's own float32 output differed by up to 2.7e-4 relative between two x86
    machines; on the machine that made the file ours was equal to it to 1e-6)."""
    sr, ch, n = CASES[name]
    x = torch.from_numpy(signal(sr, ch, n))
    w16 = sinc_resample(x, sr, 16000)
    assert w16.shape[1] == int(torchaudio_ref[f"{name}/resampled_len"])
    mid = torchaudio_ref[f"{name}/resampled_mid"]
    assert _rel_max(w16[:, 10000:12000].numpy(), mid) <= 1e-6
    want = torchaudio_ref[f"{name}/mel64"]
    got = released_mel(sinc_resample(x.double(), sr, 16000)).numpy()
    assert got.shape == want.shape == (1, 128, 204)
    assert _rel_max(got, want) <= 1e-6, np.abs(got - want).max()


@pytest.mark.parametrize("name", list(CASES))
def test_the_float32_chain_is_within_float32_rounding_of_torchaudio(torchaudio_ref: dict,
                                                                   name: str) -> None:
    """What the pipeline runs (float32) against torchaudio's float64 chain. The bounds are
    twice what torchaudio's own float32 chain showed against it on two x86 machines (up to
    2.9e-4 of the largest magnitude, in low-energy bins; 1.5e-5 in L2)."""
    sr, ch, n = CASES[name]
    got = released_mel(sinc_resample(torch.from_numpy(signal(sr, ch, n)), sr, 16000))
    want = torchaudio_ref[f"{name}/mel64"]
    assert got.dtype == torch.float32
    assert _rel_max(got.numpy(), want) <= 6e-4
    assert np.linalg.norm(got.numpy() - want) / np.linalg.norm(want) <= 3e-5


def test_float64_fbank_matches_torchaudio(torchaudio_ref: dict) -> None:
    sr, n = FBANK64
    x = torch.from_numpy(signal(sr, 1, n, seed=1)[0].astype(np.float64))
    got = fbank(x, sample_rate=sr)
    assert got.dtype == torch.float64
    assert _rel_max(got.numpy(), torchaudio_ref["fbank64"]) <= 1e-12


def test_numpy_reference_matches_torchaudio(torchaudio_ref: dict) -> None:
    """The numpy reference used by other tests, against the real torchaudio: equal up to
    float64 rounding for a float64 fbank; through the float32 chain (torchaudio's float32
    FFT and resampler against numpy's), 1e-5 relative in L2 (measured 2.1e-6 to 3e-6 here;
    single low-energy bins differ by up to 4e-4 absolute)."""
    sr, n = FBANK64
    x = signal(sr, 1, n, seed=1)[0].astype(np.float64)
    assert _rel_max(kref.kaldi_fbank(x), torchaudio_ref["fbank64"]) <= 1e-12
    for name, (sr, ch, n) in CASES.items():
        want = torchaudio_ref[f"{name}/mel"]
        got = kref.released_mel(kref.resample(signal(sr, ch, n).astype(np.float64), sr, 16000))
        assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-5, name


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
    expected = (np.pad(kref.kaldi_fbank((x - x.mean()).astype(np.float64)).T, ((0, 0), (0, 6))) + 4.268) / 9.138
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
