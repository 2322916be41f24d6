"""Objects one stage run shares between all its workers (e.g. the download health control).

A stage declares them in ``StageSpec.shared`` (name -> ``Shared``). The executor builds each
once per stage run (in process for the serial executor, as one Ray actor otherwise); while an
item runs, its function reaches one with ``shared(name)``: a ``Handle`` whose method calls go
to that one object and return its answer. The executor knows nothing of what the objects do.
It only asks each for its ``status()`` (a JSON-able dict): once per loop round and once at the
end of the run it hands the state to ``on_state`` (driver side), and the seconds an object
says it held every worker (``status()["paused_s"]``, growing) do not count against an item's
timeout: a held item is waiting, not hung.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

#: the key of ``status()`` that says how long the object has held every worker, in seconds
PAUSED_KEY = "paused_s"


@dataclass(frozen=True)
class Shared:
    """One object for all workers of a stage run: ``make()`` builds it (once per run, on
    the driver's side of the executor); ``on_state(state, final)`` sees its ``status()`` each
    round and at the end (``final``)."""
    make: Callable[[], Any]
    on_state: Callable[[dict[str, Any], bool], None] | None = None


class Handle:
    """A worker's side of a shared object: ``handle.method(*args)`` is ``call("method",
    *args)`` (a direct call in process, a Ray actor call otherwise)."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self._call = call

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self._call(name, *args)


_CURRENT: dict[str, Handle] = {}


def shared(name: str) -> Handle | None:
    """The shared object ``name`` of the stage run whose item this process runs now (None
    when the stage declared none, or outside an executor)."""
    return _CURRENT.get(name)


@contextlib.contextmanager
def sharing(handles: dict[str, Handle]) -> Iterator[None]:
    """Within: ``shared(name)`` answers ``handles[name]`` (set by the executor around an item)."""
    _CURRENT.clear()
    _CURRENT.update(handles)
    try:
        yield
    finally:
        _CURRENT.clear()


def paused_s(state: dict[str, Any]) -> float:
    """The seconds an object's state says it held every worker so far."""
    return float(state.get(PAUSED_KEY) or 0.0)
