"""Stage `shard`: every selected clip cut (``curate.ops.cut``), then each split's WebDataset
shards and their index."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manifests import schemas
from manifests.classes import class_order
from manifests.schemas import read_rows, write_manifest
from curate.config.run import Run
from curate.execution.spec import StageSpec
from curate.execution.checkpoints import StageResult, fingerprint
from curate.stagekit import repair
from curate.stagekit.declare import Context, Outputs, Stage, Work, spec_kw, summarize_failures
from curate.stagekit.downloading import fetch_full, run_encoder_settings, two_pass
from curate.stagekit.inputs import file_id, ok_downloads, rel_path


# ----------------------------------------------------------------------------- shard

def _cut_factory(cap: int | None):
    from curate.ops.cut import RepairRefused, cut_clip, shift_of

    def fn(item: dict) -> dict:
        # clip times are relative to the segment: on the file's clock they start at seg_start
        shift, note = shift_of(item.get("audio_shift") or 0.0), item.get("repair_note")
        args = (item["src"], item["dst"], item["start"], item["end"])
        kw = {"max_short_side": cap, "offset": item.get("offset") or 0.0}
        try:
            info = cut_clip(*args, **kw, audio_shift=shift)
        except RepairRefused as e:      # the clip as it is; the reason recorded
            info, shift, note = cut_clip(*args, **kw), 0.0, str(e)
        info = {**info, "av_shift_ms": shift * 1000.0, "repaired": bool(shift), "repair_note": note}
        return {"cuts": [{"key": item["key"], "path": item["dst"], "status": schemas.STATUS_OK,
                          "error": None, "duration": info.get("duration"),
                          **{c: info.get(c) for c in CUT_COLUMNS}}]}
    return fn


#: what the cut reports of each clip, kept in the selected / clips manifests and sample JSON
CUT_COLUMNS = schemas.CUT_COLUMNS


def _rebase_cut(cut: dict, clip_dir: Path) -> dict:
    """A cut clip's path under this output's ``media/clips`` (the output may have moved)."""
    p = cut.get("path")
    if p and Path(p).parent.parts[-2:] == ("media", "clips"):
        return {**cut, "path": str(clip_dir / Path(p).name)}
    return cut


def _cut_error(item: dict, error: str) -> dict:
    return {"cuts": [{"key": item["key"], "path": None, "status": schemas.STATUS_FAILED, "error": error}]}


def _shards_unchanged(out: str | Path, fp: str) -> list[dict] | None:
    """The shard rows of the last write when it was made from the same inputs and its
    files are all still there (a finished rerun rewrites no tar)."""
    import json
    state = Path(out) / "work" / "shard" / "state.json"
    if not state.exists() or not schemas.has_manifest(out, "shards"):
        return None
    try:
        if json.loads(state.read_text()).get("fp") != fp:
            return None
    except (OSError, ValueError):
        return None
    rows = read_rows(out, "shards")
    shard_dir = Path(out) / "shards"
    if all((shard_dir / r["shard"]).exists() for r in rows):
        return rows
    return None


def cut_spec(run: Run) -> StageSpec:
    """The cut: one ffmpeg task per clip, capped to the recipe's short side."""
    cap = run.recipe["shards"].get("max_short_side")
    return StageSpec("cut", functools.partial(_cut_factory, cap), _cut_error,
                     params={"cap": cap, "encoder": run_encoder_settings(run)}, **spec_kw(run, "cut"))


def _write_shards(out: str | Path, run: Run, groups: dict[str, list[dict]],
                  cuts: dict[str, dict], current: Any, downloads: dict[str, dict],
                  clips: dict[str, dict]) -> list[dict]:
    """Each split's shards and the shards manifest, unless the last write was made from the
    same inputs and its files are all there."""
    from manifests.atomic import write_json
    from shards.writer import make_sample, write_shards

    recipe = run.as_dict()["recipe"]
    shards = recipe["shards"]
    selected = [s for g in groups.values() for s in g]
    classes = class_order(recipe.get("classes"), (s["class_name"] for s in selected))
    fp = fingerprint({"selected": selected, "cuts": current, "classes": classes,
                      "shards": shards, "sources": sorted(downloads), "clips": sorted(clips)})
    rows = _shards_unchanged(out, fp)
    if rows is not None:
        return rows
    rows = []
    for split, members in groups.items():
        samples = [make_sample(s, cuts[s["key"]]["path"], classes.index(s["class_name"]),
                               source=downloads[s["source_id"]], clip=clips.get(s["clip_id"]),
                               duration=cuts[s["key"]].get("duration"))
                   for s in members if cuts.get(s["key"], {}).get("status") == schemas.STATUS_OK]
        rows += write_shards(out, samples, split, max_count=shards["max_count"], max_bytes=shards["max_bytes"])
    write_manifest(out, "shards", rows)
    write_json(Path(out) / "work" / "shard" / "state.json", {"fp": fp})
    return rows


@dataclass
class _Plan:
    """What the shard stage's ``work`` read and ``finish`` writes from."""
    all_selected: list[dict]
    groups: dict[str, list[dict]]
    selected: list[dict]
    downloads: dict[str, dict]
    full_failed: dict[str, str]
    clips: dict[str, dict]
    clip_dir: Path


def _plan(ctx: Context) -> _Plan:
    """The selected clips by split (a clip with no or an invalid split cannot go to a shard:
    failed in `selected`), the downloads they are cut from (on two-pass runs the full
    rendition, fetched now: ``stagekit.downloading.fetch_full``) and the merged clips."""
    from shards.writer import split_groups

    out = ctx.out
    all_selected = read_rows(out, "selected")
    groups, unshardable = split_groups(s for s in all_selected if s["status"] == schemas.STATUS_OK)
    why = {(r["key"], r["split"]): r["error"] for r in unshardable}
    for s in all_selected:
        if (s["key"], s["split"]) in why and s["status"] == schemas.STATUS_OK:
            s["status"], s["error"] = schemas.STATUS_FAILED, why[(s["key"], s["split"])]
    selected = [s for g in groups.values() for s in g]
    downloads = {d["source_id"]: d for d in ok_downloads(out)}
    full_failed: dict[str, str] = {}
    if two_pass(ctx.run):   # scored on the small rendition: cut from the full one
        downloads, full_failed = fetch_full(out, ctx.run, ctx.executor, [s["source_id"] for s in selected],
                                            downloads, ctx.echo)
    clips = {c["clip_id"]: c for c in read_rows(out, "clips")} if schemas.has_manifest(out, "clips") else {}
    return _Plan(all_selected, groups, selected, downloads, full_failed, clips, Path(out) / "media" / "clips")


class Shard(Stage):
    """Every selected clip cut (``ops.cut``), then each split's WebDataset shards and their
    index, verified; a clip that could not be cut stays in `selected`, failed, with why."""
    name = "shard"
    reads = ("selected", "downloads", "clips")
    writes = ("selected", "clips", "shards")

    def spec(self, ctx: Context) -> StageSpec:
        return cut_spec(ctx.run)

    def work(self, ctx: Context, spec: StageSpec | None) -> Work:
        from curate.selection.exact_lists import unique_cut_items
        plan = _plan(ctx)
        plan.clip_dir.mkdir(parents=True, exist_ok=True)
        decisions = repair.plan(ctx.out, ctx.run.as_dict(), plan.selected, plan.clips)
        items = [_cut_item(s, plan.downloads[s["source_id"]], plan.clip_dir, ctx.out, decisions.get(s["key"]))
                 for s in plan.selected if s["source_id"] in plan.downloads]
        return Work(unique_cut_items(items), plan=plan)   # a clip listed in train and test is cut once

    def finish(self, ctx: Context, work: Work | None, result: StageResult | None) -> Outputs:
        from shards.verify import format_report, verify_path
        p: _Plan = work.plan
        cut_table = result.table("cuts")
        cuts = {c["key"]: _rebase_cut(c, p.clip_dir) for c in (cut_table.to_pylist() if cut_table is not None else [])}
        # a repaired clip ships only if it rescores at 0; an out-of-sync one only repaired
        repair.settle(ctx.out, ctx.run.as_dict(), ctx.executor, cuts, p.selected)
        for s in p.selected:      # no full rendition: the clip is not cut (and says why)
            if s["source_id"] in p.full_failed:
                cuts[s["key"]] = {"key": s["key"], "status": schemas.STATUS_FAILED, "error": p.full_failed[s["source_id"]]}
        # before the fingerprint: a rerun fills the same values (split_groups may copy the rows)
        _fill_cut_columns(p.all_selected, cuts)
        _fill_cut_columns(p.selected, cuts)
        rows = _write_shards(ctx.out, ctx.run, p.groups, cuts, result.current, p.downloads, p.clips)
        _record_cut_failures(ctx.out, p.all_selected, cuts)
        _record_cuts_in_clips(ctx.out, p.clips, p.all_selected)
        if cut_table is not None:
            summarize_failures("cut", cut_table, ctx.echo)
        ctx.echo(format_report(verify_path(ctx.out)))
        return Outputs(rows)


def _cut_item(s: dict, download: dict, clip_dir: Path, out: str | Path, decision=None) -> dict:
    """One cut; ``decision`` (repair on): its audio shift (None: none) and why."""
    dst = str(clip_dir / f"{s['key']}.mp4")
    offset = download.get("seg_start") or 0.0
    item = {"key": s["key"], "src": download["path"], "dst": dst, "start": s["start"], "end": s["end"],
            "offset": offset,
            "inputs": {"src": file_id(download["path"], out), "dst": rel_path(dst, out), "start": s["start"],
                       "end": s["end"], "offset": offset}}
    if decision is not None:    # with repair off the inputs (and checkpoints) stay as they were
        item["audio_shift"], item["repair_note"] = decision.delay_s or 0.0, decision.reason
        item["inputs"].update(audio_shift=item["audio_shift"], repair_note=decision.reason)
    return item


def _fill_cut_columns(selected: list[dict], cuts: dict[str, dict]) -> None:
    """The cut columns (``schemas.CUT_COLUMNS``) of each cut clip into its selected row (a
    rejected repair's too: its note says why)."""
    for s in selected:
        c = cuts.get(s["key"] or "")
        ok = c is not None and c["status"] in (schemas.STATUS_OK, schemas.STATUS_REJECTED)
        for col in CUT_COLUMNS:
            s[col] = c.get(col) if ok else None


def _record_cuts_in_clips(out: str | Path, clips: dict[str, dict], selected: list[dict]) -> None:
    """The merged clips a shard clip was cut from carry its cut columns too (written only
    when that changes the clips manifest)."""
    if not clips:
        return
    by_clip = {s["clip_id"]: s for s in selected if s.get("clip_id") in clips and s.get("cut_start") is not None}
    rows = [{**c, **{col: by_clip[cid][col] if cid in by_clip else None for col in CUT_COLUMNS}}
            for cid, c in clips.items()]
    write_manifest(out, "clips", rows)


def _record_cut_failures(out: str | Path, selected: list[dict], cuts: dict[str, dict]) -> None:
    """A clip that could not be cut stays in `selected`, failed, with the reason; a repaired
    clip whose rescore did not find offset 0 stays, rejected."""
    for s in selected:
        c = cuts.get(s["key"] or "")
        if s["status"] == schemas.STATUS_OK and c and c["status"] == schemas.STATUS_REJECTED:
            s["status"], s["error"] = schemas.STATUS_REJECTED, c["error"]
        elif s["status"] == schemas.STATUS_OK and c and c["status"] != schemas.STATUS_OK:
            s["status"], s["error"] = schemas.STATUS_FAILED, f"cut: {c['error']}"
    write_manifest(out, "selected", selected)


STAGE = Shard()
