"""Sample-time conventions of every filter, in one place (DESIGN section 3).

All filters read from the shared analysis grid (``decoding.media.Grid``): frames at 12 fps,
frame ``i`` at ``grid.start + i / 12``. A window is 3 s = 36 grid frames, ``[s, s + 3)``.
Its start is snapped to the nearest grid frame; every sample below is then a whole number
of grid frames after it, so all sample times lie exactly on the 1/12-s grid and a frame
feature computed for one window is the very same frame another window asks for.

Readings of the seed (003, section 5.2) where it is terse:

* "10 frames uniformly": ``round(linspace(0, 35, 10))`` grid frames after the window start,
  i.e. offsets 0, 4, 8, 12, 16, 19, 23, 27, 31, 35 (the first and the last grid frame of the
  window, like ``np.linspace(0, n - 1, 10)`` over a clip's frames). The tempting
  ``s + k/3, k = 0..9`` ends at ``s + 3``, which is the first frame *after* the window: at a
  shot's end it is a frame of the next shot, and at a segment's end it does not exist.
* "3 frames uniformly": the centres of the window's thirds, ``s + 0.5, s + 1.5, s + 2.5``
  (offsets 6, 18, 30). Each has a 2-s audio centred on it, ``[t - 1, t + 1)``, read from the
  segment, not the window; ``Grid.audio_slice`` slides it inside at a segment's edge.
* sync: the middle 2 s of the window, ``[s + 0.5, s + 2.5)``: 12 frames at 6 fps (every other
  grid frame, offsets 6, 8, ..., 28) and the 2-s audio starting at ``s + 0.5``. Shifts are
  -0.25 / 0 / +0.25 s (3 grid frames), so a shifted clip stays inside the 3-s window
  (video offsets 3..31, audio ``[s + 0.25, s + 2.75)`` at most).
"""
from __future__ import annotations

import numpy as np

GRID_FPS = 12
WINDOW_SECONDS = 3.0
WINDOW_FRAMES = 36  # WINDOW_SECONDS * GRID_FPS

#: pixel_diff and clip_diff: 10 frames, offsets in grid frames from the window start
UNIFORM10_OFFSETS: tuple[int, ...] = tuple(int(round(x)) for x in np.linspace(0, WINDOW_FRAMES - 1, 10))

#: imagebind: 3 frames at the centres of the window's thirds
UNIFORM3_OFFSETS: tuple[int, ...] = (6, 18, 30)
IMAGEBIND_AUDIO_SECONDS = 2.0

#: sync: 12 frames at 6 fps from the window's middle 2 s, shifted by -0.25 / 0 / +0.25 s
SYNC_START_OFFSET = 6          # s + 0.5
SYNC_FRAMES = 12
SYNC_STEP = 2                  # 6 fps on the 12-fps grid
SYNC_SHIFTS: tuple[int, ...] = (-3, 0, 3)   # grid frames; 3 / 12 s = 0.25 s; index 1 is in sync
SYNC_AUDIO_SECONDS = 2.0


def snap(t: float, origin: float = 0.0, fps: int = GRID_FPS) -> float:
    """Nearest grid time to ``t`` on the grid whose frame 0 is at ``origin``."""
    return origin + round((t - origin) * fps) / fps


def start_index(window_start: float, origin: float = 0.0, fps: int = GRID_FPS) -> int:
    """Grid frame index of a window's (snapped) start."""
    return int(round((window_start - origin) * fps))


def _times(window_start: float, offsets, origin: float) -> list[float]:
    i0 = start_index(window_start, origin)
    return [origin + (i0 + k) / GRID_FPS for k in offsets]


def uniform10_times(window_start: float, origin: float = 0.0) -> list[float]:
    """The 10 frame times of pixel_diff / clip_diff."""
    return _times(window_start, UNIFORM10_OFFSETS, origin)


def uniform3_times(window_start: float, origin: float = 0.0) -> list[float]:
    """The 3 frame times of imagebind."""
    return _times(window_start, UNIFORM3_OFFSETS, origin)


def imagebind_audio_spans(window_start: float, origin: float = 0.0) -> list[tuple[float, float]]:
    """The 2-s audio ``[t - 1, t + 1)`` centred on each of the 3 imagebind frames (before sliding)."""
    half = IMAGEBIND_AUDIO_SECONDS / 2
    return [(t - half, t + half) for t in uniform3_times(window_start, origin)]


def sync_video_offsets(shift: int = 0) -> list[int]:
    """Grid-frame offsets (from the window start) of the 12 sync frames, video shifted by ``shift`` frames."""
    return [SYNC_START_OFFSET + shift + SYNC_STEP * k for k in range(SYNC_FRAMES)]


def sync_video_times(window_start: float, shift: int = 0, origin: float = 0.0) -> list[float]:
    """The 12 sync frame times (6 fps) of the middle 2 s, video shifted by ``shift`` grid frames."""
    return _times(window_start, sync_video_offsets(shift), origin)


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
