"""The stages of a curation run: one ``Stage`` class per module (``curate.stagekit.declare``),
one instance of each in ``STAGES``, in the order a recipe may list them. ``curate.build``
runs them, by name, through its one loop."""
from __future__ import annotations

from curate.stages import certify, download, reproduce, score, select, shard, sources, split, train_sync
from curate.stagekit.declare import Context, Stage

#: every stage, in pipeline order (reproduce's two run only in `curate reproduce`)
STAGES: tuple[Stage, ...] = (sources.STAGE, reproduce.SOURCES_STAGE, download.STAGE, split.STAGE,
                             train_sync.STAGE, score.STAGE, select.STAGE, reproduce.STAGE,
                             certify.STAGE, select.GATE, shard.STAGE)
_BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    """The declared stage called ``name`` (as a recipe's ``stages`` lists it)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}") from None


__all__ = ["STAGES", "Context", "Stage", "stage"]
