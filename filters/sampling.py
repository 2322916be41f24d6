"""Sample-time conventions of every filter, in one place (DESIGN section 3).

All filters read from the shared analysis grid (``decoding.media.Grid``): frames at 12 fps,
frame ``i`` at ``grid.start + i / 12``. A window is 3 s, ``[s, s + 3)``, and lies inside one
shot (``curate.ops.windows``). Every sample of a window lies inside the window, hence inside its
shot and its segment, whatever the source frame rate and wherever the cut falls:

* **What a grid frame shows.** ``decoding.media`` fills the slot at time ``t`` with the last
  source frame whose pts is ``<= t + PTS_SLACK`` (1 ms): the frame on screen at ``t``. A cut
  between grid frames (2.533 s in a 30-fps video) is therefore shown first by the grid frame
  *after* it (2.583 s); the grid frame before it (2.5 s) still shows the old shot.
* **First sample: the first grid frame at or after the window start** (``ceil``, not the
  nearest: rounding 2.533 s to 2.5 s took a frame of the previous shot). It shows the shot's
  first frame or a later one, since window starts are the shot start rounded to the ms
  (at most 0.5 ms early, less than ``PTS_SLACK``).
* **Last sample: strictly before the window end, by ``END_MARGIN``** (``PTS_SLACK`` plus the
  0.5 ms of millisecond rounding of the window end), so its slot cannot pick up the next
  shot's first frame. The 36 grid frames from the first sample end before ``s + 3``; only when
  the window starts less than ``END_MARGIN`` after a grid frame is the 36th too close to the
  end, and the 10 uniform frames are spread over 35 frames instead (``uniform10_offsets``).
* **Audio spans** lie inside ``[s, s + 3)``: the window's own audio (amplitude), the sync
  audio (inside by construction) and the 2-s ImageBind audio centred on each frame, slid
  inside the window where it would reach past it (the seed cuts 3-s clips first and samples
  "2-second audios centered around the frames" from the clip, so the clip bounds them).

Readings of the seed (003, section 5.2) where it is terse:

* "10 frames uniformly": ``round(linspace(0, 35, 10))`` grid frames after the first sample,
  i.e. offsets 0, 4, 8, 12, 16, 19, 23, 27, 31, 35 (the first and the last grid frame of the
  window, like ``np.linspace(0, n - 1, 10)`` over a clip's frames). The tempting
  ``s + k/3, k = 0..9`` ends at ``s + 3``, which is the first frame *after* the window: at a
  shot's end it is a frame of the next shot, and at a segment's end it does not exist.
* "3 frames uniformly": the centres of the window's thirds, offsets 6, 18, 30 (``s + 0.5,
  1.5, 2.5`` for a window on the grid). Each has a 2-s audio centred on it, ``[t - 1, t + 1)``,
  slid inside the window: ``[s, s + 2)``, ``[t - 1, t + 1)``, ``[s + 1, s + 3)``.
* sync: the middle 2 s of the window, ``[s + 0.5, s + 2.5)``: 12 frames at 6 fps (every other
  grid frame, offsets 6, 8, ..., 28) and the 2-s audio starting at the first of them. Shifts
  are -0.25 / 0 / +0.25 s (3 grid frames), so a shifted clip stays inside the 3-s window
  (video offsets 3..31, audio ``[s + 0.25, s + 2.75)`` at most, plus < 1/12 s off the grid).
"""
from __future__ import annotations

import math

import numpy as np

from decoding.media import PTS_SLACK

GRID_FPS = 12
WINDOW_SECONDS = 3.0
WINDOW_FRAMES = 36  # WINDOW_SECONDS * GRID_FPS

#: window bounds are whole milliseconds (curate.ops.windows rounds the shot bounds)
BOUND_SLACK = 0.0005
#: the last sampled grid frame lies at least this far before the window end
END_MARGIN = PTS_SLACK + BOUND_SLACK
#: float noise in (t - origin) * fps (a start exactly on the grid stays on it)
_TOL = 1e-6

#: pixel_diff and clip_diff: 10 frames, offsets in grid frames from the first sample
UNIFORM10_OFFSETS: tuple[int, ...] = tuple(int(round(x)) for x in np.linspace(0, WINDOW_FRAMES - 1, 10))
#: the same over 35 frames, when the 36th would be within END_MARGIN of the window end
UNIFORM10_OFFSETS_35: tuple[int, ...] = tuple(int(round(x)) for x in np.linspace(0, WINDOW_FRAMES - 2, 10))

#: imagebind: 3 frames at the centres of the window's thirds
UNIFORM3_OFFSETS: tuple[int, ...] = (6, 18, 30)
IMAGEBIND_AUDIO_SECONDS = 2.0

#: sync: 12 frames at 6 fps from the window's middle 2 s, shifted by -0.25 / 0 / +0.25 s
SYNC_START_OFFSET = 6          # s + 0.5
SYNC_FRAMES = 12
SYNC_STEP = 2                  # 6 fps on the 12-fps grid
SYNC_SHIFTS: tuple[int, ...] = (-3, 0, 3)   # grid frames; 3 / 12 s = 0.25 s; index 1 is in sync
SYNC_AUDIO_SECONDS = 2.0

#: the classifier's own offset (seed 003 section 1.3, its test protocol): 31 audio clips
#: shifted by 0.04 s over [-0.6, +0.6] s against the window's in-sync 12 video frames (the video
#: stays on the 12-fps grid, so only the audio moves; 0.04 s is 640 samples at 16 kHz). The
#: audio then reaches up to 0.1 s before the window and 0.18 s past it: it is cut from the
#: decode's margins (``decoding.media.Grid.wide_audio``), never slid.
OFFSET_STEP_S = 0.04
OFFSET_STEPS = 15                       # shifts -15..+15 steps


def offset_shifts_s() -> tuple[float, ...]:
    """The 31 audio shifts in seconds, ascending (index ``OFFSET_STEPS`` is 0)."""
    return tuple(round(OFFSET_STEP_S * k, 2) for k in range(-OFFSET_STEPS, OFFSET_STEPS + 1))


def start_index(window_start: float, origin: float = 0.0, fps: int = GRID_FPS) -> int:
    """Grid index of a window's first sample: the first grid frame at or after its start."""
    return math.ceil((window_start - origin) * fps - _TOL)


def end_index(window_end: float, origin: float = 0.0, fps: int = GRID_FPS) -> int:
    """One past the last grid frame a window may sample: frames at least ``END_MARGIN``
    before ``window_end``."""
    return math.ceil((window_end - END_MARGIN - origin) * fps - _TOL)


def snap(t: float, origin: float = 0.0, fps: int = GRID_FPS) -> float:
    """Time of the first grid frame at or after ``t`` on the grid whose frame 0 is at ``origin``."""
    return origin + start_index(t, origin, fps) / fps


def _end(window_start: float, window_end: float | None) -> float:
    return window_start + WINDOW_SECONDS if window_end is None else float(window_end)


def window_indices(window_start: float, window_end: float | None = None,
                   origin: float = 0.0) -> range:
    """Every grid index a window may sample (35 or 36 of them for a 3-s window)."""
    return range(start_index(window_start, origin),
                 end_index(_end(window_start, window_end), origin))


def uniform10_offsets(window_start: float, window_end: float | None = None,
                      origin: float = 0.0) -> tuple[int, ...]:
    """Offsets (from ``start_index``) of the 10 pixel_diff / clip_diff frames of a window."""
    n = len(window_indices(window_start, window_end, origin))
    if n >= WINDOW_FRAMES:
        return UNIFORM10_OFFSETS
    if n == WINDOW_FRAMES - 1:
        return UNIFORM10_OFFSETS_35
    raise ValueError(f"window [{window_start:g}, {_end(window_start, window_end):g}) is shorter "
                     f"than {WINDOW_SECONDS:g} s: only {n} grid frames")


def uniform10_indices(window_start: float, window_end: float | None = None,
                      origin: float = 0.0) -> list[int]:
    """Grid indices of the 10 pixel_diff / clip_diff frames."""
    i0 = start_index(window_start, origin)
    return [i0 + k for k in uniform10_offsets(window_start, window_end, origin)]


def _times(idx, origin: float) -> list[float]:
    return [origin + i / GRID_FPS for i in idx]


def uniform10_times(window_start: float, origin: float = 0.0,
                    window_end: float | None = None) -> list[float]:
    """The 10 frame times of pixel_diff / clip_diff."""
    return _times(uniform10_indices(window_start, window_end, origin), origin)


def uniform3_indices(window_start: float, origin: float = 0.0) -> list[int]:
    """Grid indices of the 3 imagebind frames."""
    i0 = start_index(window_start, origin)
    return [i0 + k for k in UNIFORM3_OFFSETS]


def uniform3_times(window_start: float, origin: float = 0.0) -> list[float]:
    """The 3 frame times of imagebind."""
    return _times(uniform3_indices(window_start, origin), origin)


def slide_inside(t0: float, seconds: float, lo: float, hi: float) -> float:
    """Start of a ``seconds``-long span starting at ``t0``, slid inside ``[lo, hi)``."""
    return min(max(t0, lo), hi - seconds)


def imagebind_audio_spans(window_start: float, origin: float = 0.0,
                          window_end: float | None = None) -> list[tuple[float, float]]:
    """The 2-s audio ``[t - 1, t + 1)`` centred on each of the 3 imagebind frames, slid inside
    the window."""
    secs, end = IMAGEBIND_AUDIO_SECONDS, _end(window_start, window_end)
    starts = [slide_inside(t - secs / 2, secs, window_start, end)
              for t in uniform3_times(window_start, origin)]
    return [(a, a + secs) for a in starts]


def sync_video_offsets(shift: int = 0) -> list[int]:
    """Grid-frame offsets (from the first sample) of the 12 sync frames, video shifted by ``shift`` frames."""
    return [SYNC_START_OFFSET + shift + SYNC_STEP * k for k in range(SYNC_FRAMES)]


def sync_audio_span(window_start: float, shift: int = 0, origin: float = 0.0) -> tuple[float, float]:
    """The 2-s sync audio of the middle 2 s, shifted by ``shift`` grid frames."""
    i0 = start_index(window_start, origin) + SYNC_START_OFFSET + shift
    t0 = origin + i0 / GRID_FPS
    return t0, t0 + SYNC_AUDIO_SECONDS


def sync_pairs(shifts=SYNC_SHIFTS) -> dict[str, list[tuple[int, int]]]:
    """(audio shift, video shift) pairs, in grid frames, for both directions.

    a2v: audio fixed, video shifted; v2a: video fixed, audio shifted. The middle pair
    (0, 0) is the synchronised one and is shared by both directions.
    """
    return {"a2v": [(0, d) for d in shifts], "v2a": [(d, 0) for d in shifts]}

# ---------------------------------------------------------------- speech (Silero VAD)
#: the rate Silero VAD's 16-kHz network takes (the grid's) and its step: 512 samples, 32 ms;
#: a window reads the steps whose centre lies inside it (``filters.speech.window_scores``)
SPEECH_SAMPLE_RATE = 16000
SPEECH_STEP = 512
