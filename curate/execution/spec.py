"""What a stage declares to an executor (``StageSpec``), the item and output types, and the
one wrapper that turns an item's exception into its failure rows."""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from curate.execution.shared import Shared
from manifests.faults import EnvironmentFault, fault_of

log = logging.getLogger(__name__)

Item = dict[str, Any]
Outputs = dict[str, list[dict[str, Any]]]
#: builds the per-item function once per worker (models load once per actor)
Factory = Callable[[], Callable[..., Outputs]]


@dataclass
class StageSpec:
    """What a stage declares to the engine.

    ``factory()`` runs once per worker (task worker process or actor) and returns
    ``fn(item) -> outputs`` (or ``fn(item, prepared)`` when ``prepare`` is set).
    ``prepare`` (optional): a factory of a CPU function ``item -> payload`` run as stateless
    tasks before ``fn`` (decode -> score); the payload travels through the object store.
    """
    name: str
    factory: Factory
    #: builds the failure outputs of an item whose function raised: nothing is lost
    on_error: Callable[[Item, str], Outputs]
    stateful: bool = False       # True: long-lived actors (models load once per actor)
    num_gpus: float = 0.0        # per actor, when the cluster has GPUs
    batch_size: int = 1          # items per actor call (stateful)
    params: Any = None           # recipe parameters / model ids: part of every fingerprint
    prepare: Factory | None = None
    concurrency: int | None = None   # parallel items (default: the executor's workers)
    timeout_s: float | None = None   # per item (per actor call for batches); None: no limit
    max_tries: int = 2           # tries of an item whose worker died (signal, OOM kill)
    #: objects one per stage run for all its workers (``curate.execution.shared``: e.g. the
    #: download health control); an item's function reaches one with ``shared(name)``
    shared: dict[str, Shared] | None = None


class WorkerSetupError(ValueError):
    """A worker could not build the stage function (e.g. a model file that does not load):
    the stage stops with the exception's text instead of failing every item."""


class Executor(Protocol):
    def run(self, spec: StageSpec, items: list[Item]) -> Iterator[tuple[Item, Outputs]]: ...


def safe_call(fn: Callable[..., Outputs], spec: StageSpec, item: Item, *args: Any) -> Outputs:
    """Run one item; an unexpected exception becomes that item's recorded failure, except a
    fault of the machine (``manifests.faults``: a full disk, a missing tool), which stops the
    stage: every other item would fail the same way, and none is the data's fault."""
    try:
        return fn(item, *args)
    except Exception as e:  # noqa: BLE001 - one bad item must never kill the stage
        fault = fault_of(e)
        if fault is not None:
            if fault is e:
                raise
            raise fault from e
        log.warning("%s failed on %s: %s", spec.name, item.get("key"), e)
        log.debug("%s", traceback.format_exc())
        return spec.on_error(item, f"{type(e).__name__}: {e}")


#: reserved output key under which a Ray worker names its node (popped into the record)
NODE_KEY = "_node"
#: reserved output key under which a Ray worker hands the driver an ``EnvironmentFault``
FAULT_KEY = "_environment_fault"


def raise_fault(result: Any) -> None:
    """Driver side: a worker's result that carries an environment fault stops the stage."""
    if isinstance(result, dict) and FAULT_KEY in result:
        raise EnvironmentFault(result[FAULT_KEY])
