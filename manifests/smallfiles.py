"""The bytes of a small file, read once per file version and process.

A build asks several things of the same weight file in the driver (its sha256 for run.json,
its content id for the fingerprints, its keys, shapes and convention): for a file up to
``MAX_BYTES`` they all come from one read (``read``); a larger file is streamed by each
(it is not kept in memory)."""
from __future__ import annotations

import functools
import os

#: files up to this size are kept (a trained sync classifier, the demo's; not ImageBind-huge)
MAX_BYTES = 64 << 20


def read(path: str | os.PathLike) -> bytes | None:
    """The bytes of ``path`` when it is a file of at most ``MAX_BYTES``, else None."""
    p = os.path.realpath(path)
    st = os.stat(p)
    if st.st_size > MAX_BYTES:
        return None
    return _read(p, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read(path: str, size: int, mtime_ns: int) -> bytes:
    with open(path, "rb") as f:
        return f.read()
