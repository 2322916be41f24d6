"""What every stage shares: the Stage declaration, the build context, engine options per
stage, the failure summary."""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable
import pyarrow as pa
import pyarrow.compute as pc
from manifests import schemas
from curate.execution.checkpoints import format_failures
from curate.config.run_state import engine_options

Echo = Callable[[str], None] | None

# ----------------------------------------------------------------------------- helpers


def run_kw(run: dict[str, Any], stage: str) -> dict[str, Any]:
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
