"""A run, resolved once: ``Run`` is the typed, read-only view of ``run.json`` that stages,
selection and reports read, instead of each re-deriving thresholds, gating, the cascade
order, the models and the engine options from the recipe dict.

``resolve(run)`` builds it from a run dict (``curate.config.run_state``: recipe, options,
``--set`` overrides). The build (``curate.build``) resolves its run once when it starts and
passes the ``Run`` to every stage in its ``Context``; it resolves again only after a stage's
recorded outputs changed the run (train-sync's checkpoint). Readers outside a build (stats,
the report) call ``resolve`` themselves; it keeps one object per content in the process.
A ``Run`` is read-only and not picklable (``MappingProxyType``): a worker that needs it
rebuilds it with ``resolve(run.as_dict())``.
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
    (the engine block with its defaults). Read-only: mappings are ``MappingProxyType``.
    A run whose models do not resolve (a weight missing) still resolves: ``gate``,
    ``score_only`` and ``models`` then raise that error when read, so a stage that scores
    or selects fails as before and one that does not (reproduce's) runs."""
    recipe: Mapping[str, Any]
    options: Mapping[str, Any]
    thresholds: Mapping[str, Mapping[str, float]]
    order: tuple[str, ...]
    engine: Mapping[str, Any]
    #: (gate, score_only, models), or the error that resolving them raised
    resolved_models: tuple[tuple[str, ...], Mapping[str, str], Mapping[str, Mapping[str, Any]]] | str
    overrides: tuple[str, ...] = ()
    #: the whole run.json content it was resolved from, as JSON (``as_dict``)
    state: str = "{}"

    def _models(self) -> tuple:
        if isinstance(self.resolved_models, str):
            raise ValueError(self.resolved_models)
        return self.resolved_models

    @property
    def gate(self) -> tuple[str, ...]:
        return self._models()[0]

    @property
    def score_only(self) -> Mapping[str, str]:
        return self._models()[1]

    @property
    def models(self) -> Mapping[str, Mapping[str, Any]]:
        return self._models()[2]
    # Conventions (issue 24 item 4) join here as a resolved field of the models, so that a
    # stage reads ``run.models[f]`` with its convention instead of calling ``with_conventions``.

    def as_dict(self) -> dict[str, Any]:
        """A fresh plain copy of the run dict (run.json's content): for helpers shared with
        readers outside a build, and the serialisable form a worker rebuilds a ``Run`` from."""
        return json.loads(self.state)

    def threshold_dict(self) -> dict[str, dict[str, float]]:
        """The thresholds as plain dicts (what the selection functions and workers take)."""
        return {f: dict(t) for f, t in self.thresholds.items()}

    def with_conventions(self) -> dict[str, dict[str, Any]]:
        """The models with each one's preprocessing convention (each weight file version is
        read once per process, ``curate.config.models.add_conventions``)."""
        from curate.config.models import add_conventions
        return add_conventions({f: dict(m) for f, m in self.models.items()}, dict(self.options))


def _key(run: Mapping[str, Any]) -> str:
    return json.dumps(run, sort_keys=True, default=str)


def resolve(run: Mapping[str, Any]) -> Run:
    """The ``Run`` of a run dict (the same object for the same content in this process)."""
    key = _key(run)
    if key not in _RESOLVED:
        _RESOLVED[key] = _resolve(run, key)
    return _RESOLVED[key]


def _resolve(run: Mapping[str, Any], state: str) -> Run:
    from curate.config.models import gating, resolve_models
    from curate.config.run_state import cascade_order, engine_options
    from curate.config.thresholds import run_thresholds

    overrides = list(run.get("selection_overrides") or [])
    try:
        gate, score_only = gating(run)
        models: Any = (tuple(gate), _frozen(score_only), _frozen(resolve_models(run, convention=False)))
    except ValueError as e:      # a weight missing: raised where the models are read
        models = str(e)
    return Run(recipe=_frozen(run["recipe"]), options=_frozen(run.get("options") or {}),
               thresholds=_frozen(run_thresholds(run)), order=tuple(cascade_order(run)),
               engine=_frozen(engine_options(run)), resolved_models=models, overrides=tuple(overrides),
               state=state)
