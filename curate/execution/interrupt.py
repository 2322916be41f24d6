"""SIGTERM / SIGINT in the driver: stop submitting, keep what finished, end the workers, exit.

``interruptible()`` turns the first SIGTERM or SIGINT into an ``Interrupted`` exception in the
main thread. It unwinds through the executor's loop (actors killed in its ``finally``, no new
work submitted) and ``runner.run_stage`` (its ``finally`` writes the finished records still
buffered); the command then shuts the executor down and exits 143 (SIGTERM) or 130 (SIGINT)
with ``INTERRUPTED_MESSAGE``. Further signals during that cleanup are ignored so the last
records reach the disk.

Ray's core worker installs a C++ SIGTERM handler in the driver at ``ray.init`` (it dumps a
stack and aborts); ``curate.execution.ray.session.init_ray`` puts the Python handlers back after ``ray.init``
(``reinstall``). Some C extensions run Python signal handlers inside their own calls and
mishandle an exception raised there (Ray's ``wait`` then fails with a SystemError); calls
into them run under ``deferred()``: the signal is noted and ``Interrupted`` raised when the
call has returned.
"""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

log = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = "interrupted: rerun the same command to resume"
SIGNALS = (signal.SIGTERM, signal.SIGINT)
_ACTIVE: dict[str, Any] = {}
_STATE = {"defer": 0, "pending": None}    # nesting of deferred(); signal not raised yet


class Interrupted(BaseException):
    """Raised in the main thread by the first SIGTERM / SIGINT (a BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` records it as an item's failure)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum       # 143 for SIGTERM, 130 for SIGINT


def _ignore(signum: int, frame: Any) -> None:
    log.warning("%s while stopping: finishing the cleanup first", signal.Signals(signum).name)


def _handler(signum: int, frame: Any) -> None:
    for s in SIGNALS:          # one interruption; the cleanup after it must not be cut short
        signal.signal(s, _ignore)
    log.warning("%s: stopping (finished work is kept)", signal.Signals(signum).name)
    _STATE["pending"] = signum
    if not _STATE["defer"]:
        check()


def check() -> None:
    """Raise the noted interruption, once (a safe point of a loop)."""
    signum = _STATE["pending"]
    if signum is not None:
        _STATE["pending"] = None
        raise Interrupted(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """A signal inside the block is raised only when the block has ended."""
    _STATE["defer"] += 1
    try:
        yield
    finally:
        _STATE["defer"] -= 1
    if not _STATE["defer"]:
        check()


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM / SIGINT raise ``Interrupted`` inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread() or _ACTIVE:
        yield
        return
    before = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    _ACTIVE["on"] = True
    _STATE["pending"] = None
    try:
        yield
    finally:
        _ACTIVE.clear()
        _STATE["pending"] = None
        for s, h in before.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def reinstall() -> None:
    """Put our handlers back (after a library, e.g. ``ray.init``, replaced them)."""
    if _ACTIVE and threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            if signal.getsignal(s) is not _ignore:
                signal.signal(s, _handler)
