"""How the report writes numbers, times and thresholds for a reader (no raw floats, no
epoch seconds)."""
from __future__ import annotations

import math
import time
from typing import Any, Mapping

from manifests import schemas


def score_text(v: float | None, ref: float | None = None) -> str:
    """Three significant digits, more (up to six) where fewer would print the same text as
    ``ref`` (a score just under its threshold must not read as equal to it)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    digits = 3
    while digits < 6 and ref is not None and v != ref and f"{v:.{digits}g}" == f"{ref:.{digits}g}":
        digits += 1
    return f"{v:.{digits}g}"


def duration_text(seconds: float | None) -> str:
    """``0.4 s``, ``45 s``, ``3 min 20 s``, ``2 h 05 min``, ``3 d 4 h``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = max(float(seconds), 0.0)
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    m = int(round(s))
    if m < 3600:
        return f"{m // 60} min {m % 60:02d} s"
    if m < 86400:
        return f"{m // 3600} h {m % 3600 // 60:02d} min"
    return f"{m // 86400} d {m % 86400 // 3600} h"


def when_text(epoch: float | None) -> str:
    """A wall-clock time as a local date with its zone: ``2026-12-06 00:46:12 UTC``."""
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(epoch)))


def hours_text(hours: float | None) -> str:
    """Under an hour as a duration with the hours beside it; else hours, two decimals."""
    if hours is None:
        return "-"
    h = float(hours)
    if h < 1:
        return f"{duration_text(h * 3600)} ({h:.3f} h)"
    return f"{h:,.2f} h"


def thresholds_for(col: str, thresholds: Mapping[str, Any] | None) -> dict[str, float]:
    """Threshold lines for a score column, from ``thresholds`` keyed by column or filter.

    Accepted shapes: ``{col: 0.3}``, ``{col: {"min": a, "max": b}}``, ``{filter: {"min": a}}``,
    ``{filter: {col: {...}}}`` and ``{filter: {"ia_min": a}}`` (keys naming the column's
    suffix, e.g. ``ia`` for ``imagebind_ia``).
    """
    if not thresholds:
        return {}
    if col in thresholds:
        return _numbers(thresholds[col], "threshold")
    declared = {key: v for key, (_, v) in declared_bounds(col, thresholds).items()}
    if declared:
        return declared
    for filt, cols in schemas.SCORE_COLUMNS.items():
        if col in cols and filt in thresholds:
            spec = thresholds[filt]
            if not isinstance(spec, Mapping):
                return _numbers(spec, "threshold")
            if col in spec:
                return _numbers(spec[col], "threshold")
            if len(cols) == 1:
                return _numbers(spec, "threshold")
            return _pick_suffix(col, filt, cols, _numbers(spec, "threshold"))
    return {}


def _pick_suffix(col: str, filt: str, cols: tuple[str, ...],
                 spec: dict[str, float]) -> dict[str, float]:
    """Keys naming this column's suffix (``ia_min`` for imagebind_ia), plus keys naming no
    column of the filter (a plain ``min`` applies to every column of the filter)."""
    suffixes = {c[len(filt) + 1:] for c in cols if c.startswith(filt + "_")}
    mine = col[len(filt) + 1:]
    return {k: v for k, v in spec.items()
            if mine in k.split("_") or not suffixes & set(k.split("_"))}


def _numbers(spec: Any, label: str) -> dict[str, float]:
    if isinstance(spec, bool):
        return {}
    if isinstance(spec, (int, float)):
        return {label: float(spec)}
    if isinstance(spec, Mapping):
        return {str(k): float(v) for k, v in spec.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {}


def declared_bounds(col: str, thresholds: Mapping[str, Any] | None) -> dict[str, tuple[str, float]]:
    """The bounds a filter declares on ``col`` (``filters.registry.BOUNDS``) that the
    thresholds set: ``{threshold key: ("min" | "max", value)}``."""
    from filters import registry

    out: dict[str, tuple[str, float]] = {}
    for filt, cols in schemas.SCORE_COLUMNS.items():
        spec = (thresholds or {}).get(filt)
        if col not in cols or not isinstance(spec, Mapping):
            continue
        for c, key, kind in registry.BOUNDS.get(filt, ()):
            v = spec.get(key)
            if c == col and isinstance(v, (int, float)) and not isinstance(v, bool):
                out[key] = (kind, float(v))
    return out


def bounds(col: str, thresholds: Mapping[str, Any] | None) -> tuple[float | None, float | None]:
    """(lower, upper) bound of a score column: the declared bounds, else threshold keys that
    end in ``min`` / ``max``; None where it has none."""
    kinds = list(declared_bounds(col, thresholds).values()) or \
        [("min" if k.endswith("min") else "max", v) for k, v in thresholds_for(col, thresholds).items()
         if k.endswith(("min", "max"))]
    lo = [v for kind, v in kinds if kind == "min"]
    hi = [v for kind, v in kinds if kind == "max"]
    return (max(lo) if lo else None, min(hi) if hi else None)


def bounds_text(lo: float | None, hi: float | None) -> str:
    """``0.01-0.15``, ``>= 0.341``, ``<= 0.5`` or empty."""
    if lo is not None and hi is not None:
        return f"{score_text(lo)}–{score_text(hi)}"
    if lo is not None:
        return f"≥ {score_text(lo)}"
    if hi is not None:
        return f"≤ {score_text(hi)}"
    return ""
