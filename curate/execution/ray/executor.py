"""The Ray executor: one streaming run per stage (``RayExecutor.run``)."""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Any, Iterator

from curate.execution.ray import driver, session
from curate.execution.ray.driver import SharedWatch, _start_clocks, _task_result, _wait_ready
from curate.execution.ray.pool import _ActorPool
from curate.execution.ray.worker import _SharedActor, _StageActor, _task_body
from curate.execution.spec import Item, Outputs, StageSpec, WorkerSetupError

log = logging.getLogger(__name__)

class RayExecutor:
    """Streams each stage through Ray; Ray starts on the first stage with work to do."""

    def __init__(self, workers: int = 2, address: str | None = None, gpus: float | None = None):
        session.quiet_ray_env(local=not address)
        self.workers = max(1, int(workers))
        self.address = address
        self.gpus_opt = gpus
        self.started = 0            # stage runs that submitted Ray work
        self._driver_pid: int | None = None
        self._reaper: Any = None
        self.cpus = 0.0
        self.gpus = 0.0

    # -- setup
    def _ensure_ray(self) -> None:
        import ray

        if not ray.is_initialized():
            reaper = session.init_ray(self.address, self.gpus_opt)
            self._reaper = reaper or self._reaper
        # a worker may only watch a driver on its own machine: local Ray only
        self._driver_pid = None if self.address else os.getpid()
        res = ray.cluster_resources()
        self.cpus = float(res.get("CPU", 1.0))
        self.gpus = float(res.get("GPU", 0.0)) if self.gpus_opt is None else float(self.gpus_opt)
        log.info("ray: %s CPUs, %s GPUs, %d workers", self.cpus, self.gpus, self.workers)

    def _slots(self, spec: StageSpec) -> int:
        return max(1, int(spec.concurrency or self.workers))

    def _cpus_per(self, slots: int) -> float:
        # fractional CPUs so that N slots run at once even on a 2-core machine; whole-CPU
        # requests would starve a streaming stage there
        return max(min(self.cpus / slots, 1.0), 0.01)

    @staticmethod
    def _shared_actors(spec: StageSpec) -> dict[str, Any]:
        """One actor per shared object the stage declares (``curate.execution.shared``)."""
        import ray
        return {name: ray.remote(num_cpus=0)(_SharedActor).remote(s.make)
                for name, s in (spec.shared or {}).items()}

    def run(self, spec: StageSpec, items: list[Item]) -> Iterator[tuple[Item, Outputs]]:
        if not items:
            return iter(())
        self._ensure_ray()
        self.started += 1
        if spec.stateful:
            return self._run_actors(spec, items)
        return self._run_tasks(spec, items)

    # -- stateless: one task per item
    def _run_tasks(self, spec: StageSpec, items: list[Item]) -> Iterator[tuple[Item, Outputs]]:
        import ray

        slots = min(self._slots(spec), len(items))
        remote = ray.remote(_task_body).options(
            num_cpus=self._cpus_per(slots), max_retries=max(spec.max_tries - 1, 0),
            retry_exceptions=False)
        spec_ref = ray.put(spec)
        watch = SharedWatch(spec, self._shared_actors(spec))
        todo = deque(items)
        # Two items per slot in flight: when a worker finishes, the next item is already
        # queued at the owner and reuses the worker's lease at once (no driver round trip,
        # no raylet lease per item). Ray sends a task only to an idle worker, so a queued item
        # never waits behind a hung one. An item's timeout clock starts when it is among the
        # oldest ``slots`` in flight (when it can have started), not at submission.
        inflight: dict[Any, list] = {}       # ref -> [item, clock start or None], FIFO
        try:
            yield from self._task_loop(spec, todo, inflight, slots, remote, spec_ref, watch)
        except WorkerSetupError:
            # every worker fails to build the stage function alike, so no item in flight runs:
            # nothing to stop. Cancelling lease requests while Ray still starts their workers
            # is a race its raylet does not always survive (it ends, and a driver connected
            # to it exits with status 1, printing nothing), so none is cancelled here
            raise
        except BaseException:
            # the stage stops (a fault of the machine, an interruption): nothing it started
            # may go on writing
            for ref in inflight:
                try:
                    ray.cancel(ref, force=True)
                except Exception as e:  # noqa: BLE001 - finished, or Ray already shut down
                    log.debug("cancel: %s", e)
            raise
        else:
            watch.poll(final=True)
        finally:
            watch.kill()

    def _task_loop(self, spec: StageSpec, todo: deque, inflight: dict, slots: int, remote: Any,
                   spec_ref: Any, watch: SharedWatch) -> Iterator[tuple[Item, Outputs]]:
        import ray
        while todo or inflight:
            while todo and len(inflight) < 2 * slots:
                it = todo.popleft()
                inflight[remote.remote(spec_ref, it, self._driver_pid, watch.actors)] = [it, None]
            _start_clocks(inflight, slots, watch)
            running = {r: (v[0], v[1]) for r, v in inflight.items() if v[1] is not None}
            for ref in _wait_ready(list(inflight), self._wait_s(spec, running)):
                it, _t = inflight.pop(ref)
                yield it, _task_result(spec, it, ref)
            for ref, (it, t0) in list(self._overdue(spec, running)):
                if ref not in inflight:
                    continue
                ray.cancel(ref, force=True)       # kills the worker: a hung decode ends here
                inflight.pop(ref)
                yield it, spec.on_error(it, f"timeout: no result after {spec.timeout_s:g} s")

    @staticmethod
    def _wait_s(spec: StageSpec, inflight: dict) -> float:
        if not spec.timeout_s or not inflight:
            return 1.0
        oldest = min(t for _, t in inflight.values())
        return max(0.01, min(1.0, oldest + spec.timeout_s - time.monotonic()))

    @staticmethod
    def _overdue(spec: StageSpec, inflight: dict, scale: Any = None):
        if not spec.timeout_s:
            return []
        now = time.monotonic()
        return [(r, v) for r, v in inflight.items()
                if now - v[1] > spec.timeout_s * (scale(v) if scale else 1)]

    # -- stateful: actors for the whole stage, optional prepare tasks in front
    def _pool_size(self, spec: StageSpec, n_items: int) -> tuple[int, float]:
        n_gpu = spec.num_gpus if self.gpus > 0 else 0.0
        size = self._slots(spec) if not n_gpu else max(1, int(self.gpus / n_gpu))
        return max(1, min(size, n_items)), n_gpu

    def _new_actor(self, spec_ref: Any, cpu: float, n_gpu: float, shared: dict[str, Any]):
        import ray
        cls = ray.remote(_StageActor).options(num_cpus=cpu, num_gpus=n_gpu or None,
                                              max_restarts=0, max_task_retries=0)
        return cls.remote(spec_ref, self._driver_pid, shared)

    def _run_actors(self, spec: StageSpec, items: list[Item]) -> Iterator[tuple[Item, Outputs]]:
        pool = _ActorPool(self, spec, items, SharedWatch(spec, self._shared_actors(spec)))
        try:
            yield from pool.run()
            pool.watch.poll(final=True)
        finally:
            pool.close()

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        session.stop_reaper(self._reaper)
        self._reaper = None
