"""Ray orchestration: the only package of the project that imports Ray.

One streaming run per stage (``RayExecutor.run``): every pending item of the stage is
submitted through one driver loop over ``ray.wait``, results come back in completion order
and the runner checkpoints them as they arrive.

Why a ``ray.wait`` loop over Ray core tasks/actors rather than one Ray Data dataset: the
engine needs, per item, a bounded number of tries when a worker dies (Ray Data actor pools
restart and retry without bound), a timeout that ends one hung item without holding the
others, and the item's identity on every failure so it becomes a recorded reason. The loop
keeps at most ``concurrency`` items in flight (bounded driver and object-store memory), has
no barrier between groups of items, and hands the next item to whichever worker frees first.

- stateless stages: one Ray task per item, ``num_cpus`` fractional so ``--workers N`` runs N
  at once even on 2 cores; ``max_retries = max_tries - 1`` for worker death only
  (``retry_exceptions=False``: a Python exception is the item's recorded failure).
- stateful stages (models): a pool of actors created once for the whole stage run
  (``max_restarts=0``, ``max_task_retries=0``: the loop replaces a dead actor itself and
  counts the item's tries), ``num_gpus`` fractional on GPU clusters. With ``spec.prepare``
  (decode), items first run as CPU tasks whose payload (uint8 grid) stays in the object
  store and goes to an actor call of up to ``batch_size`` items.
- kill safety: with a local Ray, every worker runs a watchdog thread that ends the worker
  (and its ffmpeg / yt-dlp children) as soon as the driver process is gone, and a write
  guard (``manifests.atomic.set_write_guard``) that ends it before any write into the output
  once the driver is gone; ffmpeg and yt-dlp write in scratch space outside the output
  (``manifests.scratch``), so a killed build leaves nothing writing into its output. A
  small reaper process (``curate.execution.reaper``) ends the rest of a local Ray (the
  raylet's agents, which would wait minutes on the dead GCS) as soon as the driver is gone.

Modules, by job: ``executor`` (``RayExecutor``: the task loop), ``pool`` (the actor pool),
``worker`` (what runs in the worker processes), ``driver`` (the driver's side of the calls),
``guard`` (the worker's process guard, the CPU limits), ``session`` (Ray start-up, reaper).
"""
from curate.execution.ray.executor import RayExecutor
from curate.execution.ray.guard import available_cpus, cgroup_cpu_limit, write_guard
from curate.execution.ray.session import start_ray

__all__ = ["RayExecutor", "available_cpus", "cgroup_cpu_limit", "start_ray", "write_guard"]
