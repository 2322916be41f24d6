"""The serial, in-process executor (tests, ``--executor local``)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

from curate.execution.shared import Handle, sharing
from curate.execution.spec import Item, Outputs, StageSpec, safe_call
from manifests.faults import fault_of


class LocalExecutor:
    """Serial, in-process: same code path as the Ray workers, for tests and debugging.

    No per-item timeout or worker-death handling (there is no separate worker)."""

    def __init__(self) -> None:
        self._fns: dict[str, Callable[..., Outputs]] = {}
        self._prep: dict[str, Callable[[Item], Any]] = {}
        self.started = 0           # stage runs that did work (a finished rerun leaves it)

    def run(self, spec: StageSpec, items: list[Item]) -> Iterator[tuple[Item, Outputs]]:
        objects = {name: s.make() for name, s in (spec.shared or {}).items()}
        handles = {name: _local_handle(obj, spec.shared[name].on_state) for name, obj in objects.items()}
        try:
            with sharing(handles):
                yield from self._run(spec, items)
        finally:
            for name, obj in objects.items():
                if spec.shared[name].on_state is not None:
                    spec.shared[name].on_state(obj.status(), True)

    def _run(self, spec: StageSpec, items: list[Item]) -> Iterator[tuple[Item, Outputs]]:
        self.started += 1
        if spec.name not in self._fns:
            self._fns[spec.name] = spec.factory()
        fn = self._fns[spec.name]
        prep = None
        if spec.prepare is not None:
            prep = self._prep.setdefault(spec.name, spec.prepare())
        for item in items:
            if prep is None:
                yield item, safe_call(fn, spec, item)
                continue
            try:
                payload = prep(item)
            except Exception as e:  # noqa: BLE001
                if fault_of(e) is not None:       # the machine's fault: the stage stops
                    raise fault_of(e) from e
                yield item, spec.on_error(item, f"prepare: {type(e).__name__}: {e}")
                continue
            yield item, safe_call(fn, spec, item, payload)


def _local_handle(obj: Any, on_state: Callable[[dict[str, Any], bool], None] | None) -> Handle:
    """A handle on an in-process object; after each call its state goes to ``on_state``
    (in process there is no loop round to poll in: a call may wait a long time)."""
    def call(method: str, *args: Any) -> Any:
        answer = getattr(obj, method)(*args)
        if on_state is not None:
            on_state(obj.status(), False)
        return answer
    return Handle(call)
