"""Atomic file writes, the one implementation the project uses.

Every write goes to a temp file in the target's folder (``.<name>.<random>.tmp``), is
flushed, made world-readable and renamed onto the target, so readers never see half a file
and a killed process leaves only a temp file that ``remove_stale_temps`` can clear.

A process that writes on behalf of another (a build's worker) registers a write guard
(``set_write_guard``): it runs before a temp file is made and before it is renamed into
place, and does not return once that other process is gone, so a killed build's worker
never starts or finishes a write in the output.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

TEMP_SUFFIX = ".tmp"
_GUARD: list[Callable[[], None]] = []


def set_write_guard(guard: Callable[[], None] | None) -> None:
    """Run ``guard()`` before every write this process starts or finishes in an output (None
    removes it). The guard returns when the write may go ahead; otherwise it ends the
    process there, touching no file (a raise would let the temp file's cleanup write)."""
    _GUARD[:] = [guard] if guard is not None else []


def check_write_allowed() -> None:
    """The registered write guard, if any (``set_write_guard``)."""
    for guard in _GUARD:
        guard()


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on error it goes."""
    path = Path(path)
    check_write_allowed()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, mode)  # mkstemp makes 0600; outputs are shared data
        check_write_allowed()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, **dump_kw: Any) -> Path:
    return write_text(path, json.dumps(obj, **dump_kw))


def is_temp_name(name: str) -> bool:
    """Names ``atomic_path`` gives its temp files."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)
