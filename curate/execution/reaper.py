"""Ends what is left of a local Ray when its driver is gone, however it ended.

Ray ties its raylet and GCS to the driver (the kernel's parent-death signal), and our
workers' watchdog ends the workers, but the raylet's agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``) notice their parent's death only through a call to the dead GCS
and live on for minutes after a ``kill -9`` of the build. So ``RayExecutor`` starts this
small process beside a local Ray: it holds the read end of a pipe whose write end only the
driver has, notes the driver's Ray processes once a second, and when the pipe closes (the
driver exited, was killed, or shut its Ray down) kills those still running, each checked by
its start time so a reused pid is never hit. Only its own session's processes: a driver that
starts Ray again (tests, a library caller) has a new session its old reaper never touches.
It needs no Ray and imports nothing of ours.

Run as ``python -m curate.execution.reaper DRIVER_PID SESSION_NAME`` with the pipe on stdin.
"""
from __future__ import annotations

import os
import select
import signal
import sys
from pathlib import Path

#: seconds between two looks at the driver's processes
PERIOD_S = 1.0


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live, non-zombie process, else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X") or len(fields) < 20:
        return None
    return int(fields[1]), fields[19]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ray_processes(driver: int, session: str) -> dict[int, str]:
    """pid -> start time of the driver's descendants that belong to its own Ray: the
    processes whose command line names the session (GCS, raylet, dashboard, monitors) and
    everything below them (workers, the raylet's agents, their ffmpeg). A ``ray::`` process
    of another session (a Ray this driver started earlier or later) is never this reaper's:
    killing another session's agent would take that session's raylet down with it. Without
    a session name, the driver's ``ray::`` descendants."""
    table: dict[int, tuple[int, str]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))) is not None:
            table[int(d)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _start) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, str] = {}
    todo = [(pid, False) for pid in children.get(driver, [])]
    while todo:
        pid, inside = todo.pop()
        cmd = _cmdline(pid)
        inside = inside or (bool(session) and session in cmd) or (not session and cmd.startswith("ray::"))
        if inside and pid != os.getpid():
            found[pid] = table[pid][1]
        todo += [(c, inside) for c in children.get(pid, [])]
    return found


def kill_all(known: dict[int, str]) -> int:
    """SIGKILL every process of ``known`` that still runs with its recorded start time."""
    n = 0
    for pid, start in known.items():
        st = _stat(pid)
        if st is not None and st[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
                n += 1
            except OSError:
                pass
    return n


def watch(driver: int, session: str, fd: int = 0) -> int:
    """Note the driver's Ray processes until ``fd`` reaches its end, then kill them."""
    known: dict[int, str] = {}
    while True:
        ready, _, _ = select.select([fd], [], [], PERIOD_S)
        if ready and not os.read(fd, 4096):
            break
        known.update(ray_processes(driver, session))
    return kill_all(known)


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the driver's to handle
    watch(int(argv[0]), argv[1] if len(argv) > 1 else "")


if __name__ == "__main__":
    main(sys.argv[1:])
