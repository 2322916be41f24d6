"""The one loop that runs stages (``run_stage``: items -> executor -> records -> manifests
-> outputs recorded in run.json), over a recipe's stages in order from the declared list
(``curate.stages.STAGES``): what `curate build`, `curate reproduce` and the per-stage
commands call. The run is resolved into a typed ``Run`` when the stages start and handed
to every stage; stages return their outputs and only this loop records them."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from curate.config.models import check_weights, record_weights
from curate.config.recipes import get_recipe
from curate.config.run import resolve
from curate.config.run_state import new_run, record_run
from curate.execution.checkpoints import run_stage as run_items
from curate.stagekit.declare import Context, Outputs, Stage, run_kw
from curate.stages import stage
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


StageArg = str | Stage


def run_stages(out: str | Path, run: dict[str, Any], executor, stages: Sequence[StageArg],
               sources: str | Path | None = None, limit: int | None = None,
               retry_failed: bool = False, echo: Callable[[str], None] = print,
               args: dict[str, Any] | None = None) -> list[Outputs]:
    """Run ``stages`` (names or ``Stage`` objects) in order; each stage skips work its
    checkpoints say is finished and echoes a failure summary by reason at its end. Holds
    the output's lock (``curate.execution.lock``: reentrant, the command line takes it
    first). ``args``: the command's stage arguments (``Context.args``)."""
    from curate.execution.lock import output_lock
    with output_lock(out, "curate"):
        return _run_stages(out, run, executor, [_stage(s) for s in stages], Context(
            out, resolve(run), executor, sources=sources, limit=limit, retry_failed=retry_failed,
            echo=echo, args=args or {}))


def _stage(s: StageArg) -> Stage:
    return s if isinstance(s, Stage) else stage(s)


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


def _run_stages(out, run: dict[str, Any], executor, stages: list[Stage], ctx: Context) -> list[Outputs]:
    remove_stale_temps(out)
    preflight(out, [s.name for s in stages])
    done: list[Outputs] = []
    checked = False
    for i, st in enumerate(stages):
        if not checked and weights_due(stages[i:]):
            # before the first stage: a missing, changed or broken weight file fails now,
            # not after hours of downloads; after a stage that trains them, once it did
            check_run_weights(out, run)
            checked = True
        ctx.echo(f"== {st.name}")
        done.append(run_stage(st, run, ctx))
    return done


def weights_due(stages: Sequence[Stage]) -> bool:
    """Whether the weights are checked before the first of ``stages``: a later stage scores
    with them and none before it trains them."""
    for st in stages:
        if st.needs_weights:
            return True
        if st.trains_weights:
            return False
    return False


def check_run_weights(out: str | Path, run: dict[str, Any]) -> None:
    """Record the weight files (file, size, sha256 in run.json; a changed cache refused)
    and check them by keys and shapes, in the driver, once for the stages that follow."""
    record_weights(out, run)
    check_weights(run)


def run_stage(st: Stage, run: dict[str, Any], ctx: Context) -> Outputs:
    """The one loop body every stage runs through: the command's arguments recorded
    (``configure``), the ``Run`` resolved (the same object while the run is unchanged), the
    per-item function and resources (``spec``), the items (``work``) through the executor
    under the stage's checkpoint, the manifests written (``finish``), and what the stage
    returned recorded in run.json. ``run`` is the run dict this loop alone writes."""
    record_run(ctx.out, run, st.configure(ctx.args))
    ctx = replace(ctx, run=resolve(run))
    spec = st.spec(ctx)
    work = st.work(ctx, spec)
    result = None
    if work is not None:
        if record_run(ctx.out, run, work.record):
            ctx = replace(ctx, run=resolve(run))     # finish reads what was recorded (rescore bases)
        result = run_items(ctx.out, spec, work.items, ctx.executor, redo=work.redo, schemas=work.schemas,
                           **run_kw(ctx.run))
    outputs = st.finish(ctx, work, result)
    record_run(ctx.out, run, outputs.record)
    return outputs


def stage_value(name: StageArg, out: str | Path, run: dict[str, Any], executor=None, *,
                echo: Callable[[str], None] = lambda _line: None, **kw: Any) -> Any:
    """Run one stage outside a build (tests, benchmarks, `curate sources / score / select`)
    through the same loop, without the lock, preflight or weight check (the caller's): the
    stage's value. ``kw``: ``Context`` fields (sources, limit, retry_failed) and the stage's
    arguments."""
    fields = {k: kw.pop(k) for k in ("sources", "limit", "retry_failed") if k in kw}
    st = _stage(name)
    ctx = Context(out, resolve(run), executor, echo=echo, args=kw, **fields)
    return run_stage(st, run, ctx).value


def build(recipe_name: str, out: str | Path, executor, *, sources: str | Path | None = None,
          limit: int | None = None, config: str | Path | None = None,
          options: dict[str, Any] | None = None, retry_failed: bool = False,
          echo: Callable[[str], None] = print) -> dict[str, Any]:
    recipe = get_recipe(recipe_name, config)
    Path(out).mkdir(parents=True, exist_ok=True)
    run = new_run(out, recipe, options or {})
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
    run_stages(out, run, executor, ["reproduce-sources", "download", "reproduce", "shard"], echo=echo,
               args={"lists": list(lists)})
    return run
