"""Stage `split`: shots and windows of every downloaded segment."""
from __future__ import annotations

import functools
from pathlib import Path

from manifests import schemas
from manifests.schemas import write_manifest
from curate.execution.spec import StageSpec
from curate.execution.checkpoints import StageResult
from curate.config.run import Run
from curate.stagekit.declare import Context, Outputs, Stage, Work, empty_table, spec_kw, summarize_failures
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


def split_spec(run: Run) -> StageSpec:
    """Shot detection and windows per downloaded segment (the recipe's shots / windows)."""
    params = split_params(run.as_dict())
    return StageSpec("split", functools.partial(_split_factory, params["shots"], params["windows"]),
                     _split_error, params=params, **spec_kw(run, "split"))


def split_items(out: str | Path) -> list[dict]:
    return [{"key": s["source_id"], "path": s["path"], "seg": segment_of(s),
             "inputs": {"file": file_id(s["path"], out), "duration": s["duration"], "seg": segment_of(s)}}
            for s in ok_downloads(out)]


class Split(Stage):
    """Shots and windows of every downloaded segment (Arrow: a VGGSound-scale windows table
    never becomes row dicts); the windows table is assembled with the current scores."""
    name = "split"
    reads = ("downloads",)
    writes = ("shots", "windows")

    def spec(self, ctx: Context) -> StageSpec:
        return split_spec(ctx.run)

    def work(self, ctx: Context, spec: StageSpec | None) -> Work:
        return Work(split_items(ctx.out), schemas={"shots": schemas.SHOTS, "windows": schemas.WINDOWS})

    def finish(self, ctx: Context, work: Work | None, result: StageResult | None) -> Outputs:
        shots = result.table("shots") or empty_table("shots")
        write_manifest(ctx.out, "shots", shots)
        windows = assemble_windows(ctx.out, ctx.run.as_dict())
        summarize_failures("split", shots, ctx.echo)
        return Outputs((shots, windows))


STAGE = Split()
