"""The process guard of a Ray worker on this machine: it ends the worker (and its ffmpeg /
yt-dlp children) as soon as the driver process is gone (a pidfd or /proc watchdog thread) and
before any write into the output once the driver is gone (``manifests.atomic``'s write
guard); and the CPUs this machine lets the build use (affinity mask, cgroup quota)."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from manifests.atomic import set_write_guard
from manifests.scratch import pid_alive

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
