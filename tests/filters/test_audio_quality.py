"""Signal scores (issue 26): silence, effective bandwidth, clipping and identical channels,
read from the native-rate audio of the one segment decode (``Grid.native_audio``)."""
from __future__ import annotations

import numpy as np
import pytest

from decoding.media import decode_grid
from filters import audio_quality as aq
from tests.avmedia import mux_audio

SR = 48000


def _noise(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, int(sr * seconds))


def _scores(path, start: float = 0.5, end: float = 3.5) -> dict:
    g = decode_grid(path)
    return aq.window_scores(aq.analyse(*g.native()), start, end)


@pytest.mark.parametrize("codec", ["pcm", "aac"])
def test_upsampled_16k_source_reads_below_8k5_and_48k_noise_above_20k(tmp_path, codec):
    up = mux_audio(tmp_path / f"up.{codec}.mov", _noise(16000, 4.0), 16000, codec, out_sr=SR)
    full = mux_audio(tmp_path / f"full.{codec}.mov", _noise(SR, 4.0, 1), SR, codec)
    g = decode_grid(up)
    assert g.native_rate == SR and g.native_audio.shape == (1, 4 * SR)
    assert _scores(up)["bandwidth_hz"] < 8500
    # lossless: 99% of white noise's energy lies below 0.99 * 24 kHz; AAC at 192 kb/s keeps
    # nearly all of it too (measured 23.8 kHz)
    assert _scores(full)["bandwidth_hz"] > 20000


def test_clipped_sine_reads_its_clipped_fraction(tmp_path):
    t = np.arange(4 * SR) / SR
    sine = 1.3 * np.sin(2 * np.pi * 220 * t)
    truth = float(np.mean(np.abs(sine[SR // 2: 7 * SR // 2]) >= 1.0))   # the window [0.5, 3.5)
    path = mux_audio(tmp_path / "clip.mov", np.clip(sine, -1, 1), SR, "pcm")
    got = _scores(path)["clipping"]
    assert truth > 0.3 and abs(got - truth) < 0.01, (got, truth)
    quiet = mux_audio(tmp_path / "quiet.mov", 0.5 * np.sin(2 * np.pi * 220 * t), SR, "pcm")
    assert _scores(quiet)["clipping"] == 0.0


def test_identical_channels_are_flagged_and_different_or_mono_ones_not(tmp_path):
    x = _noise(SR, 4.0)
    t = np.arange(4 * SR) / SR
    chord = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1250 * t)
    same = mux_audio(tmp_path / "same.mov", np.stack([x, x], 1), SR, "pcm")
    # AAC codes copies as mid/side: what comes back differs some 70 dB down, still "same"
    same_aac = mux_audio(tmp_path / "same.mp4", np.stack([chord, chord], 1), SR, "aac")
    other = mux_audio(tmp_path / "other.mp4", np.stack([chord, 0.5 * chord + 0.5 * x], 1), SR, "aac")
    mono = mux_audio(tmp_path / "mono.mov", x, SR, "pcm")
    assert decode_grid(same_aac).native_audio.shape[0] == 2
    assert _scores(same)["fake_stereo"] == 1.0
    assert _scores(same_aac)["fake_stereo"] == 1.0
    assert _scores(other)["fake_stereo"] == 0.0
    assert _scores(mono)["fake_stereo"] == 0.0


def test_silent_window_reads_silence_one_and_no_bandwidth(tmp_path):
    a = np.concatenate([np.zeros(4 * SR), _noise(SR, 2.0)])
    path = mux_audio(tmp_path / "half.mov", a, SR, "pcm")
    s = _scores(path, 0.5, 3.5)
    assert s["silence"] == 1.0 and s["bandwidth_hz"] == 0.0 and s["clipping"] == 0.0
    loud = _scores(path, 3.0, 6.0)
    # [3, 4) silent, [4, 6) noise: a third of the 20-ms frames
    assert abs(loud["silence"] - 1 / 3) < 0.01


def test_segment_analysis_gives_a_window_the_scores_of_its_own_audio():
    """Windows read from one framing of the segment (cost per second, not per window) score
    as the window's audio alone, for a window on the frame grid (0.64 s: 30 FFT hops, 32
    silence frames at 48 kHz)."""
    rng = np.random.default_rng(3)
    x = np.concatenate([np.zeros((2, SR)), rng.normal(0, 0.2, (2, 3 * SR))], 1).astype(np.float32)
    x[:, SR + 100: SR + 400] = 1.0
    seg = aq.analyse(x, SR)
    s0, s1 = 0.64, 3.64
    alone = aq.score(x[:, int(s0 * SR): int(s1 * SR)], SR)
    got = aq.window_scores(seg, s0, s1)
    assert got.keys() == alone.keys()
    for k in got:
        assert got[k] == pytest.approx(alone[k], rel=1e-9, abs=1e-12), k
    assert 0 < got["silence"] < 1 and got["clipping"] > 0


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="float waveform"):
        aq.analyse(np.zeros((2, 10), np.int16), SR)
    with pytest.raises(ValueError, match="holds no audio frame"):
        aq.window_scores(aq.analyse(np.zeros(SR, np.float32), SR), 2.0, 3.0)
