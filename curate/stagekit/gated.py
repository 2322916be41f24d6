"""Rate limiting and the health gate around a per-item function (the download's).

The executor only runs items; a stage that talks to a site declares one health control for
all its workers as a shared object (``health_shared``: rate cap, pause on 429 / 5xx, stop on
bot checks; ``curate.ops.health``) and wraps its per-item function with ``gated``, which hands
each call a ``Gate`` over that one control.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

from curate.execution.shared import Shared, shared
from curate.execution.spec import Item, Outputs
from curate.ops.health import Gate, HealthControl, StateRecorder, stage_config

#: the name of the health control among a stage's shared objects
HEALTH = "health"


def health_shared(health: dict[str, Any] | None, rate_per_s: float | None,
                  out: str | Path | None = None) -> dict[str, Shared] | None:
    """The stage's shared health control (None when it has neither options nor a rate);
    with ``out``, each new state is kept in ``<out>/work/download/health.json``."""
    config = stage_config(health, rate_per_s)
    if config is None:
        return None
    make = functools.partial(HealthControl.from_config, config)
    return {HEALTH: Shared(make, StateRecorder(out) if out is not None else None)}


def gated(fn: Callable[[Item, Gate | None], Outputs]) -> Callable[[Item], Outputs]:
    """``fn(item, gate)`` as a per-item function: ``gate`` asks the stage run's shared health
    control (None when the stage declared none)."""
    @functools.wraps(fn)
    def run(item: Item) -> Outputs:
        control = shared(HEALTH)
        gate = None if control is None else Gate(control.acquire, control.report)
        return fn(item, gate)
    return run
