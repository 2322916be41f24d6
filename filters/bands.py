"""The keep rule of a filter whose score must lie in a band [min, max] (either side optional)."""
from __future__ import annotations

import math
from typing import Mapping


def keep_band(name: str, s: float | None, thresholds: Mapping[str, float]) -> tuple[bool, str | None]:
    """(keep, reason); a missing or NaN score is never kept. Both limits are inclusive."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return False, f"{name}: no score"
    lo, hi = thresholds.get("min"), thresholds.get("max")
    if lo is not None and s < lo:
        return False, f"{name} {s:.4g} < min {lo:g}"
    if hi is not None and s > hi:
        return False, f"{name} {s:.4g} > max {hi:g}"
    return True, None
