"""Stage `score`: every window scored by the cascade (actors hold the models; decode runs
as CPU tasks in front); ``rescore`` scores what looser thresholds admit."""
from __future__ import annotations

import logging
import functools
from pathlib import Path

from manifests import schemas
from curate.execution.spec import StageSpec
from curate.execution.checkpoints import StageResult, item_fingerprint
from curate.config.models import build_scorers
from curate.config.run import Run
from curate.stagekit.declare import Context, Outputs, Stage, Work, spec_kw, summarize_failures
from curate.stagekit.inputs import ok_paths
from curate.stagekit.window_table import (WINDOW_INPUTS, assemble_windows, base_windows, iter_score_items,
                                   score_items, score_params, stored_columns)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- score

def _decode_factory():
    from decoding.media import decode_grid

    def prep(item: dict):
        # the whole segment, once, for all its windows; grid times relative to the segment
        a, b = item.get("seg") or (None, None)
        if a is None:
            return decode_grid(item["path"])
        return decode_grid(item["path"], 0.0, b - a, offset=a)
    return prep


def _score_factory(models: dict, run_models: dict, th: dict, gate: list[str],
                   order: tuple[str, ...] | None = None):
    import torch

    from curate.ops.scoring import deterministic_torch

    deterministic_torch()       # a window's scores: the same bits in every run
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scorers = build_scorers(models, run_models, device)

    def batch(items: list[dict], grids: list) -> list[dict]:
        """All the segments of an actor call (``scoring.score_segments``: per-segment
        forward passes, so the result does not depend on the call's composition)."""
        return _score_many(scorers, th, gate, items, grids, order)

    def fn(item: dict, grid) -> dict:
        return batch([item], [grid])[0]
    fn.batch = batch   # the scoring actor passes a whole call here (``curate.execution.ray.worker._StageActor``)
    return fn


def item_windows(item: dict) -> list[dict]:
    """The window rows of a score item: id, shot and times, plus the stored scores of a
    rescore (the other filters' scores gate its cascade)."""
    ws = [dict(zip(WINDOW_INPUTS, w)) for w in item["inputs"]["windows"]]
    for w, stored in zip(ws, item["inputs"].get("stored") or ()):
        w.update(zip(stored_columns(), stored))
    return ws


def _score_many(scorers, th: dict, gate: list[str], items: list[dict], grids: list,
                order: tuple[str, ...] | None = None) -> list[dict]:
    from curate.ops.scoring import SegmentJob, score_segments

    jobs = [SegmentJob(g, item_windows(it), it["text"], set(it["only"]) if it.get("only") else None,
                       path=it.get("path"), offset=(it.get("seg") or [None])[0] or 0.0)
            for it, g in zip(items, grids)]
    rows = score_segments(jobs, scorers, th, cascade=True, gate=set(gate), order=order)
    return [{"windows": [past_video_end(r, g) for r in rs]} for rs, g in zip(rows, grids)]


def past_video_end(row: dict, grid) -> dict:
    """A window reaching past where the video really ends saw repeated last frames: its
    scores mean nothing, so it is failed with the decode note."""
    if grid.video_end is None or row["end"] <= grid.video_end + 1e-3:
        return row
    note = "; ".join(grid.notes) or f"video ends at {grid.video_end:.2f} s"
    return {**row, "status": schemas.STATUS_FAILED, "error": f"decode: {note}; window past the video's end"}


def _score_error(item: dict, error: str) -> dict:
    return {"windows": [{**w, "status": schemas.STATUS_FAILED, "error": f"score: {error}"}
                        for w in item_windows(item)]}


def score_spec(run: Run, num_gpus: float | None = None) -> StageSpec:
    """Scoring actors (the models load once per actor; ``num_gpus`` each, default the
    engine's share), decode tasks in front; the run's thresholds and gate go to the cascade."""
    eng, order, gate = run.engine, run.order, list(run.gate)
    factory = functools.partial(_score_factory, run.with_conventions(), run.as_dict()["recipe"]["models"],
                                run.threshold_dict(), gate, order)
    if num_gpus is None:
        num_gpus = 1.0 / max(float(eng["score_actors_per_gpu"]), 1.0)
    return StageSpec("score", factory, _score_error, stateful=True, prepare=_decode_factory,
                     num_gpus=num_gpus, batch_size=int(eng["score_batch_size"]),
                     params=score_params(run.as_dict(), gate), **spec_kw(run, "score"))


def rescore_work(out: str | Path, run: Run, spec: StageSpec) -> Work | None:
    """Exactly the windows the current thresholds admit but the cascade skipped, and only
    their missing filters; the run records each rescore item's base fingerprint (a rescore
    record counts while its source's base record is current). None: nothing to rescore."""
    import hashlib
    from curate.selection.rules import needs_scoring_table, rescore_filters

    state = run.as_dict()
    assembled = assemble_windows(out, state, write=False)
    wanted: dict[str, set[str] | None] = {}
    for first, ids in needs_scoring_table(assembled, run.threshold_dict(), set(run.gate), run.order).items():
        wanted.update({i: rescore_filters(first, run.order) for i in ids})
    if not wanted:
        return None
    paths = ok_paths(out)
    tag = hashlib.sha1("\n".join(sorted(wanted)).encode()).hexdigest()[:12]
    items = score_items(out, assembled, wanted, tag, paths)
    del assembled
    need = {it["key"].split("@")[0] for it in items}
    base_fp = {it["key"]: item_fingerprint(spec, it)
               for it in iter_score_items(out, base_windows(out, state), None, "", paths) if it["key"] in need}
    bases = dict(state.get("_rescore_base") or {})
    for it in items:
        bases[it["key"]] = base_fp.get(it["key"].split("@")[0])
    return Work(items, schemas={"windows": schemas.WINDOWS}, record={"_rescore_base": bases})


class Score(Stage):
    """Every window not yet scored (from its current inputs), by the cascade; with the
    argument ``rescore`` (``curate score``'s second pass), exactly the windows the current thresholds
    admit but the cascade skipped (argument ``num_gpus``: each actor's share). Returns the
    assembled windows table (Arrow)."""
    name = "score"
    reads = ("downloads", "windows")
    writes = ("windows",)
    needs_weights = True

    def spec(self, ctx: Context) -> StageSpec:
        return score_spec(ctx.run, ctx.args.get("num_gpus"))

    def work(self, ctx: Context, spec: StageSpec | None) -> Work | None:
        # the run records the sync classifier's preprocessing convention (issue 15)
        conv = spec.params["models"].get("sync", {}).get("convention")
        if ctx.args.get("rescore"):
            work = rescore_work(ctx.out, ctx.run, spec)
        else:
            items = score_items(ctx.out, base_windows(ctx.out, ctx.run.as_dict()), None, "", ok_paths(ctx.out))
            work = Work(items, schemas={"windows": schemas.WINDOWS})
        if work is not None and conv:
            work.record["sync_convention"] = conv
        return work

    def finish(self, ctx: Context, work: Work | None, result: StageResult | None) -> Outputs:
        if result is None:      # a rescore with nothing to score
            return Outputs(assemble_windows(ctx.out, ctx.run.as_dict(), write=False))
        table = assemble_windows(ctx.out, ctx.run.as_dict())
        summarize_failures("score", table, ctx.echo)
        log.info("score: %d items scored, %d already done", result.ran, result.skipped)
        return Outputs(table)


STAGE = Score()
