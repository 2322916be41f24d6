"""What every stage shares: the Stage declaration, the build context, engine options per
stage, the failure summary."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from manifests import schemas
from curate.execution.checkpoints import format_failures
from curate.execution.spec import Executor, Item, StageSpec
from curate.config.run_state import engine_options

Echo = Callable[[str], None] | None


@dataclass
class Context:
    """One build's state, handed to every stage's ``run``."""
    out: str | Path
    run: dict[str, Any]
    executor: Executor
    sources: str | Path | None = None    # the source list (`sources` stage)
    limit: int | None = None             # sources beyond it are skipped
    retry_failed: bool = False           # downloads failed for a transient reason are redone
    echo: Callable[[str], None] = print


@dataclass(frozen=True)
class Stage:
    """A stage as one declared object.

    ``run(ctx)`` is the whole stage: it reads the earlier stages' manifests, builds its
    ``items(ctx)`` (JSON-able dicts with a ``key`` and the ``inputs`` that fingerprint them),
    hands them with its ``spec(run)`` to ``execution.checkpoints.run_stage`` and writes its
    manifests. The spec declares the per-item function (``factory``), the failure rows of an
    item that raised or whose worker died (``on_error``) and the resources (``stateful``
    actors, ``num_gpus``, ``batch_size``, ``concurrency``, ``timeout_s``, ``shared`` objects).
    Stages without items (sources, select, train-sync) have only ``run``.
    """
    name: str                                          # as in a recipe's ``stages``
    run: Callable[[Context], Any]
    spec: Callable[[dict[str, Any]], StageSpec] | None = None
    items: Callable[[Context], list[Item]] | None = None

# ----------------------------------------------------------------------------- helpers


def run_kw(run: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint runner's options of a run (how often records are flushed; the same for
    every stage)."""
    eng = engine_options(run)
    return {"flush_items": int(eng["flush_items"]), "flush_seconds": float(eng["flush_seconds"])}


def spec_kw(run: dict[str, Any], stage: str) -> dict[str, Any]:
    eng = engine_options(run)
    timeout = (eng.get("timeout_s") or {}).get(stage)
    return {"timeout_s": float(timeout) if timeout else None, "max_tries": int(eng["max_tries"])}


def summarize_failures(stage: str, table: pa.Table | None, echo: Echo,
                       reason_col: str | None = None) -> str | None:
    """Echo ``stage: N failed: a reason1, b reason2`` over the stage's current rows."""
    if table is None or table.num_rows == 0 or "status" not in table.column_names:
        return None
    failed = table.filter(pc.equal(table["status"], schemas.STATUS_FAILED))
    if failed.num_rows == 0:
        return None
    if reason_col and reason_col in failed.column_names:
        reasons = [r or "error" for r in failed[reason_col].to_pylist()]
    else:
        reasons = [(e or "error").split(":")[0].strip()[:60] for e in failed["error"].to_pylist()]
    line = format_failures(stage, Counter(reasons))
    if echo and line:
        echo(line)
    return line


def empty_table(table: str) -> pa.Table:
    return schemas.TABLES[table].empty_table()
