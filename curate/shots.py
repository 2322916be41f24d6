"""Shot splitting with PySceneDetect's ContentDetector (seed 003: split VGGSS videos at cuts).

Times are seconds relative to the file (= the downloaded 10-s segment). Shots cover the whole
file without gaps: shot k ends where shot k+1 starts.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from manifests.schemas import SHOTS, STATUS_FAILED, STATUS_OK
from manifests.sources import safe_id

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


def shot_rows(source_id: str, path: str | Path, **params: Any) -> list[dict[str, Any]]:
    """Rows of the shots table for one source file; never raises.

    ``params`` go to :func:`detect_shots` (threshold, min_shot_len). A file that cannot be
    decoded gives one row with status ``failed``, shot_id/shot_index None and the error.
    """
    try:
        safe_id(source_id)
        shots = detect_shots(path, **params)
    except Exception as e:  # any decoder/detector error is this source's failure, not the run's
        log.warning("shot detection failed for %s (%s): %s", source_id, path, e)
        return [_row(source_id=source_id, status=STATUS_FAILED,
                     error=f"shots: {type(e).__name__}: {e}")]
    return [
        _row(shot_id=f"{source_id}_shot{k:03d}", source_id=source_id, shot_index=k,
             start=float(s), end=float(e), status=STATUS_OK)
        for k, (s, e) in enumerate(shots)
    ]
