"""Ray orchestration: the only module of the project that imports Ray.

With no address it starts a local Ray (the embedded default); ``--address`` joins a cluster.
Stateless stages (download, shot split, cutting) run as Ray Data tasks; model stages run as
actor pools that load their models once per actor, with ``num_gpus`` when GPUs exist.
Items travel as JSON strings so that rows with nulls never trip Arrow's type inference.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterable

from curate.runner import Item, Outputs, StageSpec, safe_call

log = logging.getLogger(__name__)


def _quiet_ray_env() -> None:
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


class _ActorFn:
    """Ray Data callable class: builds the stage function once per actor."""

    def __init__(self, spec: StageSpec):
        self.spec = spec
        self.fn = spec.factory()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        return {"o": [json.dumps(safe_call(self.fn, self.spec, json.loads(p))) for p in batch["p"]]}


#: per worker process: stage functions already built, so a task does not rebuild its
#: function (options, imports) for every batch
_TASK_FNS: dict[str, Any] = {}


def _task_fn(spec: StageSpec):
    key = f"{spec.name}:{spec.factory!r}"

    def run(batch: dict[str, Any]) -> dict[str, list[str]]:
        if key not in _TASK_FNS:
            _TASK_FNS[key] = spec.factory()
        fn = _TASK_FNS[key]
        return {"o": [json.dumps(safe_call(fn, spec, json.loads(p))) for p in batch["p"]]}
    return run


class RayExecutor:
    """Runs stage chunks on Ray Data."""

    def __init__(self, workers: int = 2, address: str | None = None, gpus: float | None = None):
        _quiet_ray_env()
        import ray

        self.workers = max(1, int(workers))
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, num_gpus=gpus, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
        res = ray.cluster_resources()
        self.cpus = float(res.get("CPU", 1.0))
        self.gpus = float(res.get("GPU", 0.0)) if gpus is None else float(gpus)
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        log.info("ray: %s CPUs, %s GPUs, %d workers", self.cpus, self.gpus, self.workers)

    def _cpus_per_worker(self) -> float:
        # fractional CPUs so that --workers N runs N tasks/actors even on a 2-core machine;
        # whole-CPU requests starve a streaming pipeline there
        return max(min(self.cpus / self.workers, 1.0), 0.05)

    def map(self, spec: StageSpec, items: list[Item]) -> Iterable[Outputs]:
        import ray.data

        if not items:
            return []
        ds = ray.data.from_items([{"p": json.dumps(it)} for it in items],
                                 override_num_blocks=min(len(items), self.workers * 4))
        cpu = self._cpus_per_worker()
        if spec.stateful:
            n_gpu = spec.num_gpus if self.gpus > 0 else 0.0
            size = self.workers if not n_gpu else max(1, int(self.gpus / n_gpu))
            size = min(size, len(items))
            ds = ds.map_batches(_ActorFn, fn_constructor_args=(spec,), batch_size=spec.batch_size,
                                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=size),
                                num_cpus=cpu, num_gpus=n_gpu or None)
        else:
            ds = ds.map_batches(_task_fn(spec), batch_size=spec.batch_size,
                                compute=ray.data.TaskPoolStrategy(size=min(self.workers, len(items))),
                                num_cpus=cpu)
        return [json.loads(r["o"]) for r in ds.iter_rows()]

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def make_executor(kind: str = "ray", workers: int = 2, address: str | None = None,
                  gpus: float | None = None):
    """``ray`` (default, local Ray when no address) or ``local`` (serial, in process)."""
    if kind == "local":
        from curate.runner import LocalExecutor
        return LocalExecutor()
    return RayExecutor(workers=workers, address=address, gpus=gpus)
