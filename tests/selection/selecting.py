"""The production selection (``curate.selection.balance.select_clips_table``, columnar) on the
row dicts tests write clips as."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from curate.selection.balance import select_clips_table
from manifests import schemas


def select_rows(clips: Iterable[Mapping[str, Any]], params: Mapping[str, Any],
                **kw: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(SELECTED rows, summary) of ``clips`` (columns the CLIPS table lacks are left out)."""
    names = set(schemas.CLIPS.names)
    table = schemas.to_table([{k: v for k, v in c.items() if k in names} for c in clips], schemas.CLIPS)
    selected, summary = select_clips_table(table, params, **kw)
    return selected.to_pylist(), summary
