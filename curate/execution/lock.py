"""One writer per output: ``<out>/curate.lock`` (pid, host, start time, command).

A build, or a stage command that writes into ``--out``, takes the lock before any work and
refuses at once, naming the holder, while another live process holds it: two builds on one
output would both do all the work, number their checkpoint parts over each other and fork
the result. A lock whose holder is gone is taken over, and the takeover is logged:

- same host: the holder's pid is dead, or alive but a different process (the pid was reused:
  its start time in ``/proc`` differs from the one recorded);
- another host (an output on shared storage): its holder refreshes the file's mtime every
  ``HEARTBEAT_S``; a lock not refreshed for ``STALE_AFTER_S`` is stale.

Anything at the lock's path that is not a valid lock (garbage, a bad pid, wrong types, a
folder) is reported naming the file; once older than ``INVALID_STALE_S`` (a lock being
written is whole within milliseconds) it is taken over, leaving nothing behind.

The lock is reentrant within one process (``curate build`` runs stages that also lock).
"""
from __future__ import annotations

import json
import logging
import os
import stat
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from manifests.scratch import pid_alive, proc_start as _proc_start

log = logging.getLogger(__name__)

LOCK_NAME = "curate.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
#: an invalid lock this old is not one being written: it is taken over
INVALID_STALE_S = 10.0
#: a lock is one short JSON line; anything bigger is not a lock (and is not read whole)
MAX_LOCK_BYTES = 64 << 10

_HELD: dict[str, int] = {}        # resolved out -> nesting depth in this process


class OutputLocked(ValueError):
    """Another live process writes into this output."""


def describe(holder: dict[str, Any]) -> str:
    return (f"`{holder.get('command', 'curate')}` (pid {holder.get('pid')} on "
            f"{holder.get('host')}, started {holder.get('started')})")


class LockFile:
    """What lies at a lock's path: its bytes (None: nothing there), the holder when they are a
    valid lock, else ``problem`` (why not), and ``folder`` when it is a directory."""

    def __init__(self, raw: bytes | None, holder: dict[str, Any] | None = None,
                 problem: str | None = None, folder: bool = False) -> None:
        self.raw, self.holder, self.problem, self.folder = raw, holder, problem, folder


def read_lock(path: Path) -> LockFile:
    """The lock at ``path``, read defensively: a regular file of at most ``MAX_LOCK_BYTES``
    holding a JSON object with an int pid > 0, a str host and str (or null) start fields."""
    try:
        st = os.lstat(path)
    except OSError:
        return LockFile(None)
    if stat.S_ISDIR(st.st_mode):
        return LockFile(b"", problem="it is a folder, not a lock file", folder=True)
    if not stat.S_ISREG(st.st_mode):
        return LockFile(b"", problem="it is not a regular file")
    if st.st_size > MAX_LOCK_BYTES:
        return LockFile(b"", problem=f"it is {st.st_size} bytes (a lock is under {MAX_LOCK_BYTES})")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_LOCK_BYTES + 1)
    except OSError as e:
        return LockFile(b"", problem=f"it cannot be read ({e.strerror or e})")
    return LockFile(raw, *_parse_holder(raw))


def _parse_holder(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, "it is not JSON" if raw.strip() else "it is empty"
    if not isinstance(data, dict):
        return None, "it is not a JSON object"
    pid = data.get("pid")
    if type(pid) is not int or pid <= 0:
        return None, f"its pid {str(pid)[:40]!r} is not a process id"
    for k in ("host", "pid_start", "started", "command"):
        if not isinstance(data.get(k), (str, type(None))):
            return None, f"its {k} is not text"
    if not data.get("host"):
        return None, "it names no host"
    return data, None


def stale_reason(holder: dict[str, Any] | None, path: Path, now: float | None = None,
                 stale_after_s: float = STALE_AFTER_S, problem: str | None = None) -> str | None:
    """Why the lock at ``path`` (content ``holder``, or ``problem`` when it is not a valid
    lock) is stale, or None while its holder lives (or an invalid one is still young)."""
    now = time.time() if now is None else now
    try:
        age = now - os.lstat(path).st_mtime
    except OSError:
        return "it is gone"
    if holder is None:
        # a lock being written right now is valid within milliseconds
        why = problem or "it is not a valid lock"
        return f"{why} and it is {age:.0f} s old" if age > INVALID_STALE_S else None
    if holder.get("host") == socket.gethostname():
        pid = holder["pid"]
        if not pid_alive(pid):
            return f"its process {pid} is gone"
        if holder.get("pid_start") and _proc_start(pid) != holder["pid_start"]:
            return f"pid {pid} is now another process"
        return None
    if age > stale_after_s:
        return f"host {holder.get('host')} has not refreshed it for {age:.0f} s (over {stale_after_s:.0f} s)"
    return None


def _read_holder(path: Path) -> dict[str, Any] | None:
    return read_lock(path).holder


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
    """Take the lock of ``out`` or raise ``OutputLocked`` naming its live holder (or the
    lock file, when it is not a valid lock and not yet stale); an ``OSError`` of a folder we
    may not write into becomes a ValueError naming it."""
    out = Path(out)
    path = out / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "pid_start": _proc_start(os.getpid()),
          "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command}
    for k in range(40):
        try:
            if _create(path, me):
                return me
        except OSError as e:
            raise ValueError(f"cannot write into the output folder {out} ({e.strerror or e}): "
                             f"choose a writable --out") from e
        cur = read_lock(path)
        if cur.raw is None:
            continue                # gone since our create: try again
        why = stale_reason(cur.holder, path, stale_after_s=stale_after_s, problem=cur.problem)
        if why is None:
            if cur.holder is not None:
                raise OutputLocked(f"{out} is in use by {describe(cur.holder)}: one build per "
                                   f"output; wait for it to end or stop it (its lock: {path})")
            if k < 20 and not cur.folder:     # maybe being written by a process starting now
                time.sleep(0.05)
                continue
            raise OutputLocked(f"lock file {path}: {cur.problem}; it is taken over once "
                               f"{INVALID_STALE_S:.0f} s old: rerun then, or remove it if no "
                               f"curate command writes into {out}")
        if _take_over(path, cur):
            log.warning("taking over the lock of %s from %s: %s", out,
                        describe(cur.holder) if cur.holder else f"lock file {path}", why)
    raise OutputLocked(f"could not take the lock {path}: it keeps changing hands")


def _take_over(path: Path, cur: LockFile) -> bool:
    """Move the stale lock ``cur`` aside and remove it; False when another process took it
    over between our look and the move (it is then given back)."""
    aside = path.with_name(f".{LOCK_NAME}.{os.getpid()}.stale.tmp")
    if cur.folder:
        try:
            path.rmdir()          # only an empty folder: its content is not ours to remove
        except FileNotFoundError:
            return False
        except OSError as e:
            raise OutputLocked(f"lock file {path}: {cur.problem} and it is not empty "
                               f"({e.strerror}): remove it") from e
        return True
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return False              # another process took it over first: look again
    except IsADirectoryError:
        return False              # turned into a folder meanwhile: look again
    moved = read_lock(aside)
    if moved.folder:
        # a folder put there meanwhile is not ours to remove: back where it was
        os.rename(aside, path) if not path.exists() else None
        return False
    if moved.raw != cur.raw:
        # between our look and the rename another process took it over: give it back
        try:
            os.link(aside, path)
        except OSError:
            pass
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True


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
