"""Runs a recipe's stages in order from the declared list (``curate.stages.STAGES``): what
`curate build`, `curate reproduce` and the per-stage commands call."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from curate.config.models import check_weights, record_weights
from curate.config.recipes import get_recipe
from curate.config.run_state import new_run
from curate.stages import Context, stage
from curate.stages.reproduce import stage_reproduce, stage_reproduce_sources
from manifests import scratch

log = logging.getLogger(__name__)


def remove_stale_temps(out: str | Path) -> int:
    """Remove what earlier killed runs left: atomic-write temp files (``.*.tmp``) anywhere
    under ``out``, download work dirs (``media/raw/.*.part/``) and shard temps
    (``shards/.*.tar.*.tmp``), and the scratch folders of ended workers
    (``manifests.scratch``). Returns how many temp files were removed from ``out``."""
    import shutil
    from manifests.atomic import is_temp_name

    out = Path(out)
    n = 0
    for sub in ("manifests", "media", "shards", "work"):
        root = out / sub
        if not root.is_dir():
            continue
        for p in root.rglob(".*"):
            if p.is_dir() and p.name.endswith(".part") and p.parent == out / "media" / "raw":
                shutil.rmtree(p, ignore_errors=True)
                n += 1
            elif p.is_file() and (is_temp_name(p.name) or ".tar." in p.name and p.name.endswith(".tmp")):
                p.unlink(missing_ok=True)
                n += 1
    for p in out.glob(".*.tmp"):       # run.json's temp
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    if n:
        log.info("removed %d temp files left by an earlier killed run", n)
    scratch.remove_stale()
    return n


def run_stages(out: str | Path, run: dict[str, Any], executor, stages: list[str],
               sources: str | Path | None = None, limit: int | None = None,
               retry_failed: bool = False, echo: Callable[[str], None] = print) -> None:
    """Run ``stages`` in order; each stage skips work its checkpoints say is finished and
    echoes a failure summary by reason at its end. Holds the output's lock (``curate.execution.lock``:
    reentrant, the command line takes it first)."""
    from curate.execution.lock import output_lock
    with output_lock(out, "curate"):
        _run_stages(out, run, executor, stages, sources, limit, retry_failed, echo)


#: stages that run the ffmpeg program (downloads, cuts)
FFMPEG_STAGES = {"download", "shard"}


def preflight(out: str | Path, stages: list[str]) -> None:
    """Before any stage: the scratch folder and the output are usable and have room, and the
    tools the stages run are there; else ``EnvironmentFault`` naming what to change (the
    stage would otherwise fail every item the same way, none of them for its own fault)."""
    import shutil
    from curate.ops.ffmpeg import FFMPEG_MISSING
    from manifests.faults import EnvironmentFault

    scratch.preflight()
    free = scratch.free_bytes(out)
    if free < scratch.MIN_FREE_BYTES:
        raise EnvironmentFault(f"the output folder {out} has {free >> 10} KiB free (a stage needs "
                               f"at least {scratch.MIN_FREE_BYTES >> 20} MiB): free space there "
                               f"or choose another --out")
    if FFMPEG_STAGES & set(stages) and shutil.which("ffmpeg") is None:
        raise EnvironmentFault(FFMPEG_MISSING)


def _run_stages(out, run, executor, stages, sources, limit, retry_failed, echo) -> None:
    remove_stale_temps(out)
    preflight(out, stages)
    ctx = Context(out, run, executor, sources=sources, limit=limit, retry_failed=retry_failed, echo=echo)
    for name in stages:
        echo(f"== {name}")
        stage(name).run(ctx)


def build(recipe_name: str, out: str | Path, executor, *, sources: str | Path | None = None,
          limit: int | None = None, config: str | Path | None = None,
          options: dict[str, Any] | None = None, retry_failed: bool = False,
          echo: Callable[[str], None] = print) -> dict[str, Any]:
    recipe = get_recipe(recipe_name, config)
    Path(out).mkdir(parents=True, exist_ok=True)
    run = new_run(out, recipe, options or {})
    if "score" in recipe["stages"]:
        # a missing, changed or broken weight file fails now, not after hours of downloads
        record_weights(out, run)
        check_weights(run)
    run_stages(out, run, executor, recipe["stages"], sources=sources, limit=limit,
               retry_failed=retry_failed, echo=echo)
    return run


def reproduce(lists: list[str | Path], out: str | Path, executor, *, url_template: str | None = None,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Exact reproduction of AVSync15 lists: sources -> download -> the named clips -> shards."""
    recipe = get_recipe("avsync15")
    recipe["name"] = "avsync15-exact"
    recipe["download"]["rendition"] = "full"     # nothing is scored: fetch the clips' rendition once
    if url_template:
        recipe["url_template"] = url_template
    Path(out).mkdir(parents=True, exist_ok=True)
    run = new_run(out, recipe, {})
    echo("== sources")
    stage_reproduce_sources(out, run, lists)
    run_stages(out, run, executor, ["download"], echo=echo)
    echo("== reproduce")
    stage_reproduce(out, run, lists)
    run_stages(out, run, executor, ["shard"], echo=echo)
    return run
