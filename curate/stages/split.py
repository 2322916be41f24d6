"""Stage `split`: shots and windows of every downloaded segment."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pyarrow as pa

from manifests import schemas
from manifests.schemas import write_manifest
from curate.execution.spec import Executor, StageSpec
from curate.execution.checkpoints import run_stage
from curate.stagekit.declare import Context, Stage, Echo, empty_table, run_kw, spec_kw, summarize_failures
from curate.stagekit.inputs import file_id, ok_downloads, segment_of
from curate.stagekit.window_table import assemble_windows, split_params


# ----------------------------------------------------------------------------- split

def _split_factory(shot_params: dict, window_params: dict):
    from curate.ops.shots import shot_rows
    from curate.ops.windows import make_windows

    def fn(item: dict) -> dict:
        seg = item.get("seg") or (None, None)
        shots = shot_rows(item["key"], item["path"], seg_start=seg[0], seg_end=seg[1], **shot_params)
        # class and split are filled from the current sources when the windows table is
        # assembled: a relabelled source does not redo its shot detection
        windows = make_windows(shots, None, None, **window_params)
        return {"shots": shots, "windows": windows}
    return fn


def _split_error(item: dict, error: str) -> dict:
    return {"shots": [{"shot_id": None, "source_id": item["key"], "shot_index": None,
                       "status": schemas.STATUS_FAILED, "error": error}]}


def split_spec(run: dict[str, Any]) -> StageSpec:
    recipe = run["recipe"]
    return StageSpec("split", functools.partial(_split_factory, recipe["shots"], recipe["windows"]),
                     _split_error, params=split_params(run),
                     **spec_kw(run, "split"))


def split_items(out: str | Path) -> list[dict]:
    return [{"key": s["source_id"], "path": s["path"], "seg": segment_of(s),
             "inputs": {"file": file_id(s["path"], out), "duration": s["duration"], "seg": segment_of(s)}}
            for s in ok_downloads(out)]


def stage_split(out: str | Path, run: dict[str, Any], executor: Executor, echo: Echo = None
                ) -> tuple[pa.Table, pa.Table]:
    """Shots and windows (Arrow: a VGGSound-scale windows table never becomes row dicts)."""
    spec = split_spec(run)
    res = run_stage(out, spec, split_items(out), executor,
                    schemas={"shots": schemas.SHOTS, "windows": schemas.WINDOWS}, **run_kw(run))
    shots = res.table("shots") or empty_table("shots")
    write_manifest(out, "shots", shots)
    windows = assemble_windows(out, run)
    summarize_failures("split", shots, echo)
    return shots, windows


def _run(ctx: Context) -> None:
    stage_split(ctx.out, ctx.run, ctx.executor, echo=ctx.echo)


STAGE = Stage("split", run=_run, spec=split_spec, items=lambda ctx: split_items(ctx.out))
