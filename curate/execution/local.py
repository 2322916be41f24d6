"""The serial, in-process executor (tests, ``--executor local``)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

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
        from curate.ops import health

        config = health.stage_config(spec.health, spec.rate_per_s)
        if config is None:
            yield from self._run(spec, items)
            return
        control = health.HealthControl(health.HealthConfig.from_dict(config))
        health.set_gate(health.local_gate(control, spec.on_health))
        try:
            yield from self._run(spec, items)
        finally:
            health.set_gate(None)
            if spec.on_health is not None:
                spec.on_health(control.state_dict())

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
