"""Shot splitting with PySceneDetect's ContentDetector (seed 003: split VGGSS videos at cuts).

Times are seconds relative to the downloaded 10-s segment. A stream-copied download starts on
the keyframe before its segment and keeps its source's clock (``seg_start``/``seg_end`` of
the downloads row): shots are detected over the whole file, placed on the file's clock and
clipped to the segment. Shots cover the segment without gaps: shot k ends where shot k+1
starts.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from manifests.schemas import SHOTS, STATUS_FAILED, STATUS_OK
from manifests.names import safe_id

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 27.0     # PySceneDetect's default ContentDetector threshold
DEFAULT_MIN_SHOT_LEN = 0.5   # seconds; no cut closer than this to the previous one


def detect_shots(path: str | Path, threshold: float = DEFAULT_THRESHOLD,
                 min_shot_len: float = DEFAULT_MIN_SHOT_LEN) -> list[tuple[float, float]]:
    """Shots of a video as (start, end) seconds, covering the whole file.

    Raises on a file that cannot be opened or yields no frames (``shot_rows`` turns that
    into a failed row).
    """
    # imported here so the rest of curate imports without scenedetect's cv2 start-up cost
    from scenedetect import ContentDetector, SceneManager, open_video

    video = open_video(str(path), backend="pyav")
    manager = SceneManager()
    # auto_downscale (the default) shrinks frames to ~256 px wide before comparing: the
    # content score is a mean over pixels, so the result barely changes and it is much faster
    manager.auto_downscale = True
    # float = seconds for PySceneDetect >= 0.7
    manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=float(min_shot_len)))
    n_frames = manager.detect_scenes(video=video)
    if n_frames <= 0:
        raise ValueError(f"{path}: no video frames decoded")
    fps = float(video.frame_rate)
    # a single shot is returned as [(start, end)] with start_in_scene=True
    scenes = manager.get_scene_list(start_in_scene=True)
    shots = [(s.frame_num / fps, e.frame_num / fps) for s, e in scenes]
    if not shots:
        raise ValueError(f"{path}: scene detection returned no shots")
    return shots


def _row(**fields: Any) -> dict[str, Any]:
    row = {n: None for n in SHOTS.names}
    row.update(fields)
    return row


def segment_shots(shots: list[tuple[float, float]], first_frame: float, seg_start: float,
                  seg_end: float) -> list[tuple[float, float]]:
    """Shots from ``detect_shots`` (seconds from the file's first frame) -> seconds relative
    to the segment [seg_start, seg_end) of the file's clock, clipped to it, without gaps."""
    length = seg_end - seg_start
    rel = [(first_frame + a - seg_start, first_frame + b - seg_start) for a, b in shots]
    kept = [(max(a, 0.0), min(b, length)) for a, b in rel if b > 1e-6 and a < length - 1e-6]
    if not kept:
        raise ValueError(f"no shot inside the segment [{seg_start:.3f}, {seg_end:.3f}) s")
    kept[0] = (0.0, kept[0][1])
    kept[-1] = (kept[-1][0], length)
    return kept


def shot_rows(source_id: str, path: str | Path, seg_start: float | None = None,
              seg_end: float | None = None, **params: Any) -> list[dict[str, Any]]:
    """Rows of the shots table for one source file; never raises.

    ``seg_start``/``seg_end``: the segment on the file's clock (downloads row); times come
    back relative to it. ``params`` go to :func:`detect_shots` (threshold, min_shot_len). A
    file that cannot be decoded gives one row with status ``failed``, shot_id/shot_index
    None and the error.
    """
    try:
        safe_id(source_id)
        shots = detect_shots(path, **params)
        if seg_start is not None and seg_end is not None:
            from decoding.media import stream_starts
            first, _ = stream_starts(path)
            shots = segment_shots(shots, first or 0.0, seg_start, seg_end)
    except Exception as e:  # any decoder/detector error is this source's failure, not the run's
        log.warning("shot detection failed for %s (%s): %s", source_id, path, e)
        return [_row(source_id=source_id, status=STATUS_FAILED,
                     error=f"shots: {type(e).__name__}: {e}")]
    return [
        _row(shot_id=f"{source_id}_shot{k:03d}", source_id=source_id, shot_index=k,
             start=float(s), end=float(e), status=STATUS_OK)
        for k, (s, e) in enumerate(shots)
    ]
