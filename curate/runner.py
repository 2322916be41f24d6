"""Checkpointed, executor-agnostic stage runner.

A stage maps items (JSON-able dicts, one per source or segment) to outputs
(``{table: [rows]}``). Work is done in chunks; every finished chunk is written atomically to
``<out>/work/<stage>/part-NNNNN.json`` together with the keys of the items it covered, so a
killed build resumes where it stopped and a rerun skips finished work. The stage's manifest
is rebuilt from all parts, later parts overriding earlier rows with the same primary key.

Executors: ``LocalExecutor`` (serial, for tests and debugging) here, and the Ray executor in
``curate.engine`` (the only module that imports Ray).
"""
from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from tqdm.auto import tqdm
from manifests.atomic import write_json

log = logging.getLogger(__name__)

Item = dict[str, Any]
Outputs = dict[str, list[dict[str, Any]]]
#: builds the per-item function once per worker (models load once per actor)
Factory = Callable[[], Callable[[Item], Outputs]]

PRIMARY_KEYS = {"downloads": "source_id", "shots": "shot_id", "windows": "window_id",
                "cuts": "key"}


@dataclass
class StageSpec:
    name: str
    factory: Factory
    #: builds the failure outputs of an item whose function raised: nothing is lost
    on_error: Callable[[Item, str], Outputs]
    stateful: bool = False       # True: models held by long-lived workers (Ray actors)
    num_gpus: float = 0.0
    batch_size: int = 1


class Executor(Protocol):
    def map(self, spec: StageSpec, items: list[Item]) -> Iterable[Outputs]: ...


def safe_call(fn: Callable[[Item], Outputs], spec: StageSpec, item: Item) -> Outputs:
    """Run one item; an unexpected exception becomes that item's recorded failure."""
    try:
        return fn(item)
    except Exception as e:  # noqa: BLE001 - one bad item must never kill the stage
        log.warning("%s failed on %s: %s", spec.name, item.get("key"), e)
        log.debug("%s", traceback.format_exc())
        return spec.on_error(item, f"{type(e).__name__}: {e}")


class LocalExecutor:
    """Serial, in-process: same code path as the Ray workers, for tests and debugging."""

    def __init__(self) -> None:
        self._fns: dict[str, Callable[[Item], Outputs]] = {}

    def map(self, spec: StageSpec, items: list[Item]) -> Iterable[Outputs]:
        if spec.name not in self._fns:
            self._fns[spec.name] = spec.factory()
        fn = self._fns[spec.name]
        for item in items:
            yield safe_call(fn, spec, item)


@dataclass
class StageResult:
    outputs: Outputs = field(default_factory=dict)
    ran: int = 0
    skipped: int = 0


def _atomic_json(obj: Any, path: Path) -> None:
    write_json(path, obj)


def _load_parts(work: Path) -> list[dict]:
    parts = []
    for p in sorted(work.glob("part-*.json")):
        try:
            parts.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            # an atomic rename never leaves half a part; anything unreadable is redone
            log.warning("ignoring unreadable checkpoint %s: %s", p, e)
    return parts


def _merge_outputs(parts: list[dict]) -> Outputs:
    merged: dict[str, dict[Any, dict]] = {}
    unkeyed: dict[str, list[dict]] = {}
    for part in parts:
        for table, rows in part["outputs"].items():
            pk = PRIMARY_KEYS.get(table)
            for row in rows:
                if pk and row.get(pk) is not None:
                    merged.setdefault(table, {})[row[pk]] = row
                else:
                    unkeyed.setdefault(table, []).append(row)
    out: Outputs = {t: list(rows.values()) for t, rows in merged.items()}
    for t, rows in unkeyed.items():
        out.setdefault(t, []).extend(rows)
    return out


def run_stage(out: str | Path, spec: StageSpec, items: list[Item], executor: Executor,
              chunk_size: int = 64, progress: bool = True, redo: set[str] | None = None) -> StageResult:
    """Run ``spec`` over the items not yet done (and those in ``redo``); return all outputs,
    old and new (a redone item's new rows replace its old ones).

    Each item needs a unique ``key``.
    """
    work = Path(out) / "work" / spec.name
    parts = _load_parts(work)
    done = {k for p in parts for k in p["keys"]} - (redo or set())
    todo = [it for it in items if it["key"] not in done]
    n_next = len(parts)
    bar = tqdm(total=len(todo), desc=spec.name, unit="item", disable=not progress or not todo)
    for i in range(0, len(todo), chunk_size):
        chunk = todo[i:i + chunk_size]
        outputs: Outputs = {}
        for o in executor.map(spec, chunk):
            for table, rows in o.items():
                outputs.setdefault(table, []).extend(rows)
            bar.update(1)
        part = {"keys": [it["key"] for it in chunk], "outputs": outputs}
        while (work / f"part-{n_next:05d}.json").exists():
            n_next += 1
        _atomic_json(part, work / f"part-{n_next:05d}.json")
        parts.append(part)
        n_next += 1
    bar.close()
    return StageResult(outputs=_merge_outputs(parts), ran=len(todo), skipped=len(items) - len(todo))
