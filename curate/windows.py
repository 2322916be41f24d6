"""3-s windows at 0.5-s stride inside each shot (seed 003, automatic curation).

Windows are anchored at their shot's start and lie fully inside the shot, so no window ever
straddles a cut; a shot shorter than the window length yields none. All arithmetic is in
integer milliseconds so that 0.5-s steps never drift (0.1 + 0.2 != 0.3 in floats).
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

from manifests.schemas import STATUS_OK, WINDOWS

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


def make_windows(shot_rows: Iterable[Mapping[str, Any]], class_name: str | None,
                 split: str | None, length: float = WINDOW_SECONDS,
                 stride: float = STRIDE_SECONDS) -> list[dict[str, Any]]:
    """Rows of the windows table for the ok shots in ``shot_rows``; scores null, status ok.

    window_id = ``{source_id}_{start_ms:06d}`` (start in ms relative to the segment).
    """
    length_ms, stride_ms = _ms(length), _ms(stride)
    if length_ms <= 0 or stride_ms <= 0:
        raise ValueError(f"window length and stride must be > 0 ms, got {length}, {stride}")
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
            row = {n: None for n in WINDOWS.names}
            row.update(window_id=wid, source_id=sid, shot_id=shot["shot_id"],
                       class_name=class_name, split=split, start=w0 / 1000,
                       end=(w0 + length_ms) / 1000, status=STATUS_OK)
            rows.append(row)
    return rows
