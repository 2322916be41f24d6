"""``decoding.media.stills``: the frame shown at each asked time, in one pass, display-sized."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decoding.media import DecodeError, stills
from testkit.avmedia import brightness, make_av


@pytest.fixture(scope="module")
def grey_ramp(tmp_path_factory) -> Path:
    """10 s at 6 fps, 160x90: frame i (at i/6 s) is grey at brightness(i)."""
    return make_av(tmp_path_factory.mktemp("stills") / "ramp.mp4", 10.0, 6, size=(160, 90))


def _level(img: np.ndarray) -> float:
    return float(img.mean())


def test_each_time_takes_the_frame_shown_then(grey_ramp: Path) -> None:
    got = stills(grey_ramp, [5.0, 0.0, 9.999, 2.1], height=54)     # any order, kept
    expect = [brightness(30), brightness(0), brightness(59), brightness(12)]
    assert [round(_level(g)) for g in got] == pytest.approx(expect, abs=2)
    assert all(g.shape == (54, 96, 3) and g.dtype == np.uint8 for g in got)


def test_offset_moves_every_time_onto_the_files_clock(grey_ramp: Path) -> None:
    got = stills(grey_ramp, [0.0, 4.0], height=54, offset=1.0)
    assert [round(_level(g)) for g in got] == pytest.approx([brightness(6), brightness(30)], abs=2)


def test_times_past_the_end_show_the_last_frame_and_tall_video_is_cropped(tmp_path: Path) -> None:
    tall = make_av(tmp_path / "tall.mp4", 2.0, 6, size=(90, 160))
    first, past = stills(tall, [0.0, 30.0], height=54)
    assert round(_level(past)) == pytest.approx(brightness(11), abs=2)
    assert first.shape == past.shape == (54, 54, 3)        # short side 54, at most 54 tall


def test_a_file_that_is_no_video_is_a_decode_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 2000)
    with pytest.raises(DecodeError):
        stills(bad, [0.0], height=54)
