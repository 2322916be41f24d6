"""One writer per output: ``<out>/curate.lock`` (pid, host, start time, command).

A build, or a stage command that writes into ``--out``, takes the lock before any work and
refuses at once, naming the holder, while another live process holds it: two builds on one
output would both do all the work, number their checkpoint parts over each other and fork
the result. A lock whose holder is gone is taken over, and the takeover is logged:

- same host: the holder's pid is dead, or alive but a different process (the pid was reused:
  its start time in ``/proc`` differs from the one recorded);
- another host (an output on shared storage): its holder refreshes the file's mtime every
  ``HEARTBEAT_S``; a lock not refreshed for ``STALE_AFTER_S`` is stale.

The lock is reentrant within one process (``curate build`` runs stages that also lock).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from manifests.scratch import pid_alive

log = logging.getLogger(__name__)

LOCK_NAME = "curate.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0

_HELD: dict[str, int] = {}        # resolved out -> nesting depth in this process


class OutputLocked(ValueError):
    """Another live process writes into this output."""


def _proc_start(pid: int) -> str | None:
    """Start time (clock ticks since boot) of a process, from /proc; None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def describe(holder: dict[str, Any]) -> str:
    return (f"`{holder.get('command', 'curate')}` (pid {holder.get('pid')} on "
            f"{holder.get('host')}, started {holder.get('started')})")


def stale_reason(holder: dict[str, Any] | None, path: Path, now: float | None = None,
                 stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the lock at ``path`` (content ``holder``) is stale, or None while its holder lives."""
    now = time.time() if now is None else now
    try:
        age = now - path.stat().st_mtime
    except OSError:
        return "it is gone"
    if holder is None:
        # unreadable: a lock being written right now is readable within milliseconds
        return f"it is unreadable and {age:.0f} s old" if age > 10 else None
    if holder.get("host") == socket.gethostname():
        pid = int(holder.get("pid") or 0)
        if pid <= 0 or not pid_alive(pid):
            return f"its process {pid} is gone"
        if holder.get("pid_start") and _proc_start(pid) != holder["pid_start"]:
            return f"pid {pid} is now another process"
        return None
    if age > stale_after_s:
        return f"host {holder.get('host')} has not refreshed it for {age:.0f} s (over {stale_after_s:.0f} s)"
    return None


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _create(path: Path, holder: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(holder))
        f.flush()
        os.fsync(f.fileno())
    return True


def acquire(out: str | Path, command: str, stale_after_s: float = STALE_AFTER_S) -> dict[str, Any]:
    """Take the lock of ``out`` or raise ``OutputLocked`` naming its live holder; an
    ``OSError`` of a folder we may not write into becomes a ValueError naming it."""
    out = Path(out)
    path = out / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "pid_start": _proc_start(os.getpid()),
          "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command}
    for _ in range(20):
        try:
            if _create(path, me):
                return me
        except OSError as e:
            raise ValueError(f"cannot write into the output folder {out} ({e.strerror or e}): "
                             f"choose a writable --out") from e
        holder = _read_holder(path)
        why = stale_reason(holder, path, stale_after_s=stale_after_s)
        if why is None:
            if holder is None:      # being written by a process starting now
                time.sleep(0.05)
                continue
            raise OutputLocked(f"{out} is in use by {describe(holder)}: one build per output; "
                               f"wait for it to end or stop it (its lock: {path})")
        aside = path.with_name(f".{LOCK_NAME}.{os.getpid()}.stale.tmp")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            continue                # another process took it over first: look again
        if _read_holder(aside) != holder:
            # between our look and the rename another process took it over: give it back
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            continue
        aside.unlink(missing_ok=True)
        msg = f"taking over the lock of {out} from {describe(holder or {})}: {why}"
        log.warning("%s", msg)
    raise OutputLocked(f"could not take the lock {path}: it keeps changing hands")


def release(out: str | Path, holder: dict[str, Any]) -> None:
    path = Path(out) / LOCK_NAME
    if _read_holder(path) == holder:
        path.unlink(missing_ok=True)


def _heartbeat(path: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            os.utime(path)
        except OSError:
            return


@contextmanager
def output_lock(out: str | Path, command: str = "curate") -> Iterator[None]:
    """Hold the lock of ``out`` for the block (reentrant within this process)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the output folder {out} ({e.strerror or e}): "
                         f"choose a writable --out") from e
    key = str(out.resolve())
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    holder = acquire(out, command)
    _HELD[key] = 1
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(out / LOCK_NAME, stop), daemon=True,
                     name="curate-lock-heartbeat").start()
    try:
        yield
    finally:
        stop.set()
        _HELD.pop(key, None)
        release(out, holder)
