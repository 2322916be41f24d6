"""The actor pool of a stateful stage run (models load once per actor), fed by optional
prepare (decode) tasks."""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Iterator

from curate.execution.ray.driver import SharedWatch, _death_reason, _get, _raise_setup_error, _wait_ready
from curate.execution.ray.worker import _prepare_body
from curate.execution.spec import Item, Outputs, StageSpec, raise_fault

log = logging.getLogger(__name__)

class _ActorPool:
    """One stateful stage run: a pool of actors fed by optional prepare (decode) tasks.

    State, by name: ``todo`` (items not started), ``preps`` (prepare task -> item, payload,
    start), ``prepared`` (items ready for an actor, with their payload), ``idle`` actors,
    ``calls`` (actor call -> actor, the items it took, start), ``tries`` per item key of
    calls whose actor died, ``solo`` (items of a timed-out batch: retried one at a time).
    """

    def __init__(self, ex: Any, spec: StageSpec, items: list[Item], watch: SharedWatch) -> None:
        import ray

        self.ex, self.spec, self.watch = ex, spec, watch
        self.size, self.n_gpu = ex._pool_size(spec, len(items))
        self.batch = max(1, spec.batch_size)
        # decode slots: the CPUs left beside the actors, at least one
        self.prep_slots = max(1, ex.workers)
        self.cpu = ex._cpus_per(self.size + (self.prep_slots if spec.prepare else 0))
        self.spec_ref = ray.put(spec)
        self.starting: dict[Any, Any] = {}       # actor -> its ready ref, until it is built
        self.actors = [self._new_actor() for _ in range(self.size)]
        self.idle: deque = deque(self.actors)
        self.prep = ray.remote(_prepare_body).options(num_cpus=self.cpu, num_returns=2,
                                                      max_retries=max(spec.max_tries - 1, 0))
        self.todo: deque = deque(items)
        self.tries: dict[str, int] = {}
        self.solo: set[str] = set()
        self.prepared: deque = deque()                             # (item, payload ref or None)
        self.preps: dict[Any, tuple[Item, Any, float]] = {}        # status ref -> item, payload
        self.calls: dict[Any, tuple[Any, list, float]] = {}        # call ref -> actor, [(item, payload)]
        self.queue_cap = 2 * self.size * self.batch   # prepared items waiting: bounds object-store use

    def _new_actor(self):
        a = self.ex._new_actor(self.spec_ref, self.cpu, self.n_gpu, self.watch.actors)
        self.starting[a] = a.__ray_ready__.remote()
        return a

    def _hold_starting(self) -> None:
        """A call's timeout clock runs from when its actor is built: a model's load (slow on a
        loaded machine) is the actor's start, not the item's work."""
        import ray
        if not self.starting:
            return
        refs = list(self.starting.values())
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        ready = set(ready)
        self.starting = {a: r for a, r in self.starting.items() if r not in ready}
        now = time.monotonic()
        for ref, (a, take, t0) in list(self.calls.items()):
            if a in self.starting:
                self.calls[ref] = (a, take, max(t0, now))

    def run(self) -> Iterator[tuple[Item, Outputs]]:
        while self.todo or self.prepared or self.preps or self.calls:
            self.start_prepares()
            self.dispatch()
            self.watch.poll()
            waiting = list(self.preps) + list(self.calls)
            if not waiting:
                continue
            for ref in _wait_ready(waiting, self._wait_s()):
                if ref in self.preps:
                    yield from self.on_prepared(ref)
                else:
                    yield from self.on_call(ref)
            yield from self.expire_prepares()
            yield from self.expire_calls()

    def start_prepares(self) -> None:
        while self.todo and len(self.preps) < self.prep_slots and len(self.prepared) < self.queue_cap:
            it = self.todo.popleft()
            if self.spec.prepare is None:
                self.prepared.append((it, None))
            else:
                st, payload = self.prep.remote(self.spec_ref, it, self.ex._driver_pid)
                self.preps[st] = (it, payload, time.monotonic())

    def dispatch(self) -> None:
        """Hand prepared items to idle actors, up to ``batch`` per call."""
        while self.idle and self.prepared:
            a = self.idle.popleft()
            take = [self.prepared.popleft()]
            # near the end, share what is left between the actors instead of handing one
            # actor a full batch while another idles
            left = len(self.prepared) + 1 + len(self.todo) + len(self.preps)
            share = max(1, -(-left // self.size))
            if take[0][0]["key"] not in self.solo:
                while self.prepared and len(take) < min(self.batch, share) \
                        and self.prepared[0][0]["key"] not in self.solo:
                    take.append(self.prepared.popleft())
            pl = [p for _, p in take] if self.spec.prepare else []
            self.calls[a.call.remote([it for it, _ in take], *pl)] = (a, take, time.monotonic())

    def _wait_s(self) -> float:
        ex, spec = self.ex, self.spec
        return min(ex._wait_s(spec, {r: (None, v[2]) for r, v in self.preps.items()}),
                   ex._wait_s(spec, {r: (None, v[2]) for r, v in self.calls.items()}))

    def on_prepared(self, ref: Any) -> Iterator[tuple[Item, Outputs]]:
        import ray

        it, payload, _t = self.preps.pop(ref)
        try:
            err = _get(ref)
        except ray.exceptions.RayError as e:
            err = f"prepare: {_death_reason(e)} after {self.spec.max_tries} tries"
        raise_fault(err)
        if err:
            yield it, self.spec.on_error(it, err)
        else:
            self.prepared.append((it, payload))

    def on_call(self, ref: Any) -> Iterator[tuple[Item, Outputs]]:
        import ray

        a, take, _t = self.calls.pop(ref)
        try:
            outs = _get(ref)
        except ray.exceptions.RayError as e:
            yield from self.actor_died(e, a, take)
            return
        _raise_setup_error(self.spec, outs)
        self.idle.append(a)
        for (it, _p), o in zip(take, outs):
            yield it, o

    def replace(self, a: Any) -> None:
        """A fresh actor in place of ``a`` (killed first), idle."""
        import ray
        try:
            ray.kill(a, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.actors.remove(a)
        self.starting.pop(a, None)
        new = self._new_actor()
        self.actors.append(new)
        self.idle.append(new)

    def actor_died(self, e: BaseException, a: Any, take: list) -> Iterator[tuple[Item, Outputs]]:
        """A dead actor: a fresh one replaces it; its items retry up to ``max_tries``."""
        reason = _death_reason(e)
        log.warning("%s: %s (%d items in the call)", self.spec.name, reason, len(take))
        self.replace(a)
        for it, p in reversed(take):
            k = it["key"]
            self.tries[k] = self.tries.get(k, 1) + 1
            if self.tries[k] > self.spec.max_tries:
                yield it, self.spec.on_error(it, f"{reason} after {self.spec.max_tries} tries")
            else:
                self.prepared.appendleft((it, p))

    def expire_prepares(self) -> Iterator[tuple[Item, Outputs]]:
        """Prepare tasks past the timeout are cancelled; their items fail."""
        import ray
        spec = self.spec
        over = self.ex._overdue(spec, {r: (v[0], v[2]) for r, v in self.preps.items()})
        for ref, (it, _t0) in list(over):
            ray.cancel(ref, force=True)
            self.preps.pop(ref)
            yield it, spec.on_error(it, f"timeout: prepare gave no result after {spec.timeout_s:g} s")

    def expire_calls(self) -> Iterator[tuple[Item, Outputs]]:
        """A hung actor is replaced; a single item fails, a batch's items retry alone."""
        spec = self.spec
        self._hold_starting()
        over = self.ex._overdue(spec, {r: (v[1], v[2]) for r, v in self.calls.items()},
                                scale=lambda v: len(v[0]))
        for ref, _v in over:
            a, take, _t = self.calls.pop(ref)
            self.replace(a)
            if len(take) == 1:
                it = take[0][0]
                yield it, spec.on_error(it, f"timeout: no result after {spec.timeout_s:g} s")
            else:      # which item hung is unknown: each gets a try of its own
                for it, p in reversed(take):
                    self.solo.add(it["key"])
                    self.prepared.appendleft((it, p))

    def close(self) -> None:
        import ray
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.watch.kill()
