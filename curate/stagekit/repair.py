"""What the shard stage does for a repair (recipe ``repair``, ``curate.selection.repair``).

Before the cut: each selected clip's decision from what is stored (the certify stage's
Synchformer offsets in the clips manifest, the paper's classifier's argmax offset of each of
the clip's windows in the windows manifest). After the cut: the repaired clip is rescored
with Synchformer (``curate.stagekit.certifying.rescore_spec``, the same model as the certificate)
and kept only when every context finds offset 0.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from manifests import schemas
from curate.selection.repair import (AGREE_TOL_S, MIN_PROB, MIN_WINDOW_PROB, PAPER_COLUMNS, RepairDecision,
                                     confirm_by_shot, decide_repair, delay_of)

log = logging.getLogger(__name__)


def repair_options(run: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe's repair options when repair is on, else None."""
    opts = run["recipe"].get("repair") or {}
    return opts if opts.get("enabled") else None


def window_offsets(out: str | Path) -> dict[str, list[tuple[str, float, float, float | None, float | None]]]:
    """Per source: (window_id, start, end, offset s, probability) of each ok window; empty
    when the windows manifest does not carry the classifier's offsets."""
    from manifests.columns import read_columns
    if not schemas.has_manifest(out, "windows") or not set(PAPER_COLUMNS) <= set(schemas.WINDOWS.names):
        return {}
    t = read_columns(out, "windows", ["window_id", "source_id", "start", "end", "status", *PAPER_COLUMNS])
    by_source: dict[str, list] = {}
    for r in t.to_pylist():
        if r["status"] == schemas.STATUS_OK:
            by_source.setdefault(r["source_id"], []).append(
                (r["window_id"], r["start"], r["end"], r[PAPER_COLUMNS[0]], r[PAPER_COLUMNS[1]]))
    return by_source


def decide(clip: dict | None, windows: list[tuple], min_prob: float,
           min_window_prob: float = MIN_WINDOW_PROB) -> RepairDecision:
    """A clip's decision: its Synchformer contexts and the windows lying inside it."""
    clip = clip or {}
    sf = [clip.get("sf_offset_first"), clip.get("sf_offset_last")]
    sf_p = [clip.get("sf_prob_first"), clip.get("sf_prob_last")]
    inside = [w for w in windows
              if clip.get("start") is not None and w[1] >= clip["start"] - 1e-6 and w[2] <= clip["end"] + 1e-6]
    return decide_repair([delay_of(o) for o in sf], sf_p, [delay_of(w[3]) for w in inside],
                         [w[4] for w in inside], min_prob, min_window_prob)


def plan(out: str | Path, run: dict[str, Any], selected: list[dict],
         clips: dict[str, dict]) -> dict[str, RepairDecision]:
    """Each selected clip's decision (keyed by its ``key``); empty with repair off."""
    if repair_options(run) is None:
        return {}
    by_clip = clip_decisions(out, run, clips, {s["clip_id"] for s in selected if s.get("clip_id")})
    # a selected clip the clips manifest lacks has no certificate to decide by
    return {s["key"]: by_clip.get(s["clip_id"]) or decide(None, [], *_probs(run)) for s in selected}


def clip_decisions(out: str | Path, run: dict[str, Any], clips: Mapping[str, dict],
                   wanted: set[str]) -> dict[str, RepairDecision]:
    """The decision of each clip id in ``wanted`` (rows in ``clips``, the clips manifest);
    every merged clip of their shots decides too (selected or not): a shot's confident repair
    confirms its clips whose classifier windows alone are below the bar (``confirm_by_shot``).
    Empty with repair off."""
    if repair_options(run) is None:
        return {}
    offsets, probs = window_offsets(out), _probs(run)
    shots = {_shot(clips[c]) for c in wanted if c in clips} - {None}
    pool = {cid: c for cid, c in clips.items() if cid in wanted or _shot(c) in shots}
    got = confirm_by_shot({cid: decide(c, offsets.get(c["source_id"], []), *probs) for cid, c in pool.items()},
                          {cid: _shot(c) for cid, c in pool.items()})
    return {cid: d for cid, d in got.items() if cid in wanted}


def _probs(run: dict[str, Any]) -> tuple[float, float]:
    opts = repair_options(run) or {}
    return float(opts.get("min_prob", MIN_PROB)), float(opts.get("min_window_prob", MIN_WINDOW_PROB))


def _shot(row: dict) -> tuple[str, str] | None:
    """A clip's shot: (source, shot id); None without a shot id (no shot split: no pooling)."""
    return (row["source_id"], row["shot_id"]) if row.get("shot_id") else None


def needs_repair(out: str | Path, selected: list[dict],
                 min_window_prob: float = MIN_WINDOW_PROB) -> set[str]:
    """Keys of the selected clips merged from repair candidates (windows the sync gate
    rejected whose classifier is confident of a non-zero offset, as
    ``curate.selection.repair.candidate_runs`` merged them apart from the kept windows): a
    clip holding such a window and no kept one ships only repaired. A clip of kept windows
    ships as with repair off, whatever rejected windows lie inside it."""
    from manifests.columns import read_columns
    offsets = window_offsets(out)
    if not offsets or not schemas.has_manifest(out, "decisions"):
        return set()
    d = read_columns(out, "decisions", ["window_id", "keep", "reason"]).to_pylist()
    off_sync = {r["window_id"] for r in d if not r["keep"] and r["reason"] == "sync"}
    kept = {r["window_id"] for r in d if r["keep"]}
    spans = {sid: [(a, b) for wid, a, b, off, p in ws if wid in off_sync and off is not None
                   and p is not None and p >= min_window_prob and abs(off) >= AGREE_TOL_S]
             for sid, ws in offsets.items()}
    kept_spans = {sid: [(a, b) for wid, a, b, _, _ in ws if wid in kept] for sid, ws in offsets.items()}

    def holds(s: dict, spans_of: dict) -> bool:
        return any(a >= s["start"] - 1e-6 and b <= s["end"] + 1e-6 for a, b in spans_of.get(s["source_id"], ()))
    return {s["key"] for s in selected if holds(s, spans) and not holds(s, kept_spans)}


def rescore_verdict(cert: dict | None) -> str | None:
    """None when the repaired clip's rescore finds offset 0 in every context, else why not."""
    if cert is None or cert.get("status") != schemas.STATUS_OK:
        return f"repair: rescore failed ({(cert or {}).get('error') or 'not run'})"
    offsets = [cert.get("sf_offset_first"), cert.get("sf_offset_last")]
    if any(o is None or abs(o) > 1e-6 for o in offsets):
        return "repair: the rescore of the repaired clip finds offsets " + \
               ", ".join(f"{o:+.1f} s" if o is not None else "none" for o in offsets)
    return None


def settle(out: str | Path, run: dict[str, Any], executor: Any, cuts: dict[str, dict],
           selected: list[dict]) -> None:
    """With repair on: rescore the repaired cuts (``rescore``), then reject every clip that
    holds a repair candidate and did not come out repaired (it failed the sync gate)."""
    if repair_options(run) is None:
        return
    rescore(out, run, executor, cuts, selected)
    for k in needs_repair(out, selected, float(repair_options(run).get("min_window_prob", MIN_WINDOW_PROB))):
        c = cuts.get(k)
        if c and c.get("status") == schemas.STATUS_OK and not c.get("repaired"):
            c.update(status=schemas.STATUS_REJECTED,
                     error=f"sync: out of sync and not repaired ({c.get('repair_note')})")
    _desync_unrepaired(run, cuts, selected)


def _desync_unrepaired(run: dict[str, Any], cuts: dict[str, dict], selected: list[dict]) -> None:
    """With the recipe's ``desync.max``: the clips its gate left to the repair
    (``repairable``) that did not come out repaired are rejected for their DeSync after all."""
    from curate.config.thresholds import desync_max
    from curate.selection.rules import desync_reason
    max_s = desync_max(run)
    if max_s is None:
        return
    desync = {s["key"]: s.get("desync_s") for s in selected}
    for k, c in cuts.items():
        d = desync.get(k)
        if c.get("status") == schemas.STATUS_OK and not c.get("repaired") and d is not None and d > max_s:
            c.update(status=schemas.STATUS_REJECTED,
                     error=f"{desync_reason(d, max_s)}, not repaired ({c.get('repair_note')})")


def repairable(out: str | Path, run: dict[str, Any], clips: Any) -> set[str]:
    """Ids of the ok clips of a clips table that a repair will shift back (empty with repair
    off): the desync gate leaves them to the shard stage, which ships them only repaired."""
    if repair_options(run) is None or clips.num_rows == 0:
        return set()
    cols = ["clip_id", "source_id", "shot_id", "start", "end", "status", "sf_offset_first", "sf_prob_first",
            "sf_offset_last", "sf_prob_last"]
    rows = {r["clip_id"]: r for r in clips.select(cols).to_pylist()}
    # only a certified clip can be decided (none on a build's first select: no window is read)
    ok = {cid for cid, r in rows.items() if r["status"] == schemas.STATUS_OK and r["sf_offset_first"] is not None}
    return {cid for cid, d in clip_decisions(out, run, rows, ok).items() if d.repair} if ok else set()


def rescore(out: str | Path, run: dict[str, Any], executor: Any, cuts: dict[str, dict],
            selected: list[dict]) -> None:
    """Rescore every repaired cut (``repaired`` True) with Synchformer; one whose rescore
    does not find offset 0 is rejected (status and note say so), the others say it passed."""
    from curate.config.run import resolve
    from curate.execution.checkpoints import run_stage
    from curate.stagekit.declare import run_kw
    from curate.stagekit.certifying import certify_weights, rescore_items, rescore_spec
    todo = {k: c for k, c in cuts.items() if c.get("status") == schemas.STATUS_OK and c.get("repaired")}
    if not todo:
        return
    certs: dict[str, dict] = {}
    resolved = resolve(run)
    weights = certify_weights(resolved)     # the option's, else the weights cache's
    if weights:                                          # else certified before, not now
        items = rescore_items(out, todo, {r["key"]: r for r in selected})
        table = run_stage(out, rescore_spec(resolved), items, executor, **run_kw(resolved)).table("certs")
        certs = {c["clip_id"]: c for c in (table.to_pylist() if table is not None else [])}
    for k, c in todo.items():
        why = (rescore_verdict(certs.get(k)) if weights
               else "repair: no --synchformer-checkpoint to rescore the repaired clip")
        if why:
            c.update(status=schemas.STATUS_REJECTED, error=why, repaired=False,
                     repair_note=f"{c.get('repair_note')}; {why}")
        else:
            c["repair_note"] = f"{c.get('repair_note')}; rescore offset 0"
