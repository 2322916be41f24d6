"""Repair is safe (issue 27): the cut that moves a clip's audio back onto its picture.

Generated media whose true delay we set (``curate.demo.synth.make_event_video``: sounds at
flash + audio_offset, positive = audio late). Cut with ``audio_shift`` = the true delay, the
repaired clip's sounds start on its flashes (truth: the spec's event times, not a measure
of the code under test), its audio is the source's at the shift to the sample, and a
repair whose audio would run past the source's start or end is refused.
"""
from pathlib import Path

import numpy as np
import pytest

from curate.demo.synth import make_event_video
from curate.ops.cut import RepairRefused, cut_clip, ffmpeg_command
from decoding.align import audio_lag, shifted_audio_lag
from decoding.media import decode_clip

# irregular gaps (no lag aliases another event), flashes on frame instants
EVENTS = [0.35, 1.1, 1.7, 2.55, 3.05, 3.95, 4.3, 5.2, 5.9, 6.45, 7.4, 8.05, 8.7, 9.6]
CLIP = (2.0, 6.0)
TOL_S = 1e-3        # a beep's onset is found within 0.1 ms of its first sample


def _beeps(path, duration: float, rate: int = 48000) -> list[float]:
    """Beep onsets (s): |x| over half the beep's 0.8 peak after >= 50 ms below it."""
    x = np.abs(decode_clip(path, 0.0, duration, short_side=32, crop=None, sample_rate=rate).audio)
    on, last = [], -1e9
    for i in np.flatnonzero(x > 0.4):
        if i - last > 0.05 * rate:
            on.append(i / rate)
        last = i
    return on


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("repair")
    out = {}
    for delay in (0.64, -0.72):
        p = root / f"src{delay:+}.mp4"
        truth = make_event_video(p, 10.0, EVENTS, audio_offset=delay, seed=5)
        out[delay] = (p, truth)
    return out


@pytest.mark.parametrize("delay", [0.64, -0.72])
def test_repaired_clip_sounds_on_its_flashes(sources, tmp_path, delay):
    src, truth = sources[delay]
    flashes = [e - CLIP[0] for e in truth["event_times"] if CLIP[0] <= e < CLIP[1] - 0.05]
    assert len(flashes) >= 5
    cut_clip(src, tmp_path / "as_is.mp4", *CLIP)
    # unrepaired: every sound sits `delay` away from its flash (the media are what we say)
    heard = _beeps(tmp_path / "as_is.mp4", 4.0)
    assert any(abs(h - (f + delay)) < TOL_S for f in flashes for h in heard)
    info = cut_clip(src, tmp_path / "fixed.mp4", *CLIP, audio_shift=delay)
    assert abs(info["av_offset_ms"]) <= 1.0            # both streams still start together
    heard = _beeps(tmp_path / "fixed.mp4", 4.0)
    assert len(heard) == len(flashes)
    assert np.max(np.abs(np.array(heard) - np.array(flashes))) < TOL_S, (heard, flashes)


@pytest.mark.parametrize("delay", [0.64, -0.72])
def test_repaired_audio_is_the_source_at_the_shift_within_one_sample(sources, tmp_path, delay):
    src, _ = sources[delay]
    info = cut_clip(src, tmp_path / "fixed.mp4", *CLIP, audio_shift=delay)
    lag, corr, rate = shifted_audio_lag(tmp_path / "fixed.mp4", src, info["cut_start"],
                                        info["cut_end"], delay)
    assert rate == 44100 and abs(lag) <= 1 and corr > 0.99, (lag, corr)
    # a record 20 ms off reads as 20 ms of lag (882 samples)
    lag, _, _ = shifted_audio_lag(tmp_path / "fixed.mp4", src, info["cut_start"],
                                  info["cut_end"], delay + 0.02)
    assert abs(lag + 882) <= 1


def test_audio_lag_finds_a_known_lag():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=20000)
    lag, corr = audio_lag(ref[137:137 + 15000], ref, 500)
    assert (lag, round(corr, 6)) == (137, 1.0)
    lag, _ = audio_lag(ref[600:16000], ref[700:], 300)
    assert lag == -100


@pytest.mark.parametrize("clip,delay", [((7.0, 9.9), 0.64), ((0.3, 3.0), -0.72)])
def test_repair_running_out_of_audio_is_refused(sources, tmp_path, clip, delay):
    src, _ = sources[delay]
    dst = tmp_path / "never.mp4"
    with pytest.raises(RepairRefused, match="repair refused"):
        cut_clip(src, dst, *clip, audio_shift=delay)
    assert not dst.exists()
    cut_clip(src, dst, *clip)           # the same clip unshifted cuts


def test_unshifted_cut_opens_the_source_once():
    cmd = ffmpeg_command(Path("s.mp4"), Path("d.mp4"), 1.0, 2.0, None)
    assert cmd.count("-i") == 1 and "0:a:0?" in cmd
    cmd = ffmpeg_command(Path("s.mp4"), Path("d.mp4"), 1.0, 2.0, None, audio_shift=0.5)
    assert cmd.count("-i") == 2 and cmd[cmd.index("-i") + 2:].count("1.500000") == 1
