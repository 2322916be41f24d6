"""Ray orchestration: the only module of the project that imports Ray.

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
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator

from curate.ops import health
from manifests.scratch import pid_alive
from curate.execution.spec import (FAULT_KEY, NODE_KEY, Item, Outputs, StageSpec, WorkerSetupError,
                                   raise_fault, safe_call)
from manifests.faults import EnvironmentFault, fault_of
from manifests.atomic import set_write_guard

log = logging.getLogger(__name__)

#: how often a worker checks that the driver still lives
WATCHDOG_PERIOD_S = 0.05   # a /proc read: cheap; shortens the window a killed build can still write in


# ----------------------------------------------------------------------------- CPU limits

def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """CPUs the container may use by its cgroup quota (v2 ``cpu.max``, v1 cfs), or None."""
    root = Path(root)
    v2 = _read(root / "cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        if quota != "max":
            try:
                return int(quota) / int(period or 100000)
            except ValueError:
                return None
        return None
    for d in (root / "cpu", root / "cpu,cpuacct", root):
        q, p = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        if q and p:
            try:
                q_i, p_i = int(q), int(p)
            except ValueError:
                return None
            return q_i / p_i if q_i > 0 and p_i > 0 else None
    return None


def available_cpus(root: str | Path = "/sys/fs/cgroup", affinity: set[int] | None = None) -> int:
    """Cores this process may use: the min of the affinity mask and the cgroup quota."""
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            affinity = set(range(os.cpu_count() or 1))
    n = float(len(affinity) or 1)
    quota = cgroup_cpu_limit(root)
    if quota is not None:
        n = min(n, quota)
    return max(1, int(n + 0.999))   # a 1.5-CPU quota may run 2 processes at 75%


# ----------------------------------------------------------------------------- worker side

_WATCHDOG: dict[str, Any] = {}


def _own_children() -> list[int] | None:
    """This process's children from ``/proc/self/task/*/children`` (one small read per
    thread), or None where the kernel does not offer it."""
    pids: list[int] = []
    tasks = list(Path("/proc/self/task").glob("*/children"))
    if not tasks:
        return None
    for f in tasks:
        pids += [int(x) for x in (_read(f) or "").split()]
    return pids


def _kill_children() -> None:
    # the children first, by the short list: every millisecond between the driver's death and
    # this kill is a millisecond in which ffmpeg may still write under --out
    for pid in _own_children() or []:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    # then the /proc scan: the kernel's children lists may miss a child forked while they
    # were read (they are exact only for stopped threads), and some kernels lack them
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        stat = _read(d / "stat")
        if stat and stat.rsplit(")", 1)[-1].split()[1] == str(me):
            try:
                os.kill(int(d.name), signal.SIGKILL)
            except OSError:
                pass


def start_watchdog(driver_pid: int | None) -> None:
    """In a worker: end this process (and its children) when the driver is gone."""
    if not driver_pid or _WATCHDOG.get("pid") == driver_pid:
        return
    _WATCHDOG["pid"] = driver_pid
    try:
        # Ctrl-C goes to the whole process group: a worker must not turn it into an item's
        # failure; the driver stops the workers itself (curate.execution.interrupt)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:      # not the worker's main thread
        pass

    def watch() -> None:
        _wait_for_exit(driver_pid)
        _end_worker()
    # the watchdog may be a few ms late on a loaded machine: every write checks for itself
    set_write_guard(write_guard(driver_pid))
    threading.Thread(target=watch, name="curate-driver-watchdog", daemon=True).start()


def _end_worker() -> None:
    _kill_children()
    os._exit(1)


def write_guard(driver_pid: int) -> Callable[[], None]:
    """The worker's write guard (``manifests.atomic.set_write_guard``): it ends the worker
    and its children, touching no file, when the driver is gone."""
    def guard() -> None:
        if not pid_alive(driver_pid):
            _end_worker()
    return guard


def _wait_for_exit(pid: int) -> None:
    """Return when process ``pid`` has ended: at once through a pidfd (Linux >= 5.3, readable
    the moment the process exits, so a killed build's workers stop writing within
    milliseconds even on a loaded machine), else by polling every ``WATCHDOG_PERIOD_S``."""
    import select
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            while pid_alive(pid):
                select.select([fd], [], [], 1.0)
            return
        finally:
            os.close(fd)
    while pid_alive(pid):
        time.sleep(WATCHDOG_PERIOD_S)


#: per worker process: stage functions already built (options, imports, models)
_TASK_FNS: dict[str, Any] = {}


def _cached(spec: StageSpec, which: str):
    key = f"{which}:{spec.name}:{(spec.prepare if which == 'prep' else spec.factory)!r}"
    if key not in _TASK_FNS:
        _TASK_FNS[key] = (spec.prepare if which == "prep" else spec.factory)()
    return _TASK_FNS[key]


def _remote_gate(control: Any) -> health.Gate | None:
    """The worker's gate to the stage's health actor (every download request asks it)."""
    if control is None:
        return None
    import ray
    return health.Gate(lambda: ray.get(control.acquire.remote()),
                       lambda *a: ray.get(control.report.remote(*a)))


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


def _task_body(spec: StageSpec, item: Item, driver_pid: int | None, limiter: Any) -> Outputs:
    start_watchdog(driver_pid)
    try:
        fn = _cached(spec, "fn")
    except Exception as e:  # noqa: BLE001 - the stage cannot run at all: the driver stops it
        return {SETUP_ERROR: _setup_text(e)}
    health.set_gate(_remote_gate(limiter))
    try:
        return _with_node(safe_call(fn, spec, item))
    except EnvironmentFault as e:      # the driver stops the stage with it (spec.raise_fault)
        return {FAULT_KEY: str(e)}
    finally:
        health.set_gate(None)


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

    def __init__(self, spec: StageSpec, driver_pid: int | None):
        start_watchdog(driver_pid)
        self.spec = spec
        self.setup_error: str | None = None
        try:
            self.fn = spec.factory()
        except Exception as e:  # noqa: BLE001 - reported with its text, not as a dead actor
            self.setup_error = _setup_text(e)

    def call(self, items: list[Item], *payloads: Any) -> list[Outputs] | dict:
        if self.setup_error is not None:
            return {SETUP_ERROR: self.setup_error}
        try:
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


class _HealthActor:
    """The stage's one health control (``curate.ops.health.HealthControl``: global rate,
    pause on 429 / 5xx, probe, stop on bot checks) for all workers, as a Ray actor."""

    def __init__(self, config: dict[str, Any]):
        self.control = health.HealthControl(health.HealthConfig.from_dict(config))

    def acquire(self) -> dict[str, Any]:
        return self.control.acquire()

    def report(self, *args: Any) -> dict[str, Any]:
        return self.control.report(*args)

    def state(self) -> dict[str, Any]:
        return self.control.state_dict()


class _HealthWatch:
    """Driver side: polls the health actor once per loop round, hands every change to
    ``spec.on_health`` and says how long downloads were held (that time is not counted
    against an item's timeout: a paused download is waiting, not hung)."""

    def __init__(self, spec: StageSpec, actor: Any):
        self.spec, self.actor = spec, actor
        self.version = -1
        self.paused_s = 0.0

    def poll(self, final: bool = False) -> float:
        """Seconds paused since the last poll."""
        import ray
        from curate.execution.interrupt import deferred
        try:
            with deferred():    # as every Ray call: a signal is raised after it, never lost
                st = ray.get(self.actor.state.remote(), timeout=10)
        except Exception as e:  # noqa: BLE001 - the display must never stop the stage
            log.debug("health state: %s", e)
            return 0.0
        held, self.paused_s = st["paused_s"] - self.paused_s, st["paused_s"]
        if (st["version"] != self.version or final) and self.spec.on_health is not None:
            self.version = st["version"]
            self.spec.on_health(st)
        return max(held, 0.0)


# ----------------------------------------------------------------------------- driver

def _quiet_ray_env(local: bool = True) -> None:
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local:
        # A local Ray is one machine: its node announces 127.0.0.1 (Ray's single-machine mode;
        # by default it announces the machine's interface address, so its traffic would leave
        # loopback). Ray reads it when imported; if this process imported ray already, its
        # constant is set too (the workers start from the environment).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import sys
        consts = sys.modules.get("ray._private.ray_constants")
        if consts is not None and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
            consts.ENABLE_RAY_CLUSTER = False


#: a local Ray start (node registration: Ray's own fixed 30-s wait) is tried this many times,
#: waiting longer before each new try, before the build stops with a clear message
RAY_START_TRIES = 3
RAY_START_BACKOFF_S = (5.0, 20.0)


def start_ray(init: Any, kwargs: dict, tries: int = RAY_START_TRIES,
              backoff: tuple[float, ...] = RAY_START_BACKOFF_S, shutdown: Any = None,
              sleep: Any = time.sleep) -> None:
    """``init(**kwargs)``, retried on a failed start (an overloaded machine: the raylet or
    the GCS did not come up in time); then a ValueError that says what to do."""
    last: BaseException | None = None
    for k in range(tries):
        try:
            init(**kwargs)
            return
        except Exception as e:  # noqa: BLE001 - Ray raises plain Exception / RuntimeError here
            last = e
            log.warning("ray did not start (try %d of %d): %s", k + 1, tries, e)
            if shutdown is not None:
                try:
                    shutdown()
                except Exception:  # noqa: BLE001 - half-started: nothing to stop
                    pass
            if k + 1 < tries:
                sleep(backoff[min(k, len(backoff) - 1)])
    where = f"connect to the Ray cluster at --address {kwargs['address']}" \
        if kwargs.get("address") not in (None, "local") else "start a local Ray"
    raise ValueError(f"could not {where} after {tries} tries ({last}); the machine may be "
                     f"overloaded: rerun later (finished work is kept), with fewer --workers, "
                     f"or on a running cluster with --address")


def _session_name() -> str:
    import ray
    try:
        return str(ray._private.worker._global_node.session_name)
    except AttributeError:      # a Ray without it: the reaper goes by process titles only
        return ""


def start_reaper(session: str) -> Any:
    """The reaper of this driver's local Ray (``curate.execution.reaper``): a process that
    outlives the driver and ends the Ray processes it left, holding the pipe's read end."""
    import subprocess
    import sys
    return subprocess.Popen([sys.executable, "-m", "curate.execution.reaper", str(os.getpid()),
                             session], stdin=subprocess.PIPE, start_new_session=True)


def stop_reaper(proc: Any) -> None:
    """Close the reaper's pipe (it ends what is left of the Ray, then exits) and reap it."""
    if proc is None:
        return
    try:
        proc.stdin.close()
        proc.wait(timeout=10)
    except Exception as e:  # noqa: BLE001 - it ends on its own once the driver is gone
        log.debug("reaper: %s", e)


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


def _start_clocks(inflight: dict[Any, list], slots: int, watch: _HealthWatch | None) -> None:
    """Start the timeout clock of the oldest ``slots`` items in flight (the ones that can
    have started); with a health watch, time the downloads were paused is no item's."""
    now = time.monotonic()
    for k, v in enumerate(inflight.values()):
        if k >= slots:
            break
        if v[1] is None:
            v[1] = now
    if watch is not None:
        held = watch.poll()
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


class RayExecutor:
    """Streams each stage through Ray; Ray starts on the first stage with work to do."""

    def __init__(self, workers: int = 2, address: str | None = None, gpus: float | None = None,
                 download_workers: int | None = None, max_requests_per_s: float | None = None):
        _quiet_ray_env(local=not address)
        self.workers = max(1, int(workers))
        self.address = address
        self.gpus_opt = gpus
        self.download_workers = download_workers
        self.max_requests_per_s = max_requests_per_s
        self.started = 0            # stage runs that submitted Ray work
        self._driver_pid: int | None = None
        self._reaper: Any = None
        self.cpus = 0.0
        self.gpus = 0.0

    # -- setup
    def _ensure_ray(self) -> None:
        import ray

        if not ray.is_initialized():
            if self.address:
                kw = {"address": self.address, "log_to_driver": False, "configure_logging": False}
            else:
                # "local": always a new Ray of our own; with no address Ray would join any
                # cluster a `ray start` left on this machine
                kw = {"address": "local", "num_cpus": available_cpus(), "num_gpus": self.gpus_opt,
                      "include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            from curate.execution.interrupt import deferred
            with deferred():
                start_ray(ray.init, kw, shutdown=ray.shutdown)
            # ray.init puts a C++ SIGTERM handler (stack dump, abort) in the driver: ours back
            from curate.execution.interrupt import reinstall
            reinstall()
            if not self.address:
                self._reaper = start_reaper(_session_name())
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

    def _limiter(self, spec: StageSpec):
        config = health.stage_config(spec.health, spec.rate_per_s)
        if config is None:
            return None
        import ray
        return ray.remote(num_cpus=0)(_HealthActor).remote(config)

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
        limiter = self._limiter(spec)
        watch = _HealthWatch(spec, limiter) if limiter is not None else None
        todo = deque(items)
        # Two items per slot in flight: when a worker finishes, the next item is already
        # queued at the owner and reuses the worker's lease at once (no driver round trip,
        # no raylet lease per item). Ray sends a task only to an idle worker, so a queued item
        # never waits behind a hung one. An item's timeout clock starts when it is among the
        # oldest ``slots`` in flight (when it can have started), not at submission.
        inflight: dict[Any, list] = {}       # ref -> [item, clock start or None], FIFO
        try:
            yield from self._task_loop(spec, todo, inflight, slots, remote, spec_ref, limiter, watch)
        except BaseException:
            # the stage stops (a fault of the machine, an interruption): nothing it started
            # may go on writing
            for ref in inflight:
                try:
                    ray.cancel(ref, force=True)
                except Exception as e:  # noqa: BLE001 - finished, or Ray already shut down
                    log.debug("cancel: %s", e)
            raise
        if watch is not None:
            watch.poll(final=True)

    def _task_loop(self, spec: StageSpec, todo: deque, inflight: dict, slots: int, remote: Any,
                   spec_ref: Any, limiter: Any, watch: _HealthWatch | None
                   ) -> Iterator[tuple[Item, Outputs]]:
        import ray
        while todo or inflight:
            while todo and len(inflight) < 2 * slots:
                it = todo.popleft()
                inflight[remote.remote(spec_ref, it, self._driver_pid, limiter)] = [it, None]
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

    def _new_actor(self, spec_ref: Any, cpu: float, n_gpu: float):
        import ray
        cls = ray.remote(_StageActor).options(num_cpus=cpu, num_gpus=n_gpu or None,
                                              max_restarts=0, max_task_retries=0)
        return cls.remote(spec_ref, self._driver_pid)

    def _run_actors(self, spec: StageSpec, items: list[Item]) -> Iterator[tuple[Item, Outputs]]:
        pool = _ActorPool(self, spec, items)
        try:
            yield from pool.run()
        finally:
            pool.close()

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        stop_reaper(self._reaper)
        self._reaper = None



class _ActorPool:
    """One stateful stage run: a pool of actors fed by optional prepare (decode) tasks.

    State, by name: ``todo`` (items not started), ``preps`` (prepare task -> item, payload,
    start), ``prepared`` (items ready for an actor, with their payload), ``idle`` actors,
    ``calls`` (actor call -> actor, the items it took, start), ``tries`` per item key of
    calls whose actor died, ``solo`` (items of a timed-out batch: retried one at a time).
    """

    def __init__(self, ex: RayExecutor, spec: StageSpec, items: list[Item]) -> None:
        import ray

        self.ex, self.spec = ex, spec
        self.size, self.n_gpu = ex._pool_size(spec, len(items))
        self.batch = max(1, spec.batch_size)
        # decode slots: the CPUs left beside the actors, at least one
        self.prep_slots = max(1, ex.workers)
        self.cpu = ex._cpus_per(self.size + (self.prep_slots if spec.prepare else 0))
        self.spec_ref = ray.put(spec)
        self.actors = [self._new_actor() for _ in range(self.size)]
        self.idle: deque = deque(self.actors)
        self.prep = ray.remote(_prepare_body).options(num_cpus=self.cpu, num_returns=2,
                                                      max_retries=max(spec.max_tries - 1, 0))
        self.todo: deque = deque(items)
        self.tries: dict[str, int] = {}
        self.solo: set[str] = set()
        self.prepared: deque = deque()                             # (item, payload ref or None)
        self.preps: dict[Any, tuple[Item, Any, float]] = {}        # status ref -> item, payload
        self.calls: dict[Any, tuple[Any, list, float]] = {}        # call ref -> actor, [(item, payload)]
        self.queue_cap = 2 * self.size * self.batch   # prepared items waiting: bounds object-store use

    def _new_actor(self):
        return self.ex._new_actor(self.spec_ref, self.cpu, self.n_gpu)

    def run(self) -> Iterator[tuple[Item, Outputs]]:
        while self.todo or self.prepared or self.preps or self.calls:
            self.start_prepares()
            self.dispatch()
            waiting = list(self.preps) + list(self.calls)
            if not waiting:
                continue
            for ref in _wait_ready(waiting, self._wait_s()):
                if ref in self.preps:
                    yield from self.on_prepared(ref)
                else:
                    yield from self.on_call(ref)
            yield from self.expire_prepares()
            yield from self.expire_calls()

    def start_prepares(self) -> None:
        while self.todo and len(self.preps) < self.prep_slots and len(self.prepared) < self.queue_cap:
            it = self.todo.popleft()
            if self.spec.prepare is None:
                self.prepared.append((it, None))
            else:
                st, payload = self.prep.remote(self.spec_ref, it, self.ex._driver_pid)
                self.preps[st] = (it, payload, time.monotonic())

    def dispatch(self) -> None:
        """Hand prepared items to idle actors, up to ``batch`` per call."""
        while self.idle and self.prepared:
            a = self.idle.popleft()
            take = [self.prepared.popleft()]
            # near the end, share what is left between the actors instead of handing one
            # actor a full batch while another idles
            left = len(self.prepared) + 1 + len(self.todo) + len(self.preps)
            share = max(1, -(-left // self.size))
            if take[0][0]["key"] not in self.solo:
                while self.prepared and len(take) < min(self.batch, share) \
                        and self.prepared[0][0]["key"] not in self.solo:
                    take.append(self.prepared.popleft())
            pl = [p for _, p in take] if self.spec.prepare else []
            self.calls[a.call.remote([it for it, _ in take], *pl)] = (a, take, time.monotonic())

    def _wait_s(self) -> float:
        ex, spec = self.ex, self.spec
        return min(ex._wait_s(spec, {r: (None, v[2]) for r, v in self.preps.items()}),
                   ex._wait_s(spec, {r: (None, v[2]) for r, v in self.calls.items()}))

    def on_prepared(self, ref: Any) -> Iterator[tuple[Item, Outputs]]:
        import ray

        it, payload, _t = self.preps.pop(ref)
        try:
            err = _get(ref)
        except ray.exceptions.RayError as e:
            err = f"prepare: {_death_reason(e)} after {self.spec.max_tries} tries"
        raise_fault(err)
        if err:
            yield it, self.spec.on_error(it, err)
        else:
            self.prepared.append((it, payload))

    def on_call(self, ref: Any) -> Iterator[tuple[Item, Outputs]]:
        import ray

        a, take, _t = self.calls.pop(ref)
        try:
            outs = _get(ref)
        except ray.exceptions.RayError as e:
            yield from self.actor_died(e, a, take)
            return
        _raise_setup_error(self.spec, outs)
        self.idle.append(a)
        for (it, _p), o in zip(take, outs):
            yield it, o

    def replace(self, a: Any) -> None:
        """A fresh actor in place of ``a`` (killed first), idle."""
        import ray
        try:
            ray.kill(a, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.actors.remove(a)
        new = self._new_actor()
        self.actors.append(new)
        self.idle.append(new)

    def actor_died(self, e: BaseException, a: Any, take: list) -> Iterator[tuple[Item, Outputs]]:
        """A dead actor: a fresh one replaces it; its items retry up to ``max_tries``."""
        reason = _death_reason(e)
        log.warning("%s: %s (%d items in the call)", self.spec.name, reason, len(take))
        self.replace(a)
        for it, p in reversed(take):
            k = it["key"]
            self.tries[k] = self.tries.get(k, 1) + 1
            if self.tries[k] > self.spec.max_tries:
                yield it, self.spec.on_error(it, f"{reason} after {self.spec.max_tries} tries")
            else:
                self.prepared.appendleft((it, p))

    def expire_prepares(self) -> Iterator[tuple[Item, Outputs]]:
        """Prepare tasks past the timeout are cancelled; their items fail."""
        import ray
        spec = self.spec
        over = self.ex._overdue(spec, {r: (v[0], v[2]) for r, v in self.preps.items()})
        for ref, (it, _t0) in list(over):
            ray.cancel(ref, force=True)
            self.preps.pop(ref)
            yield it, spec.on_error(it, f"timeout: prepare gave no result after {spec.timeout_s:g} s")

    def expire_calls(self) -> Iterator[tuple[Item, Outputs]]:
        """A hung actor is replaced; a single item fails, a batch's items retry alone."""
        spec = self.spec
        over = self.ex._overdue(spec, {r: (v[1], v[2]) for r, v in self.calls.items()},
                                scale=lambda v: len(v[0]))
        for ref, _v in over:
            a, take, _t = self.calls.pop(ref)
            self.replace(a)
            if len(take) == 1:
                it = take[0][0]
                yield it, spec.on_error(it, f"timeout: no result after {spec.timeout_s:g} s")
            else:      # which item hung is unknown: each gets a try of its own
                for it, p in reversed(take):
                    self.solo.add(it["key"])
                    self.prepared.appendleft((it, p))

    def close(self) -> None:
        import ray
        for a in self.actors:
            ray.kill(a, no_restart=True)


def make_executor(kind: str = "ray", workers: int = 2, address: str | None = None,
                  gpus: float | None = None, download_workers: int | None = None,
                  max_requests_per_s: float | None = None):
    """``ray`` (default, local Ray when no address) or ``local`` (serial, in process)."""
    if kind == "local":
        from curate.execution.local import LocalExecutor
        ex = LocalExecutor()
    else:
        ex = RayExecutor(workers=workers, address=address, gpus=gpus,
                         download_workers=download_workers, max_requests_per_s=max_requests_per_s)
    return ex
