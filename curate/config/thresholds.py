"""The thresholds in force: filter defaults, the recipe's, then ``--set`` overrides."""
from __future__ import annotations

import copy
import math
from typing import Any, Iterable, Mapping

from filters import registry

Thresholds = dict[str, dict[str, float]]

#: a clip-level gate a ``--set`` may name beside the filters' thresholds (recipe key ``desync``)
DESYNC_KEY = "desync.max"


def parse_overrides(overrides: Iterable[str], base: Mapping[str, Mapping[str, float]] | None = None
                    ) -> Thresholds:
    """``["clip_diff.max=0.6", "sync.a2v_min=0.3"]`` applied over ``base`` (default thresholds)."""
    out = copy.deepcopy(dict(base)) if base is not None else registry.default_thresholds()
    for item in overrides:
        if is_desync_override(item):
            _desync_value(item)          # checked here; read by ``desync_max``
            continue
        name, key, value = _parse_one(item)
        out.setdefault(name, {})[key] = value
    for name, thr in out.items():
        lo, hi = thr.get("min"), thr.get("max")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"threshold {name}: min {lo:g} > max {hi:g}")
    return out


def is_desync_override(item: str) -> bool:
    """Whether a ``--set`` names the clip-level DeSync gate (``desync.max``), not a filter."""
    return str(item).partition("=")[0].strip() == DESYNC_KEY


def _desync_value(item: str) -> float | None:
    """The value of ``desync.max=V`` (seconds; ``none`` turns the gate off)."""
    rhs = str(item).partition("=")[2].strip()
    if rhs.lower() in ("none", "off"):
        return None
    try:
        value = float(rhs)
    except ValueError:
        raise ValueError(f"{item!r}: desync.max takes seconds (or none), e.g. desync.max=0.4") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{item!r}: desync.max must be a finite number of seconds >= 0")
    return value


def desync_max(run: Mapping[str, Any]) -> float | None:
    """The run's DeSync gate (s; None: off): the recipe's ``desync.max``, unless a recorded
    ``--set desync.max=V`` (``selection_overrides``, the last one) says otherwise."""
    value = (run["recipe"].get("desync") or {}).get("max")
    for item in run.get("selection_overrides") or ():
        if is_desync_override(item):
            value = _desync_value(item)
    return None if value is None else float(value)


def _parse_one(item: str) -> tuple[str, str, float]:
    known = {n: sorted(t) for n, t in registry.DEFAULT_THRESHOLDS.items()}
    lhs, sep, rhs = str(item).partition("=")
    name, dot, key = lhs.strip().partition(".")
    if not sep or not dot:
        raise ValueError(f"threshold override {item!r} is not FILTER.KEY=VALUE, e.g. clip_diff.max=0.6")
    if name not in known:
        raise ValueError(f"unknown filter {name!r} in {item!r}; filters: {list(registry.ORDER)}")
    if key not in known[name]:
        raise ValueError(f"unknown threshold {key!r} for {name} in {item!r}; keys: {known[name]}")
    try:
        value = float(rhs)
    except ValueError:
        raise ValueError(f"threshold value in {item!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"threshold value in {item!r} is not finite")
    return name, key, value


def thresholds(run: dict[str, Any], overrides: list[str] | None = None) -> dict[str, dict[str, float]]:
    th = registry.default_thresholds()
    for f, vals in run["recipe"].get("thresholds", {}).items():
        th.setdefault(f, {}).update(vals)
    # the overrides go over the recipe's thresholds (parse_overrides' default base would put
    # the filter defaults back over them)
    return parse_overrides(overrides, base=th) if overrides else th


def run_thresholds(run: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """A run's thresholds: the filter defaults, the recipe's, then the ``--set`` overrides
    the run recorded (``selection_overrides``). ``curate.config.run.Run.thresholds`` and the
    report read them from here."""
    return thresholds(run, list(run.get("selection_overrides") or []))
