"""The stages of a curation run, each one declared object (``base.Stage``), in the order a
recipe may list them. ``curate.build`` runs a recipe's stage names through ``stage``."""
from __future__ import annotations

from curate.stages import certify, download, score, select, shard, sources, split, train_sync
from curate.stagekit.declare import Context, Stage

#: every stage, in pipeline order
STAGES: tuple[Stage, ...] = (sources.STAGE, download.STAGE, split.STAGE, train_sync.STAGE,
                             score.STAGE, select.STAGE, certify.STAGE, shard.STAGE)
_BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    """The declared stage called ``name`` (as a recipe's ``stages`` lists it)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}") from None


__all__ = ["STAGES", "Context", "Stage", "stage"]
