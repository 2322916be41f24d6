"""Scratch space outside the output, for files that other programs write for a worker.

ffmpeg and yt-dlp write their files for seconds; a worker's watchdog ends them within
milliseconds of a killed build's driver, but not at the same instant. So their files are
written here, outside ``--out``, and enter the output only when finished, in one rename (a
copy and a rename when the scratch folder is on another file system), after the write
guard (``manifests.atomic.set_write_guard``) has said the build is still alive. A killed
build leaves its output as it was the moment it died; what it left here is cleared by the
next build (``remove_stale``).

The scratch folder is ``$CURATE_SCRATCH`` if set, else ``curate-scratch-<uid>`` in the
system temp folder (``$TMPDIR``, ``/tmp``), with one sub-folder per process
(``p<pid>.<token>``) that exists while the process writes there and holds a marker
(``MARKER``: owner pid, its start time, host, the random token of the folder's name).
Cleanup (``remove_stale``) removes only folders with a valid marker of this host whose
process is gone: a folder curate did not make, or another node's on a shared scratch, is
never touched. On the output's own disk a commit is a rename; elsewhere (a tmpfs ``/tmp``)
every finished file is copied once, and large downloads take memory while they are written
there: point ``CURATE_SCRATCH`` at a folder on the output's disk for big runs.

A scratch folder that cannot be used (a file, a link or another user's folder as the
default, not writable, full) is a fault of the machine (``manifests.faults``): it raises
``EnvironmentFault`` naming the folder and ``CURATE_SCRATCH``, never an item's failure.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import shutil
import socket
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from manifests.atomic import atomic_path, check_write_allowed
from manifests.faults import DISK_ERRNOS, EnvironmentFault

log = logging.getLogger(__name__)

SCRATCH_ENV = "CURATE_SCRATCH"
#: the owner marker in each process's scratch folder
MARKER = ".curate-owner.json"
_MARKER_MAX_BYTES = 4096
#: free space the scratch folder and the output need before a stage starts (``preflight``)
MIN_FREE_BYTES = 64 << 20

_OWN: dict[str, Any] = {"dir": None, "users": 0}
_OWN_LOCK = threading.Lock()
_REPORTED: set[str] = set()       # roots whose foreign folders were reported (once each)


def scratch_root() -> Path:
    """The scratch folder shared by this user's processes (see the module's text)."""
    base = os.environ.get(SCRATCH_ENV)
    if base:
        return Path(base)
    return Path(tempfile.gettempdir()) / f"curate-scratch-{os.getuid()}"


def scratch_fault(root: Path, what: str) -> EnvironmentFault:
    """The one message of an unusable scratch folder: which folder, what is wrong, what to set."""
    return EnvironmentFault(f"scratch folder {root} {what}: set {SCRATCH_ENV} to a writable "
                            f"folder of your own with free space, or fix that one; finished "
                            f"work is kept")


def _check_root(root: Path) -> None:
    """Create ``root`` if needed; raise ``EnvironmentFault`` when it cannot serve as scratch."""
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise scratch_fault(root, "is not a folder (a file is in the way)") from None
    except OSError as e:
        raise scratch_fault(root, f"cannot be created ({e.strerror or e})") from e
    st = os.lstat(root)
    if not os.environ.get(SCRATCH_ENV):
        # the default sits in a temp folder every user can write: it must be our own folder,
        # not another user's or a link planted there
        if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid():
            raise scratch_fault(root, "is a link or another user's folder")
    if not os.path.isdir(root):
        raise scratch_fault(root, "is not a folder")


def proc_start(pid: int) -> str | None:
    """Start time (clock ticks since boot) of a process, from /proc; None if unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _new_own_dir() -> Path:
    root = scratch_root()
    _check_root(root)
    me = {"pid": os.getpid(), "pid_start": proc_start(os.getpid()), "host": socket.gethostname(),
          "token": secrets.token_hex(8)}
    d = root / f"p{me['pid']}.{me['token']}"
    try:
        d.mkdir(mode=0o700)
        (d / MARKER).write_text(json.dumps(me))
    except OSError as e:
        shutil.rmtree(d, ignore_errors=True)
        what = "is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else \
            f"is not writable ({e.strerror or e})"
        raise scratch_fault(root, what) from e
    return d


@contextmanager
def _own_dir() -> Iterator[Path]:
    """This process's scratch folder for the block; the last user out removes it (with its
    marker) when nothing else is left in it."""
    with _OWN_LOCK:
        d = _OWN["dir"]
        if d is None or not d.is_dir():
            d = _OWN["dir"] = _new_own_dir()
            _OWN["users"] = 0
        _OWN["users"] += 1
    try:
        yield d
    finally:
        with _OWN_LOCK:
            _OWN["users"] -= 1
            if _OWN["users"] == 0 and _OWN["dir"] == d:
                _OWN["dir"] = None
                _remove_if_empty(d)


def _remove_if_empty(d: Path) -> None:
    try:
        if {p.name for p in d.iterdir()} <= {MARKER}:
            (d / MARKER).unlink(missing_ok=True)
            d.rmdir()
    except OSError as e:
        log.debug("scratch folder %s left: %s", d, e)


@contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    """A private folder in this process's scratch space, removed with what is left in it. A
    full or read-only scratch disk met in the block is an ``EnvironmentFault`` naming it."""
    with _own_dir() as own:
        try:
            d = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=own))
        except OSError as e:
            raise scratch_fault(own.parent, f"is not writable ({e.strerror or e})") from e
        try:
            yield d
        except OSError as e:
            if e.errno in DISK_ERRNOS and _under(e.filename, own):
                raise scratch_fault(own.parent, f"is full or read-only ({e.strerror})") from e
            raise
        finally:
            shutil.rmtree(d, ignore_errors=True)


def _under(filename: Any, folder: Path) -> bool:
    """Whether an OSError's file lies in ``folder`` (no file named: assume it does)."""
    if not filename:
        return True
    try:
        return Path(os.fsdecode(filename)).resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError, TypeError):
        return False


def write_fault(path: str | os.PathLike, why: str) -> EnvironmentFault:
    """A write to ``path`` the disk refused (full, read-only, not ours): a scratch fault
    naming ``CURATE_SCRATCH`` when ``path`` lies in scratch, else the output's (``--out``)."""
    root = scratch_root()
    if _under(path, root):
        return scratch_fault(root, f"refused a write ({why})")
    return EnvironmentFault(f"cannot write {path} ({why}): free space on the output's disk, "
                            f"make it writable, or choose another --out; finished work is kept")


def commit(src: str | os.PathLike, dst: str | os.PathLike, mode: int = 0o644) -> Path:
    """Move the finished file ``src`` onto ``dst`` atomically: a rename on one file system,
    else a copy to a temp file beside ``dst`` and a rename. Guarded like every write. An
    output disk that is full, read-only or not ours raises ``EnvironmentFault`` naming it."""
    src, dst = Path(src), Path(dst)
    check_write_allowed()
    os.chmod(src, mode)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dst)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            with atomic_path(dst, mode) as tmp:
                shutil.copyfile(src, tmp)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
    except OSError as e:
        if e.errno in DISK_ERRNOS or e.errno in (errno.EACCES, errno.EPERM):
            raise write_fault(dst, e.strerror or str(e)) from e
        raise
    return dst


@contextmanager
def scratch_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Like ``atomic_path``, with the temp file in scratch: yield a path (with ``path``'s
    name) to write; on success it is committed onto ``path``, on error it goes."""
    path = Path(path)
    with scratch_dir(path.name) as d:
        tmp = d / path.name
        yield tmp
        commit(tmp, path, mode)


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes an unprivileged write may still use on ``folder``'s disk."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def preflight(min_free: int | None = None) -> Path:
    """Before a stage: the scratch folder is usable, writable and has ``min_free`` bytes
    (``MIN_FREE_BYTES``); else ``EnvironmentFault`` naming it and ``CURATE_SCRATCH``."""
    need = MIN_FREE_BYTES if min_free is None else min_free
    with scratch_dir("preflight") as d:
        try:
            (d / "probe").write_bytes(b"\0" * 4096)
        except OSError as e:
            raise scratch_fault(d.parent.parent, f"is not writable ({e.strerror or e})") from e
        free = free_bytes(d)
    if free < need:
        raise scratch_fault(d.parent.parent, f"has {free >> 10} KiB free (a stage needs at "
                                             f"least {need >> 20} MiB)")
    return d.parent.parent


def pid_alive(pid: int) -> bool:
    """A process with this pid exists on this machine and is not a zombie (a killed process
    whose parent has not reaped it yet is dead for us). Also the output lock's and the
    engine's worker watchdog's test."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def read_marker(entry: Path) -> dict[str, Any] | None:
    """The owner marker of a scratch folder curate made, or None: no marker, not a small
    regular file, not the marker's types, or not the folder's own name (``p<pid>.<token>``)."""
    try:
        m = entry / MARKER
        st = os.lstat(m)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MARKER_MAX_BYTES:
            return None
        data = json.loads(m.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid, host, token = data.get("pid"), data.get("host"), data.get("token")
    if not (type(pid) is int and pid > 0 and isinstance(host, str) and isinstance(token, str)
            and isinstance(data.get("pid_start"), (str, type(None)))):
        return None
    return data if entry.name == f"p{pid}.{token}" else None


def _stale(marker: dict[str, Any]) -> bool:
    """A marker of this host whose process is gone (or whose pid is now another process)."""
    if marker["host"] != socket.gethostname():
        return False
    pid = marker["pid"]
    if not pid_alive(pid):
        return True
    return marker["pid_start"] is not None and proc_start(pid) != marker["pid_start"]


def remove_stale(root: Path | None = None) -> int:
    """Remove the scratch folders of processes of this host that are gone (killed workers);
    returns how many. Only folders curate made (a valid marker) are touched: running
    processes' folders, other hosts' and anything else are left alone (the rest reported
    once per process)."""
    root = scratch_root() if root is None else root
    if not root.is_dir():
        return 0
    n, foreign = 0, []
    for entry in root.iterdir():
        if entry.is_symlink() or not entry.is_dir():
            foreign.append(entry.name)
            continue
        marker = read_marker(entry)
        if marker is None:
            foreign.append(entry.name)
        elif _stale(marker):
            shutil.rmtree(entry, ignore_errors=True)
            n += 1
    if n:
        log.info("removed %d scratch folders of ended processes under %s", n, root)
    if foreign and str(root) not in _REPORTED:
        _REPORTED.add(str(root))
        log.info("left alone %d entries under scratch %s that curate did not make (%s)",
                 len(foreign), root, ", ".join(sorted(foreign)[:3]) + (" ..." if len(foreign) > 3 else ""))
    return n
