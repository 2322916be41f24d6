"""The filters in cascade order (cheapest per rejected window first), their score columns
and default thresholds.

This module is what ``curate select`` uses, so it imports no filter module and no model:
thresholds are checked declaratively from ``BOUNDS`` (column, threshold key, min/max), which
``tests/filters/test_filters.py`` proves equivalent to every filter module's own ``keep``. Changing a
threshold and re-selecting therefore never touches torch.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

from manifests.schemas import FILTERS, SCORE_COLUMNS

#: the order of runs whose run.json predates the ``order`` recipe option (the windows
#: schema's column order): their skip notes were written in this order
LEGACY_ORDER: tuple[str, ...] = FILTERS

#: default cascade order, by cost per window at real model sizes with feature reuse
#: (``benchmarks/bench_flops.py`` at VGGSS's shot structure): arithmetic first, then CLIP
#: ViT-B/32 (~59 GFLOP per window), the sync classifier (~80), ImageBind-huge last (~512: 335
#: per image). Every gating filter must pass for a window to be kept, so the order changes
#: what is computed, never which windows are kept.
DEFAULT_ORDER: tuple[str, ...] = ("pixel_diff", "amplitude", "clip_diff", "sync", "imagebind")
ORDER: tuple[str, ...] = DEFAULT_ORDER

#: default thresholds, equal to each module's THRESHOLDS (checked by the tests)
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "pixel_diff": {"min": 0.01, "max": 0.15},
    "amplitude": {"min": 0.03},
    "clip_diff": {"min": 0.17, "max": 0.55},
    "imagebind": {"ia_min": 0.15, "it_min": 0.22},
    "sync": {"a2v_min": 0.341, "v2a_min": 0.341},
}

#: (score column, threshold key, "min" | "max") per filter; every bound is inclusive
BOUNDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "pixel_diff": (("pixel_diff", "min", "min"), ("pixel_diff", "max", "max")),
    "amplitude": (("amplitude", "min", "min"),),
    "clip_diff": (("clip_diff", "min", "min"), ("clip_diff", "max", "max")),
    "imagebind": (("imagebind_ia", "ia_min", "min"), ("imagebind_it", "it_min", "min")),
    "sync": (("sync_a2v", "a2v_min", "min"), ("sync_v2a", "v2a_min", "min")),
}

#: filters whose scores need a model (the others are arithmetic on the grid) -> that model
MODEL_FILTERS = {"clip_diff": "clip", "imagebind": "imagebind", "sync": "sync"}
# filters whose scores read the Kaldi fbank (decoding.mel): its FBANK_ID is in their fingerprint
FBANK_FILTERS = ("imagebind", "sync")

SKIP_REJECTED = "skipped: rejected by "
SKIP_NO_MODEL = "skipped: no {} model"


def cascade_order(order: Sequence[str] | None = None) -> tuple[str, ...]:
    """``order`` checked to be a permutation of the filters (None: ``DEFAULT_ORDER``)."""
    if order is None:
        return DEFAULT_ORDER
    out = tuple(order)
    if sorted(out) != sorted(FILTERS):
        raise ValueError(f"cascade order {list(out)} (recipe option 'order') must list each of "
                         f"{list(FILTERS)} exactly once")
    return out


def default_thresholds() -> dict[str, dict[str, float]]:
    return copy.deepcopy(DEFAULT_THRESHOLDS)


def columns(name: str) -> tuple[str, ...]:
    return SCORE_COLUMNS[name]


def note_column(name: str) -> str:
    return f"{name}_note"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def passes(name: str, row: Mapping[str, Any], thresholds: Mapping[str, Mapping[str, float]]) -> bool | None:
    """True / False when the filter's scores in ``row`` pass / fail; None when a score is missing."""
    thr = thresholds.get(name, {})
    values = {c: row.get(c) for c in SCORE_COLUMNS[name]}
    if any(_missing(v) for v in values.values()):
        return None
    for col, key, kind in BOUNDS[name]:
        bound = thr.get(key)
        if bound is None:
            continue
        v = values[col]
        if (kind == "min" and v < bound) or (kind == "max" and v > bound):
            return False
    return True


def check(row: Mapping[str, Any], thresholds: Mapping[str, Mapping[str, float]],
          gate: set[str] | frozenset[str] | None = None,
          order: Sequence[str] | None = None) -> tuple[bool, str | None]:
    """(keep, first failing gating filter in cascade ``order`` | None). A missing score fails
    its filter."""
    gate = set(FILTERS) if gate is None else set(gate)
    for name in cascade_order(order):
        if name in gate and not passes(name, row, thresholds):
            return False, name
    return True, None


def is_cascade_skip(note: str | None) -> bool:
    return bool(note) and note.startswith(SKIP_REJECTED)
