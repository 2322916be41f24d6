"""A run, resolved once: ``Run`` is the typed, read-only view of ``run.json`` that stages,
selection and reports read, instead of each re-deriving thresholds, gating, the cascade
order, the models and the engine options from the recipe dict.

``resolve(run)`` builds it from a run dict (``curate.config.run_state``: recipe, options,
``--set`` overrides) and keeps it per process for the same content: a build resolves its
run once when it starts, and every later ``resolve`` of the same run (a stage, the windows
table, the fingerprints, stats) gets the same object without reading a weight file again.
The models are resolved without their conventions (no weight file read); ``with_conventions``
adds them (each weight file version read once per process).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

#: resolved runs of this process, by content
_RESOLVED: dict[str, "Run"] = {}


def _frozen(x: Any) -> Any:
    """A read-only deep copy: mappings become ``MappingProxyType``, lists tuples."""
    if isinstance(x, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in x.items()})
    if isinstance(x, (list, tuple)):
        return tuple(_frozen(v) for v in x)
    return x


@dataclass(frozen=True)
class Run:
    """What a run is configured by, resolved: ``thresholds`` (filter defaults, the recipe's,
    then ``--set``), ``gate`` / ``score_only`` (which filters stop windows and why the others
    do not), ``order`` (the cascade), ``models`` (filter -> model, weights, random), ``engine``
    (the engine block with its defaults). Read-only: mappings are ``MappingProxyType``."""
    recipe: Mapping[str, Any]
    options: Mapping[str, Any]
    thresholds: Mapping[str, Mapping[str, float]]
    gate: tuple[str, ...]
    score_only: Mapping[str, str]
    order: tuple[str, ...]
    models: Mapping[str, Mapping[str, Any]]
    engine: Mapping[str, Any]
    overrides: tuple[str, ...] = ()

    def threshold_dict(self) -> dict[str, dict[str, float]]:
        """The thresholds as plain dicts (what the selection functions and workers take)."""
        return {f: dict(t) for f, t in self.thresholds.items()}

    def with_conventions(self) -> dict[str, dict[str, Any]]:
        """The models with each one's preprocessing convention (each weight file version is
        read once per process, ``curate.config.models.add_conventions``)."""
        from curate.config.models import add_conventions
        return add_conventions({f: dict(m) for f, m in self.models.items()}, dict(self.options))


def _key(run: Mapping[str, Any]) -> str:
    return json.dumps([run["recipe"], run.get("options") or {}, run.get("selection_overrides") or []],
                      sort_keys=True, default=str)


def resolve(run: Mapping[str, Any]) -> Run:
    """The ``Run`` of a run dict (the same object for the same content in this process)."""
    key = _key(run)
    if key not in _RESOLVED:
        _RESOLVED[key] = _resolve(run)
    return _RESOLVED[key]


def _resolve(run: Mapping[str, Any]) -> Run:
    from curate.config.models import gating, resolve_models
    from curate.config.run_state import cascade_order, engine_options
    from curate.config.thresholds import thresholds

    overrides = list(run.get("selection_overrides") or [])
    gate, score_only = gating(run)
    return Run(recipe=_frozen(run["recipe"]), options=_frozen(run.get("options") or {}),
               thresholds=_frozen(thresholds(run, overrides)), gate=tuple(gate),
               score_only=_frozen(score_only), order=tuple(cascade_order(run)),
               models=_frozen(resolve_models(run, convention=False)),
               engine=_frozen(engine_options(run)), overrides=tuple(overrides))
