"""What runs inside Ray's worker processes: the stage function built once per process
(``_task_body`` for a stateless item, ``_StageActor`` for a stateful stage's actor),
``_prepare_body`` (the CPU step before an actor call), and ``_SharedActor``, the one actor
holding a stage run's shared object (``curate.execution.shared``)."""
from __future__ import annotations

import logging
from typing import Any

from curate.execution.ray.guard import start_watchdog
from curate.execution.shared import Handle, sharing
from curate.execution.spec import FAULT_KEY, NODE_KEY, Item, Outputs, StageSpec, safe_call
from manifests.faults import EnvironmentFault, fault_of

log = logging.getLogger(__name__)

#: per worker process: stage functions already built (options, imports, models)
_TASK_FNS: dict[str, Any] = {}


def _cached(spec: StageSpec, which: str):
    key = f"{which}:{spec.name}:{(spec.prepare if which == 'prep' else spec.factory)!r}"
    if key not in _TASK_FNS:
        _TASK_FNS[key] = (spec.prepare if which == "prep" else spec.factory)()
    return _TASK_FNS[key]


def _handles(actors: dict[str, Any] | None) -> dict[str, Handle]:
    """The worker's handles on the stage run's shared objects (one Ray actor each)."""
    import ray
    return {name: Handle(lambda method, *args, a=actor: ray.get(a.call.remote(method, *args)))
            for name, actor in (actors or {}).items()}


_NODE: list[str] = []


def _with_node(outputs: Outputs) -> Outputs:
    """Tag a result with the Ray node that computed it (kept in its checkpoint record, so a
    cluster run shows where its work ran)."""
    if not _NODE:
        import ray
        _NODE.append(ray.get_runtime_context().get_node_id())
    return {**outputs, NODE_KEY: [{"node": _NODE[0]}]}


#: key of the result a worker returns when the stage function could not be built
SETUP_ERROR = "_setup_error"


def _setup_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _task_body(spec: StageSpec, item: Item, driver_pid: int | None,
               shared: dict[str, Any] | None = None) -> Outputs:
    """One stateless item; ``shared``: the actors of the stage run's shared objects."""
    start_watchdog(driver_pid)
    try:
        fn = _cached(spec, "fn")
    except Exception as e:  # noqa: BLE001 - the stage cannot run at all: the driver stops it
        return {SETUP_ERROR: _setup_text(e)}
    try:
        with sharing(_handles(shared)):
            return _with_node(safe_call(fn, spec, item))
    except EnvironmentFault as e:      # the driver stops the stage with it (spec.raise_fault)
        return {FAULT_KEY: str(e)}


def _prepare_body(spec: StageSpec, item: Item, driver_pid: int | None) -> tuple[str | None, Any]:
    """(error or None, payload): the small status travels apart from the big payload."""
    start_watchdog(driver_pid)
    try:
        return None, _cached(spec, "prep")(item)
    except Exception as e:  # noqa: BLE001 - a bad input is that item's recorded failure
        fault = fault_of(e)
        if fault is not None:
            return {FAULT_KEY: str(fault)}, None
        return f"prepare: {type(e).__name__}: {e}", None


class _StageActor:
    """Holds the stage function (models) for the whole stage run."""

    def __init__(self, spec: StageSpec, driver_pid: int | None, shared: dict[str, Any] | None = None):
        start_watchdog(driver_pid)
        self.spec = spec
        self.shared = shared
        self.setup_error: str | None = None
        try:
            self.fn = spec.factory()
        except Exception as e:  # noqa: BLE001 - reported with its text, not as a dead actor
            self.setup_error = _setup_text(e)

    def call(self, items: list[Item], *payloads: Any) -> list[Outputs] | dict:
        if self.setup_error is not None:
            return {SETUP_ERROR: self.setup_error}
        try:
            with sharing(_handles(self.shared)):
                return self._call(items, payloads)
        except EnvironmentFault as e:     # the driver stops the stage with it
            return {FAULT_KEY: str(e)}

    def _call(self, items: list[Item], payloads: tuple) -> list[Outputs]:
        if self.spec.prepare is None:
            return [_with_node(safe_call(self.fn, self.spec, it)) for it in items]
        batch = getattr(self.fn, "batch", None)   # fn.batch(items, payloads): one call for all
        if batch is not None and len(items) > 1:
            try:
                outs = batch(list(items), list(payloads))
                if len(outs) == len(items):
                    return [_with_node(o) for o in outs]
                log.warning("%s: batch gave %d results for %d items", self.spec.name, len(outs), len(items))
            except Exception as e:  # noqa: BLE001 - which item? one at a time: a bad one fails alone
                if fault_of(e) is not None:
                    raise fault_of(e) from e
                log.warning("%s: batch of %d failed (%s): one item at a time", self.spec.name,
                            len(items), e)
        return [_with_node(safe_call(self.fn, self.spec, it, p)) for it, p in zip(items, payloads)]


class _SharedActor:
    """One shared object of a stage run (``StageSpec.shared``) for all its workers."""

    def __init__(self, make: Any):
        self.obj = make()

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.obj, method)(*args)

    def status(self) -> dict[str, Any]:
        return self.obj.status()
