"""Stage `sources`: the source list read into the sources manifest."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from manifests import schemas
from manifests.schemas import write_manifest
from curate.stagekit.declare import Context, Outputs, Stage, Work

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- sources

def read_source_rows(out: str | Path, recipe: Mapping[str, Any], sources_file: str | Path,
                     limit: int | None = None) -> list[dict]:
    """The source list's rows (beyond ``limit`` accepted ones: skipped), written as the
    sources manifest."""
    from manifests.classes import recipe_classes
    from manifests.source_lists import read_sources, recipe_assigns_split, require_split

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


class Sources(Stage):
    """The source list (``--sources``) read into the sources manifest; a rerun without it
    keeps the manifest it has."""
    name = "sources"
    writes = ("sources",)

    def finish(self, ctx: Context, work: Work | None, result: Any) -> Outputs:
        if ctx.sources is None:
            if schemas.has_manifest(ctx.out, "sources"):
                return Outputs(None)
            raise ValueError("no sources: pass --sources FILE")
        return Outputs(read_source_rows(ctx.out, ctx.run.recipe, ctx.sources, limit=ctx.limit))


STAGE = Sources()
