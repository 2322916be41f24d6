"""What a stage is (``Stage``: the base class of every class in ``curate/stages/``), what it
receives (``Context``, holding the typed ``Run``) and returns (``Work`` to run, ``Outputs``),
engine options per stage, the failure summary. ``curate.build.run_stage`` is the one loop
that runs a stage: see ``Stage``."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from manifests import schemas
from curate.config.run import Run
from curate.execution.checkpoints import StageResult, format_failures
from curate.execution.spec import Executor, Item, StageSpec

Echo = Callable[[str], None] | None


@dataclass(frozen=True)
class Context:
    """What every stage receives: the output folder, the typed read-only ``Run`` (resolved
    once by the build), the executor, and the command's arguments."""
    out: str | Path
    run: Run
    executor: Executor | None = None
    sources: str | Path | None = None    # the source list (`sources` stage)
    limit: int | None = None             # sources beyond it are skipped
    retry_failed: bool = False           # downloads failed for a transient reason are redone
    echo: Callable[[str], None] = print
    #: a command's stage arguments (``curate score``'s rescore, reproduce's lists)
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Work:
    """The items a stage hands the executor this time, the keys redone even if finished,
    the output schemas, and run.json entries recorded before the items run (a rescore's base
    fingerprints: a killed rescore must find them)."""
    items: list[Item]
    redo: set[str] = field(default_factory=set)
    schemas: dict[str, pa.Schema] | None = None
    record: dict[str, Any] = field(default_factory=dict)
    #: what ``work`` prepared that ``finish`` needs too (the shard stage's split groups)
    plan: Any = None


@dataclass
class Outputs:
    """What a stage returns: ``value`` for its caller (rows, a table, a summary), ``record``
    the run.json entries the build writes for it (a stage never writes the run itself)."""
    value: Any = None
    record: dict[str, Any] = field(default_factory=dict)


class Stage:
    """A stage: one class per file of ``curate/stages/``, one instance in ``STAGES``.

    Declares its ``name`` (as recipes list it), the manifests it ``reads`` and ``writes``,
    whether it scores with model weights (``needs_weights``: the build checks them once,
    before it) or makes them (``trains_weights``). The build's loop
    (``curate.build.run_stage``) calls, in order:

    * ``configure(args)``: run.json entries a command's arguments set (``--set``), recorded
      before the ``Run`` is resolved;
    * ``spec(ctx)``: the per-item function and resources (``StageSpec``: ``factory`` is the
      setup, run once per worker, returning the process function ``item -> outputs``;
      ``stateful`` actors, ``num_gpus``, ``batch_size``, ``concurrency``, ``timeout_s``);
      None for stages without items (sources, select, train-sync, reproduce);
    * ``work(ctx, spec)``: this run's items (``Work``), or None when nothing is to run;
    * the executor runs the items through ``execution.checkpoints.run_stage``;
    * ``finish(ctx, work, result)``: the manifests written from the records (``result``, a
      ``StageResult``, None when nothing ran), returning ``Outputs``; the loop records
      ``Outputs.record`` in run.json.
    """
    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    needs_weights: ClassVar[bool] = False
    trains_weights: ClassVar[bool] = False

    def configure(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def spec(self, ctx: Context) -> StageSpec | None:
        return None

    def work(self, ctx: Context, spec: StageSpec | None) -> Work | None:
        return None

    def finish(self, ctx: Context, work: Work | None, result: StageResult | None) -> Outputs:
        return Outputs()

    def __repr__(self) -> str:
        return f"<stage {self.name}>"


# ----------------------------------------------------------------------------- helpers


def run_kw(run: Run) -> dict[str, Any]:
    """How often the checkpoint of a running stage is flushed (the run's engine options)."""
    eng = run.engine
    return {"flush_items": int(eng["flush_items"]), "flush_seconds": float(eng["flush_seconds"])}


def spec_kw(run: Run, stage: str) -> dict[str, Any]:
    """The per-item timeout of ``stage`` and the tries of an item whose worker died."""
    eng = run.engine
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
