"""Stages `reproduce-sources` and `reproduce`: exact reproduction of AVSync15 lists (``curate
reproduce``): the lists' sources, then exactly the clips they name (no scoring, no selection).
The lists are the command's argument ``lists``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from manifests import schemas
from manifests.schemas import read_rows, write_manifest
from curate.stagekit.declare import Context, Outputs, Stage, Work


def list_sources(lists: Iterable[str | Path], url_template: str | None) -> list[dict]:
    """Sources of one or more AVSync15 lists (one row per distinct 10-s segment)."""
    from manifests.source_lists import read_avsync_list

    rows, seen = [], set()
    for lst in lists:
        for r in read_avsync_list(lst, url_template=url_template):
            if r["status"] == schemas.STATUS_OK and r["source_id"] in seen:
                continue        # the same segment listed in train and test: download once
            seen.add(r["source_id"])
            rows.append(r)
    return rows


class ReproduceSources(Stage):
    """The lists' sources into the sources manifest."""
    name = "reproduce-sources"
    writes = ("sources",)

    def finish(self, ctx: Context, work: Work | None, result: Any) -> Outputs:
        rows = list_sources(ctx.args["lists"], ctx.run.recipe.get("url_template"))
        write_manifest(ctx.out, "sources", rows)
        return Outputs(rows)


class Reproduce(Stage):
    """Exactly the clips the lists name, from the downloads: the selected table."""
    name = "reproduce"
    reads = ("sources", "downloads")
    writes = ("selected",)

    def finish(self, ctx: Context, work: Work | None, result: Any) -> Outputs:
        from curate.selection.exact_lists import downloads_lookup, reproduce_list

        lookup = downloads_lookup(read_rows(ctx.out, "downloads"), read_rows(ctx.out, "sources"))
        selected: list[dict] = []
        for lst in ctx.args["lists"]:
            selected += reproduce_list(lst, lookup=lookup)
        write_manifest(ctx.out, "selected", selected)
        return Outputs(selected)


SOURCES_STAGE = ReproduceSources()
STAGE = Reproduce()
