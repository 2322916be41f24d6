"""Scratch space outside the output, for files that other programs write for a worker.

ffmpeg and yt-dlp write their files for seconds; a worker's watchdog ends them within
milliseconds of a killed build's driver, but not at the same instant. So their files are
written here, outside ``--out``, and enter the output only when finished, in one rename (a
copy and a rename when the scratch folder is on another file system), after the write
guard (``manifests.atomic.set_write_guard``) has said the build is still alive. A killed
build leaves its output as it was the moment it died; what it left here is cleared by the
next build (``remove_stale``).

The scratch folder is ``$CURATE_SCRATCH`` if set, else ``curate-scratch-<uid>`` in the
system temp folder (``$TMPDIR``, ``/tmp``), with one sub-folder per process (``p<pid>``).
On the output's own disk a commit is a rename; elsewhere (a tmpfs ``/tmp``) every finished
file is copied once, and large downloads take memory while they are written there: point
``CURATE_SCRATCH`` at a folder on the output's disk for big runs.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from manifests.atomic import atomic_path, check_write_allowed

log = logging.getLogger(__name__)

SCRATCH_ENV = "CURATE_SCRATCH"


def scratch_root() -> Path:
    """The scratch folder shared by this user's processes (see the module's text)."""
    base = os.environ.get(SCRATCH_ENV)
    if base:
        return Path(base)
    return Path(tempfile.gettempdir()) / f"curate-scratch-{os.getuid()}"


def _own_dir() -> Path:
    root = scratch_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not os.environ.get(SCRATCH_ENV):
        # the default sits in a temp folder every user can write: it must be our own folder,
        # not another user's or a link planted there
        st = os.lstat(root)
        if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid():
            raise PermissionError(f"scratch folder {root} is a link or another user's folder: "
                                  f"remove it, or set {SCRATCH_ENV} to a folder of your own")
    d = root / f"p{os.getpid()}"
    d.mkdir(exist_ok=True, mode=0o700)
    return d


@contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    """A private folder in this process's scratch space, removed with what is left in it."""
    d = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=_own_dir()))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def commit(src: str | os.PathLike, dst: str | os.PathLike, mode: int = 0o644) -> Path:
    """Move the finished file ``src`` onto ``dst`` atomically: a rename on one file system,
    else a copy to a temp file beside ``dst`` and a rename. Guarded like every write."""
    src, dst = Path(src), Path(dst)
    check_write_allowed()
    os.chmod(src, mode)
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


def _pid_of(entry: Path) -> int | None:
    name = entry.name
    return int(name[1:]) if name.startswith("p") and name[1:].isdigit() else None


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


def remove_stale(root: Path | None = None) -> int:
    """Remove the scratch folders of processes that are gone (killed workers); returns how
    many. Folders of running processes, any build's, are left alone."""
    root = scratch_root() if root is None else root
    if not root.is_dir():
        return 0
    n = 0
    for entry in root.iterdir():
        pid = _pid_of(entry)
        if pid is not None and entry.is_dir() and not pid_alive(pid):
            shutil.rmtree(entry, ignore_errors=True)
            n += 1
    if n:
        log.info("removed %d scratch folders of ended processes under %s", n, root)
    return n
