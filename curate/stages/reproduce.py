"""Exact reproduction of AVSync15 lists: their sources, then exactly the clips they name."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from manifests import schemas
from manifests.schemas import read_rows, write_manifest


# ----------------------------------------------------------------------------- exact reproduction

def stage_reproduce_sources(out: str | Path, run: dict[str, Any], lists: list[str | Path]) -> list[dict]:
    """Sources of one or more AVSync15 lists (one row per distinct 10-s segment)."""
    from manifests.source_lists import read_avsync_list

    rows, seen = [], set()
    for lst in lists:
        for r in read_avsync_list(lst, url_template=run["recipe"].get("url_template")):
            if r["status"] == schemas.STATUS_OK and r["source_id"] in seen:
                continue        # the same segment listed in train and test: download once
            seen.add(r["source_id"])
            rows.append(r)
    write_manifest(out, "sources", rows)
    return rows


def stage_reproduce(out: str | Path, run: dict[str, Any], lists: list[str | Path]) -> list[dict]:
    """Exactly the clips the lists name (no scoring, no selection): the selected table."""
    from curate.selection.exact_lists import downloads_lookup, reproduce_list

    lookup = downloads_lookup(read_rows(out, "downloads"), read_rows(out, "sources"))
    selected: list[dict] = []
    for lst in lists:
        selected += reproduce_list(lst, lookup=lookup)
    write_manifest(out, "selected", selected)
    return selected
