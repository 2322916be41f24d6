"""Every sampled frame and audio span of a window lies inside the window's shot (issue 9, item 7).

Two levels:
* arithmetic, exhaustive: for many frame rates and cut frames, the decoder's rule (a grid
  slot at t shows the last source frame with pts <= t + PTS_SLACK) applied to every sample
  index of every window of the shot gives a frame of that shot;
* end to end at 24, 25, 29.97 and 30 fps: videos of solid-colour shots with cuts off the
  12-fps grid go through shot detection, windowing, the decode grid and scoring; every
  sampled frame has its shot's colour and pixel_diff sees no cut.
"""
from __future__ import annotations

import itertools
import math
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from curate.ops.scoring import Scorers, score_segment
from curate.ops.shots import shot_rows
from curate.ops.windows import make_windows
from decoding.media import PTS_SLACK, decode_grid
from filters import sampling

FPS_LISTED = {"24": Fraction(24), "25": Fraction(25), "29.97": Fraction(30000, 1001),
              "30": Fraction(30)}
FPS_EXTRA = {"23.976": Fraction(24000, 1001), "50": Fraction(50), "59.94": Fraction(60000, 1001),
             "15": Fraction(15)}


# ---------------------------------------------------------------- what a window samples

def _sample_indices(s: float, e: float) -> set[int]:
    """Every grid index any filter reads for the window [s, e) (origin 0)."""
    idx = set(sampling.uniform10_indices(s, e))
    idx |= set(sampling.uniform3_indices(s))
    i0 = sampling.start_index(s)
    for d in sampling.SYNC_SHIFTS:
        idx |= {i0 + k for k in sampling.sync_video_offsets(d)}
    return idx


def _audio_spans(s: float, e: float) -> list[tuple[float, float]]:
    spans = [(s, e)]                                              # amplitude
    spans += sampling.imagebind_audio_spans(s, 0.0, e)
    spans += [sampling.sync_audio_span(s, d) for d in sampling.SYNC_SHIFTS]
    return spans


def _shown_frame(i: int, fps: Fraction) -> int:
    """Source frame the decoder puts in grid slot i (frames at n / fps, pts <= t + slack)."""
    return math.floor((i / 12 + PTS_SLACK) * float(fps) + 1e-9)


def _check_shot(n1: int, n2: int, fps: Fraction, index_rule=None) -> list[str]:
    """Problems of the windows of the shot made of source frames n1..n2-1."""
    a, e_shot = n1 / float(fps), n2 / float(fps)            # as curate.ops.shots computes them
    shot = {"shot_id": "x_shot001", "source_id": "x", "start": a, "end": e_shot, "status": "ok"}
    bad = []
    for w in make_windows([shot], "c", "train"):
        s, e = w["start"], w["end"]
        idx = _sample_indices(s, e) if index_rule is None else index_rule(s)
        for i in idx:
            m = _shown_frame(i, fps)
            if not n1 <= m < n2:
                bad.append(f"window {s:.3f}: grid frame {i} shows source frame {m}, shot {n1}..{n2 - 1}")
        for a0, a1 in (_audio_spans(s, e) if index_rule is None else []):
            # window bounds are the shot bounds to the ms (curate.ops.windows)
            if not (a - sampling.BOUND_SLACK - 1e-9 <= s - 1e-9 <= a0 and a1 <= e + 1e-9
                    and e <= e_shot + sampling.BOUND_SLACK + 1e-9):
                bad.append(f"window {s:.3f}: audio [{a0:.4f}, {a1:.4f}) outside [{s}, {e})")
    return bad


@pytest.mark.parametrize("name", [*FPS_LISTED, *FPS_EXTRA])
def test_every_sample_shows_its_own_shot_for_every_cut_frame(name):
    fps = {**FPS_LISTED, **FPS_EXTRA}[name]
    per_s = float(fps)
    bad, n_windows = [], 0
    # every cut frame over 2 s (all positions relative to the 12-fps grid), shot lengths from
    # just over 3 s to 4.5 s (the last window ending on the shot's last frame included)
    for n1 in range(1, int(2 * per_s) + 1):
        for n2 in range(n1 + math.ceil(3 * per_s), n1 + math.ceil(4.5 * per_s) + 1):
            bad += _check_shot(n1, n2, fps)
            n_windows += 1
    assert n_windows > 100
    assert not bad, bad[:10]


def test_nearest_grid_frame_rule_fails_where_the_new_one_holds():
    """The check has teeth: the old rule (window start snapped to the nearest grid frame)
    takes the previous shot's frame for the cut at 2.533 s in a 30-fps video (frame 76)."""
    fps = Fraction(30)

    def nearest(s: float) -> set[int]:
        i0 = int(round(s * 12))
        return {i0 + k for k in sampling.UNIFORM10_OFFSETS}

    assert _check_shot(76, 76 + 135, fps, nearest)          # 2.5333 s -> grid frame 30 = 2.5 s
    assert not _check_shot(76, 76 + 135, fps)
    assert sampling.start_index(2.533) == 31 and sampling.snap(2.533) == pytest.approx(31 / 12)


def test_uniform10_spreads_over_35_frames_only_when_the_36th_is_too_close_to_the_end():
    assert sampling.uniform10_offsets(2.0, 5.0) == sampling.UNIFORM10_OFFSETS        # on the grid
    assert sampling.uniform10_offsets(2.534, 5.534) == sampling.UNIFORM10_OFFSETS    # 2.583..5.5
    # 1 ms after grid frame 30 (2.5 s): the first sample is 2.583 s and the 36th 5.5 s, 1 ms
    # before the end: its slot may already show the next shot's first frame
    assert sampling.uniform10_offsets(2.501, 5.501) == sampling.UNIFORM10_OFFSETS_35
    assert sampling.UNIFORM10_OFFSETS_35 == (0, 4, 8, 11, 15, 19, 23, 26, 30, 34)
    with pytest.raises(ValueError):
        sampling.uniform10_offsets(2.0, 4.8)             # 34 grid frames: not a 3-s window


# ---------------------------------------------------------------- end to end on real files

COLOURS = np.array([[220, 30, 30], [30, 200, 40], [40, 60, 230], [230, 230, 40]], np.uint8)
DURATION_FRAMES = {"24": 240, "25": 250, "29.97": 300, "30": 300}
# cut frames, chosen off the 12-fps grid (and 2.533 s at 30 fps, the case of the issue); the
# middle shot of each is 3-4.5 s long so its first and last windows touch both cuts
CUT_FRAMES = {"24": (61, 169), "25": (63, 176), "29.97": (76, 211), "30": (76, 211)}


def _colour_video(path: Path, fps: Fraction, n_frames: int, cuts: tuple[int, ...]) -> None:
    """Solid colour per shot (160x120), H.264, a tone per shot as audio."""
    bounds = (0, *cuts, n_frames)
    frames = np.empty((n_frames, 120, 160, 3), np.uint8)
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        frames[a:b] = COLOURS[k]
    rate = f"{fps.numerator}/{fps.denominator}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                    "-s", "160x120", "-r", rate, "-i", "-",
                    "-f", "lavfi", "-i", f"sine=frequency=440:duration={n_frames / float(fps) + 0.1}",
                    "-shortest", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "10",
                    "-g", "1000", "-c:a", "aac", str(path)],
                   input=frames.tobytes(), check=True, capture_output=True)


def _shot_of(frame: np.ndarray) -> int:
    mean = frame.reshape(-1, 3).mean(axis=0)
    return int(np.argmin(np.abs(COLOURS.astype(float) - mean).sum(axis=1)))


@pytest.mark.parametrize("name", list(FPS_LISTED))
def test_sampled_frames_stay_in_their_shot_end_to_end(tmp_path, name):
    fps, cuts = FPS_LISTED[name], CUT_FRAMES[name]
    path = tmp_path / f"cuts_{name}.mp4"
    _colour_video(path, fps, DURATION_FRAMES[name], cuts)
    for c in cuts:   # off the grid: the cut time is not a multiple of 1/12 s
        assert (Fraction(c) / fps * 12).denominator != 1
    shots = shot_rows("vid_000000_000010", path)
    assert [round(r["start"] * float(fps)) for r in shots[1:]] == list(cuts), shots
    windows = make_windows(shots, "c", "train")
    grid = decode_grid(path)
    index = {r["shot_id"]: r["shot_index"] for r in shots}
    checked = 0
    for w in windows:
        want = index[w["shot_id"]]
        for i in sorted(_sample_indices(w["start"], w["end"])):
            assert _shot_of(grid.frames[i]) == want, (name, w["window_id"], i)
            checked += 1
    # the first window of the middle shot starts between two grid frames, at the cut
    first_mid = min(w["start"] for w in windows if index[w["shot_id"]] == 1)
    assert abs(first_mid - cuts[0] / float(fps)) < 1e-3 and (first_mid * 12) % 1 > 1e-3
    assert len(windows) >= 3 and checked >= 30 * len(windows)
    # scoring reads the same frames: solid shots give no pixel change in any window
    rows = score_segment(grid, windows, Scorers(), None, "c", gate=set())
    assert all(r["pixel_diff"] < 0.003 for r in rows), [(r["window_id"], r["pixel_diff"]) for r in rows]
