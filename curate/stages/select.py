"""Stage `select`: thresholds on stored scores -> decisions -> merged clips -> balanced,
split selection (columnar). Touches no model: re-selecting takes seconds."""
from __future__ import annotations

import logging
from typing import Any, Mapping

from curate.selection.rules import desync_gate, select_windows_table
from manifests.columns import read_columns, read_windows_table
from curate.stagekit.declare import Context, Stage
from curate.stagekit.inputs import take_by_key

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


def _clips(out: Any, run: dict[str, Any], th: dict, gate: list[str], summary: dict[str, Any]) -> Any:
    """The CLIPS table: fixed-length clips of the ok downloads, or the windows' decisions
    (written, funnel into ``summary``) merged into clips."""
    from manifests import schemas
    from curate.config.run import resolve

    recipe = run["recipe"]
    if recipe["clip_mode"] == "fixed":
        from curate.selection.merge import fixed_clips
        from curate.stagekit.inputs import ok_downloads
        return schemas.to_table(fixed_clips(ok_downloads(out), length=recipe["fixed_clip_length"]),
                                schemas.CLIPS)
    from curate.selection.merge import merge_table
    windows = read_windows_table(out)
    decisions, funnel_, keep = select_windows_table(windows, th, gate=set(gate), order=resolve(run).order)
    schemas.write_manifest(out, "decisions", decisions)
    del decisions
    summary["funnel"], summary["needs_scoring"] = funnel_, funnel_["needs_scoring"]
    if funnel_["needs_scoring"]:
        log.warning("%d windows were never scored under these thresholds; run `curate score %s`",
                    funnel_["needs_scoring"], out)
    shots = read_columns(out, "shots", ["shot_id", "start", "end"]) \
        if schemas.has_manifest(out, "shots") else None
    if (recipe.get("repair") or {}).get("enabled"):     # merged too; shipped only repaired
        keep = keep | _repair_candidates(run, windows, th, gate, summary)
    return merge_table(windows, keep, shots, min_len=recipe["merge"]["min_len"])


def _repair_candidates(run: dict[str, Any], windows: Any, th: dict, gate: list[str],
                       summary: dict[str, Any]) -> Any:
    """The repair candidates (``curate.selection.repair.candidate_mask``) to merge; none
    without Synchformer weights (nothing could certify or rescore them, and they would take
    the places of clips that ship)."""
    import numpy as np
    from curate.config.run import resolve
    from curate.selection.repair import candidate_mask
    from curate.stages.certify import certify_weights

    try:
        weights = certify_weights(run)
    except ValueError as e:
        weights = None
        log.warning("repair: %s", e)
    if weights is None:
        log.warning("repair is on but no Synchformer weights: no clip can be repaired")
        summary["repair_candidates"] = 0
        return np.zeros(windows.num_rows, dtype=bool)
    cand = candidate_mask(windows, th, gate, resolve(run).order, run["recipe"]["repair"]["min_prob"])
    summary["repair_candidates"] = int(cand.sum())
    return cand


def stage_select(out: Any, run: dict[str, Any], overrides: list[str] | None = None,
                 decisions_file: Any = None) -> dict[str, Any]:
    """Thresholds on stored scores -> decisions -> merged clips -> balanced, split selection,
    columnar (no row dicts for windows). Touches no model: changing a threshold and
    re-selecting takes seconds."""
    from pathlib import Path
    from curate.selection.balance import select_clips_table
    from manifests import schemas

    from curate.config.run_state import save_run
    from curate.config.run import resolve

    recipe = run["recipe"]
    if overrides is not None:
        run["selection_overrides"] = list(overrides)
        save_run(out, run)
    r = resolve(run)
    th, gate, score_only = r.threshold_dict(), list(r.gate), dict(r.score_only)
    review = None
    if decisions_file or run.get("review_decisions"):
        from curate.reports.review import load_decisions
        review = load_decisions(decisions_file or run.get("review_decisions"))
    if decisions_file:
        run["review_decisions"] = str(Path(decisions_file).resolve())
        save_run(out, run)
    summary: dict[str, Any] = {"score_only": score_only, "gate": gate, "thresholds": th,
                               "inert": inert_overrides(overrides, gate, score_only)}
    clips = _clips(out, run, th, gate, summary)
    clips = keep_cut_columns(out, "clips", clips, "clip_id")
    clips, summary["desync_rejected"] = desync_gate(clips, (recipe.get("desync") or {}).get("max"))
    schemas.write_manifest(out, "clips", clips)
    selected, bal = select_clips_table(clips, recipe["select"], seed=recipe["select"].get("seed", 0),
                                       decisions=review, classes=run_classes(out, recipe))
    selected = keep_cut_columns(out, "selected", selected, "key")
    schemas.write_manifest(out, "selected", selected)
    summary["balance"] = bal
    return summary


def inert_overrides(overrides: list[str] | None, gate: list[str],
                    score_only: Mapping[str, str]) -> list[str]:
    """One line per ``--set`` that names a filter which does not gate in this run (its
    threshold then changes nothing), saying why."""
    out = []
    for item in overrides or ():
        name = str(item).partition(".")[0].strip()
        if name not in gate:
            why = score_only.get(name, "not in the recipe's filters")
            out.append(f"--set {item}: filter '{name}' does not gate in this run ({why}); a "
                       f"custom recipe with \"gate\" naming it gates on it")
    return out


def _run(ctx: Context) -> None:
    summary = stage_select(ctx.out, ctx.run)
    if summary.get("needs_scoring"):
        ctx.echo(f"{summary['needs_scoring']} windows still need scoring: run `curate score {ctx.out}`")


STAGE = Stage("select", run=_run)
