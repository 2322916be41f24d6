"""Stage `sources`: the source list read into the sources manifest."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from manifests import schemas
from manifests.schemas import write_manifest
from curate.stagekit.declare import Context, Stage

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- sources

def stage_sources(out: str | Path, run: dict[str, Any], sources_file: str | Path,
                  limit: int | None = None) -> list[dict]:
    from manifests.classes import recipe_classes
    from manifests.source_lists import read_sources, recipe_assigns_split, require_split

    recipe = run["recipe"]
    kw: dict[str, Any] = {}
    if recipe.get("classes"):
        kw["classes"] = recipe_classes(recipe["classes"])
    fmt = recipe.get("source_format", "auto")
    if fmt in ("vggsound", "avsync"):
        kw["url_template"] = recipe.get("url_template")
    rows = require_split(read_sources(sources_file, fmt=fmt, **kw),
                         recipe_assigns_split(recipe.get("select")))
    if limit is not None:
        kept = 0
        for r in rows:
            if r["status"] == schemas.STATUS_OK:
                kept += 1
                if kept > limit:
                    r["status"], r["error"] = schemas.STATUS_SKIPPED, f"beyond --limit {limit}"
    write_manifest(out, "sources", rows)
    ok = sum(r["status"] == schemas.STATUS_OK for r in rows)
    log.info("sources: %d rows, %d accepted", len(rows), ok)
    return rows


def _run(ctx: Context) -> None:
    if ctx.sources is None:
        if schemas.has_manifest(ctx.out, "sources"):
            return          # a rerun without --sources keeps the manifest it has
        raise ValueError("no sources: pass --sources FILE")
    stage_sources(ctx.out, ctx.run, ctx.sources, limit=ctx.limit)


STAGE = Stage("sources", run=_run)
