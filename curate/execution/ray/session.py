"""Starting and stopping Ray: the quiet environment, the start retried on an overloaded
machine, and the reaper (``curate.execution.reaper``) that ends a local Ray whose driver died."""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from curate.execution.ray.guard import available_cpus

log = logging.getLogger(__name__)

def quiet_ray_env(local: bool = True) -> None:
    """Ray's environment before it starts: no log dedup noise, no usage stats, loopback only."""
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


def init_ray(address: str | None, gpus: float | None) -> Any:
    """Start a local Ray of our own, or join the cluster at ``address``; returns the reaper
    of a local one (``start_reaper``), else None."""
    import ray
    if address:
        kw = {"address": address, "log_to_driver": False, "configure_logging": False}
    else:
        # "local": always a new Ray of our own; with no address Ray would join any
        # cluster a `ray start` left on this machine
        kw = {"address": "local", "num_cpus": available_cpus(), "num_gpus": gpus,
              "include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    from curate.execution.interrupt import deferred, reinstall
    with deferred():
        start_ray(ray.init, kw, shutdown=ray.shutdown)
    # ray.init puts a C++ SIGTERM handler (stack dump, abort) in the driver: ours back
    reinstall()
    return None if address else start_reaper(_session_name())
