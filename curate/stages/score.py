"""Stage `score`: every window scored by the cascade (actors hold the models; decode runs
as CPU tasks in front); ``rescore`` scores what looser thresholds admit."""
from __future__ import annotations

import logging
import functools
from pathlib import Path
from typing import Any

import pyarrow as pa

from manifests import schemas
from curate.execution.spec import Executor, StageSpec
from curate.execution.checkpoints import item_fingerprint, run_stage
from curate.config.run_state import save_run
from curate.config.models import build_scorers, check_weights, record_weights
from curate.config.run import resolve
from curate.stagekit.declare import Context, Stage, Echo, run_kw, spec_kw, summarize_failures
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


def score_spec(run: dict[str, Any], th: dict, gate: list[str]) -> StageSpec:
    r = resolve(run)
    eng, order = r.engine, r.order
    factory = functools.partial(_score_factory, r.with_conventions(), run["recipe"]["models"], th, gate, order)
    return StageSpec("score", factory, _score_error, stateful=True, prepare=_decode_factory,
                     num_gpus=1.0 / max(float(eng["score_actors_per_gpu"]), 1.0),
                     batch_size=int(eng["score_batch_size"]), params=score_params(run, gate), **spec_kw(run, "score"))


def stage_score(out: str | Path, run: dict[str, Any], executor: Executor,
                rescore: bool = False, num_gpus: float | None = None, echo: Echo = None) -> pa.Table:
    """Score every window not yet scored (from its current inputs); with ``rescore``, score
    exactly the windows the current thresholds admit but the cascade skipped, and only their
    missing filters. Returns the assembled windows table (Arrow: no row dicts at scale)."""
    from curate.selection.rules import needs_scoring_table, rescore_filters

    # the same rows ``assemble_windows`` fingerprints: the split stage's, unscored
    base = base_windows(out, run)
    r = resolve(run)
    gate, th = list(r.gate), r.threshold_dict()
    spec = score_spec(run, th, gate)
    if num_gpus is not None:
        spec.num_gpus = num_gpus
    # the run records the sync classifier's preprocessing convention (issue 15)
    conv = spec.params["models"].get("sync", {}).get("convention")
    if conv and run.get("sync_convention") != conv:
        run["sync_convention"] = conv
        save_run(out, run)
    paths = ok_paths(out)
    if rescore:
        import hashlib
        assembled = assemble_windows(out, run, write=False)
        wanted: dict[str, set[str] | None] = {}
        order = r.order
        for first, ids in needs_scoring_table(assembled, th, set(gate), order).items():
            wanted.update({i: rescore_filters(first, order) for i in ids})
        if not wanted:
            return assembled
        tag = hashlib.sha1("\n".join(sorted(wanted)).encode()).hexdigest()[:12]
        items = score_items(out, assembled, wanted, tag, paths)
        del assembled
        need = {it["key"].split("@")[0] for it in items}
        base_fp = {it["key"]: item_fingerprint(spec, it)
                   for it in iter_score_items(out, base, None, "", paths) if it["key"] in need}
        bases = run.setdefault("_rescore_base", {})
        for it in items:
            bases[it["key"]] = base_fp.get(it["key"].split("@")[0])
        save_run(out, run)
    else:
        items = score_items(out, base, None, "", paths)
    del base
    res = run_stage(out, spec, items, executor, schemas={"windows": schemas.WINDOWS},
                    **run_kw(run))
    del items
    table = assemble_windows(out, run)
    summarize_failures("score", table, echo)
    log.info("score: %d items scored, %d already done", res.ran, res.skipped)
    return table


def _run(ctx: Context) -> None:
    record_weights(ctx.out, ctx.run)    # file, size, sha256 in run.json; a changed cache refused
    check_weights(ctx.run)    # in the driver, before any scoring worker starts
    stage_score(ctx.out, ctx.run, ctx.executor, echo=ctx.echo)


def _spec(run: dict[str, Any]) -> StageSpec:
    r = resolve(run)
    return score_spec(run, r.threshold_dict(), list(r.gate))


STAGE = Stage("score", run=_run, spec=_spec,
              items=lambda ctx: score_items(ctx.out, base_windows(ctx.out, ctx.run), None, ""))
