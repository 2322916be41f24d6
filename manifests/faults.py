"""Faults of the machine, not of the data.

A full disk, a read-only or foreign scratch folder, a missing ffmpeg: every item of a stage
would fail the same way, and recording each as failed would misrecord good sources (a rerun
without ``--retry-failed`` would keep them failed). Such a fault raises ``EnvironmentFault``
instead: the executors let it through (``curate.execution.spec.safe_call``), the stage stops
at once and the command line prints its one message, which names the folder or tool and the
variable or option to change. Items recorded failed for such a cause by an older version are
redone on the next run (``FAULT_TEXT``, ``curate.execution.checkpoints.run_stage``).
"""
from __future__ import annotations

import errno
import re

#: errnos that say the disk is at fault whatever file was written (never a source's fault)
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})

#: what a disk fault looks like in a tool's message (ffmpeg's stderr, yt-dlp's error) and in
#: a failure recorded before faults stopped the stage: such records are not done
FAULT_TEXT = re.compile(
    r"No space left on device|Disk quota exceeded|Read-only file system|\bENOSPC\b"
    r"|scratch folder .* (?:is a link|another user's|not a folder|not writable)"
    r"|Permission denied: '[^']*/p\d+'"     # an older version's scratch folder (p<pid>)
    r"|No such file or directory: '(?:ffmpeg|ffprobe)'|No module named 'yt_dlp'",
    re.IGNORECASE)


class EnvironmentFault(RuntimeError):
    """The machine cannot do the work (disk, folder, tool): stop the stage, record nothing."""


def disk_fault(e: BaseException) -> OSError | None:
    """The ``OSError`` of a full or read-only disk in ``e`` or what it wraps, else None."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        c = stack.pop()
        if c is None or id(c) in seen:
            continue
        seen.add(id(c))
        if isinstance(c, OSError) and c.errno in DISK_ERRNOS:
            return c
        stack.extend([c.__cause__, c.__context__])
    return None


def fault_of(e: BaseException) -> EnvironmentFault | None:
    """``e`` as an environment fault (itself, or a full / read-only disk under it), else None."""
    if isinstance(e, EnvironmentFault):
        return e
    os_err = disk_fault(e)
    if os_err is None:
        return None
    where = f" writing {os_err.filename}" if os_err.filename else ""
    return EnvironmentFault(f"{os_err.strerror or os_err}{where}: free space on that disk (or make "
                            f"it writable) and rerun; finished work is kept")
