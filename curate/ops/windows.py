"""3-s windows at 0.5-s stride inside each shot (seed 003, automatic curation).

Windows are anchored at their shot's start and lie fully inside the shot, so no window ever
straddles a cut; a shot shorter than the window length yields none. All arithmetic is in
integer milliseconds so that 0.5-s steps never drift (0.1 + 0.2 != 0.3 in floats).
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

from manifests import schemas
from manifests.schemas import STATUS_OK, STATUS_SKIPPED

log = logging.getLogger(__name__)

WINDOW_SECONDS = 3.0
STRIDE_SECONDS = 0.5


def _ms(t: float) -> int:
    return int(round(float(t) * 1000))


def window_starts_ms(start_ms: int, end_ms: int, length_ms: int, stride_ms: int) -> range:
    """Window starts (ms) inside [start_ms, end_ms]: floor((L - length) / stride) + 1 of them."""
    if end_ms - start_ms < length_ms:
        return range(0)
    return range(start_ms, end_ms - length_ms + 1, stride_ms)


def too_short_reason(start: float, end: float, length: float = WINDOW_SECONDS) -> str | None:
    """``too_short: 1.0 s < 3 s window`` when [start, end) holds no window, else None."""
    if _ms(end) - _ms(start) >= _ms(length):
        return None
    return f"too_short: {max(float(end) - float(start), 0.0):.1f} s < {float(length):g} s window"


def mark_short_shots(shot_rows: list[dict[str, Any]], length: float = WINDOW_SECONDS) -> int:
    """Mark ok shots shorter than one window skipped with the reason; returns how many."""
    n = 0
    for shot in shot_rows:
        if shot.get("status") != STATUS_OK or shot.get("start") is None or shot.get("end") is None:
            continue
        why = too_short_reason(shot["start"], shot["end"], length)
        if why:
            shot.update(status=STATUS_SKIPPED, error=why)
            n += 1
    return n


def make_windows(shot_rows: Iterable[Mapping[str, Any]], class_name: str | None,
                 split: str | None, length: float = WINDOW_SECONDS,
                 stride: float = STRIDE_SECONDS) -> list[dict[str, Any]]:
    """Rows of the windows table for the ok shots in ``shot_rows``; scores null, status ok.

    window_id = ``{source_id}_{start_ms:06d}`` (start in ms relative to the segment).
    An ok shot too short for one window is marked in place (``mark_short_shots``): status
    skipped, error ``too_short: 1.0 s < 3 s window``, so a source that yields no window
    says why in the shots table the split stage writes.
    """
    length_ms, stride_ms = _ms(length), _ms(stride)
    if length_ms <= 0 or stride_ms <= 0:
        raise ValueError(f"window length and stride must be > 0 ms, got {length}, {stride}")
    if not isinstance(shot_rows, list):
        shot_rows = list(shot_rows)
    mark_short_shots(shot_rows, length)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for shot in shot_rows:
        if shot.get("status") != STATUS_OK:
            continue
        sid = shot["source_id"]
        for w0 in window_starts_ms(_ms(shot["start"]), _ms(shot["end"]), length_ms, stride_ms):
            wid = f"{sid}_{w0:06d}"
            if wid in seen:  # only possible when shots overlap, which detect_shots never gives
                log.warning("overlapping shots in %s: window %s already made", sid, wid)
                continue
            seen.add(wid)
            row = {n: None for n in schemas.WINDOWS.names}
            row.update(window_id=wid, source_id=sid, shot_id=shot["shot_id"],
                       class_name=class_name, split=split, start=w0 / 1000,
                       end=(w0 + length_ms) / 1000, status=STATUS_OK)
            rows.append(row)
    return rows
