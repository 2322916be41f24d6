"""Stage `select`: thresholds on stored scores -> decisions -> merged clips -> balanced,
split selection (columnar). Touches no model: re-selecting takes seconds."""
from __future__ import annotations

import logging
from typing import Any, Mapping

from curate.selection.rules import desync_gate, select_windows_table
from manifests.columns import read_columns, read_windows_table
from curate.config.run import Run
from curate.config.thresholds import desync_max, is_desync_override
from curate.stagekit.declare import Context, Outputs, Stage, Work
from curate.stagekit.inputs import take_by_key
from curate.stagekit.repair import repairable

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the select stage

def keep_cut_columns(out: Any, name: str, table: Any, key: str) -> Any:
    """``table`` with the columns measured after selection (``schemas.MEASURED_COLUMNS``: the
    cut columns the shard stage measured, the certificate the certify stage measured) of the
    current manifest's rows of the same key and clip times: a re-select that changes nothing
    rewrites nothing. A clip not measured yet (or with other times) keeps nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from manifests import schemas

    if table.num_rows == 0 or not schemas.has_manifest(out, name):
        return table
    cols = schemas.MEASURED_COLUMNS
    old = read_columns(out, name, [key, "start", "end", *cols])
    if old.num_rows == 0:
        return table
    pos, _ = take_by_key(table[key], old, key)
    same = pc.fill_null(pc.and_(pc.equal(old["start"].take(pos), table["start"]),
                                pc.equal(old["end"].take(pos), table["end"])), False)
    for c in cols:
        i = table.column_names.index(c)
        col = pc.if_else(same, old[c].take(pos), table[c])
        table = table.set_column(i, c, col.cast(table.schema.field(i).type))
    return table


def run_classes(out: Any, recipe: Mapping[str, Any]) -> list[str]:
    """Every class the run asked for (the recipe's list, else the ok sources' classes), so
    one without any candidate shows in the shortfall."""
    from manifests.classes import class_order
    if recipe.get("classes"):
        return class_order(recipe["classes"])
    import pyarrow.compute as pc
    from manifests import schemas

    src = read_columns(out, "sources", ["class_name", "status"])
    ok = src.filter(pc.equal(src.column("status"), schemas.STATUS_OK)).column("class_name")
    return class_order(None, pc.unique(ok.drop_null()).to_pylist())


def _clips(out: Any, run: Run, summary: dict[str, Any]) -> Any:
    """The CLIPS table: fixed-length clips of the ok downloads, or the windows' decisions
    (written, funnel into ``summary``) merged into clips."""
    from manifests import schemas

    recipe = run.recipe
    if recipe["clip_mode"] == "fixed":
        from curate.selection.merge import fixed_clips
        from curate.stagekit.inputs import ok_downloads
        return schemas.to_table(fixed_clips(ok_downloads(out), length=recipe["fixed_clip_length"]),
                                schemas.CLIPS)
    from curate.selection.merge import merge_table
    windows = read_windows_table(out)
    decisions, funnel_, keep = select_windows_table(windows, run.threshold_dict(), gate=set(run.gate),
                                                    order=run.order)
    schemas.write_manifest(out, "decisions", decisions)
    del decisions
    summary["funnel"], summary["needs_scoring"] = funnel_, funnel_["needs_scoring"]
    if funnel_["needs_scoring"]:
        log.warning("%d windows were never scored under these thresholds; run `curate score %s`",
                    funnel_["needs_scoring"], out)
    shots = read_columns(out, "shots", ["shot_id", "start", "end"]) \
        if schemas.has_manifest(out, "shots") else None
    if (recipe.get("repair") or {}).get("enabled"):     # merged too; shipped only repaired
        keep = keep | _repair_candidates(run, windows, keep, summary)
    return merge_table(windows, keep, shots, min_len=recipe["merge"]["min_len"])


def _repair_candidates(run: Run, windows: Any, keep: Any, summary: dict[str, Any]) -> Any:
    """The repair candidates (``curate.selection.repair.candidate_mask``) to merge, in runs of
    one offset apart from the kept windows (``candidate_runs``); none without Synchformer
    weights (nothing could certify or rescore them, and they would take the places of clips
    that ship)."""
    import numpy as np
    from curate.selection.repair import MIN_WINDOW_PROB, candidate_mask, candidate_runs
    from curate.stagekit.certifying import certify_weights

    try:
        weights = certify_weights(run)
    except ValueError as e:
        weights = None
        log.warning("repair: %s", e)
    if weights is None:
        log.warning("repair is on but no Synchformer weights: no clip can be repaired")
        summary["repair_candidates"] = 0
        return np.zeros(windows.num_rows, dtype=bool)
    cand = candidate_mask(windows, run.threshold_dict(), list(run.gate), run.order,
                         run.recipe["repair"].get("min_window_prob", MIN_WINDOW_PROB))
    runs = candidate_runs(windows, keep, cand)
    summary["repair_candidates"], summary["repair_candidates_merged"] = int(cand.sum()), int(runs.sum())
    return runs


def select_clips(out: Any, run: Run, overrides: list[str] | None = None) -> dict[str, Any]:
    """Thresholds on stored scores -> decisions -> merged clips -> balanced, split selection,
    columnar (no row dicts for windows). Touches no model: changing a threshold and
    re-selecting takes seconds. ``overrides``: this command's ``--set`` (for the inert ones'
    lines; the run already holds them). Returns the summary (funnel, balance, ...)."""
    from curate.selection.balance import select_clips_table
    from manifests import schemas

    state = run.as_dict()
    recipe = state["recipe"]
    gate, score_only = list(run.gate), dict(run.score_only)
    review = None
    if state.get("review_decisions"):
        from curate.reports.review import load_decisions
        review = load_decisions(state["review_decisions"])
    summary: dict[str, Any] = {"score_only": score_only, "gate": gate, "thresholds": run.threshold_dict(),
                               "inert": inert_overrides(overrides, gate, score_only)}
    clips = _clips(out, run, summary)
    clips = keep_cut_columns(out, "clips", clips, "clip_id")
    max_s = desync_max(state)
    spared = repairable(out, state, clips) if max_s is not None else set()
    clips, summary["desync_rejected"] = desync_gate(clips, max_s, spared)
    summary["desync_max"] = max_s
    schemas.write_manifest(out, "clips", clips)
    selected, bal = select_clips_table(clips, recipe["select"], seed=recipe["select"].get("seed", 0),
                                       decisions=review, classes=run_classes(out, recipe))
    selected = keep_cut_columns(out, "selected", selected, "key")
    schemas.write_manifest(out, "selected", selected)
    summary["balance"] = bal
    return summary


def desync_note(summary: Mapping[str, Any]) -> str | None:
    """The line saying how many clips the DeSync gate rejected (None when none or off)."""
    if not summary.get("desync_rejected"):
        return None
    return (f"desync.max {summary['desync_max']:g}: {summary['desync_rejected']} clips rejected (DeSync "
            "above it, or not certified yet: the certify stage measures them)")


def inert_overrides(overrides: list[str] | None, gate: list[str],
                    score_only: Mapping[str, str]) -> list[str]:
    """One line per ``--set`` that names a filter which does not gate in this run (its
    threshold then changes nothing), saying why."""
    out = []
    for item in overrides or ():
        name = str(item).partition(".")[0].strip()
        if name not in gate and not is_desync_override(item):
            why = score_only.get(name, "not in the recipe's filters")
            out.append(f"--set {item}: filter '{name}' does not gate in this run ({why}); a "
                       f"custom recipe with \"gate\" naming it gates on it")
    return out


class Select(Stage):
    """Thresholds on stored scores -> decisions -> merged clips -> balanced, split selection.
    ``curate select``'s ``--set`` (``overrides``) and ``--decisions`` (``decisions_file``)
    are recorded in the run before it is resolved; the value is the summary."""
    name = "select"
    reads = ("windows", "shots", "sources")
    writes = ("decisions", "clips", "selected")

    def configure(self, args: Mapping[str, Any]) -> dict[str, Any]:
        from pathlib import Path
        from curate.config.thresholds import parse_overrides
        rec: dict[str, Any] = {}
        if args.get("overrides") is not None:
            parse_overrides(args["overrides"])      # a bad --set is refused before run.json holds it
            rec["selection_overrides"] = list(args["overrides"])
        if args.get("decisions_file"):
            rec["review_decisions"] = str(Path(args["decisions_file"]).resolve())
        return rec

    def finish(self, ctx: Context, work: Work | None, result: Any) -> Outputs:
        summary = select_clips(ctx.out, ctx.run, ctx.args.get("overrides"))
        if summary.get("needs_scoring"):
            ctx.echo(f"{summary['needs_scoring']} windows still need scoring: run `curate score {ctx.out}`")
        note = desync_note(summary)
        if note:
            ctx.echo(note)
        return Outputs(summary)


class DesyncGate(Select):
    """Select again once the certify stage has measured the merged clips, when the recipe
    gates on DeSync (``desync.max``): a build's first select cannot know a clip's DeSync (it
    rejects every clip as not measured yet, and certify measures those too), so the gate
    decides here, and balance and split pick among the clips that pass. Nothing is done
    with the gate off."""
    name = "desync-gate"

    def configure(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def finish(self, ctx: Context, work: Work | None, result: Any) -> Outputs:
        max_s = desync_max(ctx.run.as_dict())
        if max_s is None:
            ctx.echo("desync-gate: off (recipe desync.max)")
            return Outputs(None)
        summary = select_clips(ctx.out, ctx.run)
        ctx.echo(desync_note(summary) or f"desync-gate: no clip above desync.max {max_s:g}")
        return Outputs(summary)


STAGE = Select()
GATE = DesyncGate()
