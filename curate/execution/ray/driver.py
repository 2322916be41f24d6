"""The driver's side of Ray calls shared by the task loop and the actor pool: waiting,
getting (signals deferred), worker deaths and setup errors as recorded reasons, item clocks,
and the poll of the shared objects' states."""
from __future__ import annotations

import logging
import time
from typing import Any

from curate.execution.shared import Shared, paused_s
from curate.execution.spec import Item, Outputs, StageSpec, WorkerSetupError, raise_fault
from curate.execution.ray.worker import SETUP_ERROR

log = logging.getLogger(__name__)

def _wait_ready(refs: list, timeout: float) -> list:
    """Every ref that is ready now, waiting up to ``timeout`` for the first: one driver
    round per batch of finished items, not per item."""
    import ray
    from curate.execution.interrupt import deferred
    with deferred():      # a signal during Ray's wait is raised after it (curate.execution.interrupt)
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
    return ready


def _get(ref: Any) -> Any:
    import ray
    from curate.execution.interrupt import deferred
    with deferred():
        return ray.get(ref)


def _raise_setup_error(spec: StageSpec, result: Any) -> None:
    """A worker whose stage function (models) could not be built stops the stage with the
    exception's text: every other worker would fail the same way, and retrying a dead actor
    would only hide why."""
    raise_fault(result)
    if isinstance(result, dict) and SETUP_ERROR in result:
        raise WorkerSetupError(f"{spec.name}: a worker could not start: {result[SETUP_ERROR]}")


def _death_reason(e: BaseException) -> str:
    import ray.exceptions as rex
    if isinstance(e, rex.OutOfMemoryError):
        return "worker killed (out of memory)"
    if isinstance(e, (rex.WorkerCrashedError, rex.ActorDiedError, rex.RayActorError)):
        return "worker died (signal or crash)"
    return f"worker error ({type(e).__name__})"


def _start_clocks(inflight: dict[Any, list], slots: int, watch: SharedWatch) -> None:
    """Start the timeout clock of the oldest ``slots`` items in flight (the ones that can
    have started); time a shared object held every worker is no item's."""
    now = time.monotonic()
    for k, v in enumerate(inflight.values()):
        if k >= slots:
            break
        if v[1] is None:
            v[1] = now
    held = watch.poll()
    if held:
        for v in inflight.values():
            if v[1] is not None:
                v[1] += held


def _task_result(spec: StageSpec, it: Item, ref: Any) -> Outputs:
    """A finished task's outputs, or its failure rows when its worker died every try."""
    import ray
    try:
        res = _get(ref)
    except ray.exceptions.RayError as e:
        msg = f"{_death_reason(e)} after {spec.max_tries} tries"
        log.warning("%s: %s on %s", spec.name, msg, it.get("key"))
        return spec.on_error(it, msg)
    _raise_setup_error(spec, res)
    return res


class SharedWatch:
    """Driver side of a stage run's shared objects (``curate.execution.shared``): polls each
    one's ``status()`` once per loop round, hands it to its ``on_state`` and says how long the
    objects held every worker since the last poll (that time is no item's timeout)."""

    def __init__(self, spec: StageSpec, actors: dict[str, Any]):
        self.shared: dict[str, Shared] = dict(spec.shared or {})
        self.actors = actors
        self.paused = {name: 0.0 for name in actors}

    def poll(self, final: bool = False) -> float:
        """Seconds held since the last poll (the longest over the objects)."""
        import ray
        from curate.execution.interrupt import deferred
        held = 0.0
        for name, actor in self.actors.items():
            try:
                with deferred():    # as every Ray call: a signal is raised after it, never lost
                    st = ray.get(actor.status.remote(), timeout=10)
            except Exception as e:  # noqa: BLE001 - watching must never stop the stage
                log.debug("%s state: %s", name, e)
                continue
            held = max(held, paused_s(st) - self.paused[name])
            self.paused[name] = paused_s(st)
            if self.shared[name].on_state is not None:
                self.shared[name].on_state(st, final)
        return max(held, 0.0)

    def kill(self) -> None:
        import ray
        for actor in self.actors.values():
            try:
                ray.kill(actor, no_restart=True)
            except Exception as e:  # noqa: BLE001 - already gone, or Ray shut down
                log.debug("kill: %s", e)
        self.actors = {}
