"""The demo's sync certificate: per generated video, its truth (kind, true offset) beside what
both models measured - the sync classifier's own offset (``filters.sync``, the mode over the
video's scored windows) and Synchformer's (certify stage: the offsets of the first and last
4.8-s contexts of its merged clips, and DeSync).

Offsets are in Synchformer's sign (positive: the audio runs ahead); ``curate.demo.synth``
records ``audio_offset`` with the other sign (positive: the audio is late), so the true
offset is ``-audio_offset``. The classifier searches +-0.6 s (its test protocol) and
Synchformer +-2.0 s: a true offset outside a model's range cannot be found by it.
Synchformer measures merged clips only, so a video whose windows all failed (the shifted
ones, unless repaired) has no Synchformer figure.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from filters.synchformer_model import DEMO_CHECKPOINT
from manifests import schemas
from manifests.names import ytid_of

def use_demo_synchformer(options: dict[str, Any], path: Path = DEMO_CHECKPOINT) -> str:
    """Point ``options`` at the shipped demo Synchformer unless ``--synchformer-checkpoint``
    names one; returns the line the demo prints (which weights certify uses, or why none)."""
    if options.get("synchformer_checkpoint"):
        return f"== certify: Synchformer {options['synchformer_checkpoint']} (--synchformer-checkpoint)"
    if path.is_file():
        options["synchformer_checkpoint"] = str(path)
        return f"== certify: shipped demo Synchformer {path.name} (small, trained on generated events)"
    return (f"== certify: no demo Synchformer ({path} is not installed): the demo's offsets come "
            "from the sync classifier alone; pass --synchformer-checkpoint FILE (or `curate models "
            "pull synchformer-mmaudio`) for Synchformer's offsets and DeSync")


def _mode(values: list[float]) -> float | None:
    from filters.sync import clip_offset
    return clip_offset(np.asarray(values)) if values else None


def _truth(truth_path: str | Path) -> dict[str, dict[str, Any]]:
    """The corpus's truth per video id (``truth.json``)."""
    return {str(v["id"]): v for v in json.loads(Path(truth_path).read_text())["videos"]}


def _true_offset(t: dict[str, Any]) -> float:
    """A video's true offset in Synchformer's sign (the truth records the audio's delay)."""
    return 0.0 - float(t.get("audio_offset") or 0.0)


def offset_rows(out: str | Path, truth_path: str | Path) -> list[dict[str, Any]]:
    """One row per generated video with a scored sync window: kind, true offset, the
    classifier's offset (mode over its windows, share agreeing), Synchformer's offsets
    (every first/last context of its ok clips) and their mean DeSync. Sorted by kind, id."""
    from manifests.columns import read_columns
    truth = _truth(truth_path)
    win = read_columns(out, "windows", ["source_id", "sync_offset_s"]).to_pylist()
    per: dict[str, list[float]] = defaultdict(list)
    for w in win:
        if w["sync_offset_s"] is not None:
            per[ytid_of(w["source_id"])].append(float(w["sync_offset_s"]))
    sf: dict[str, list[dict]] = defaultdict(list)
    if schemas.has_manifest(out, "clips"):
        for c in read_columns(out, "clips", ["source_id", "status", *schemas.CERT_COLUMNS]).to_pylist():
            if c["status"] == schemas.STATUS_OK and c["desync_s"] is not None:
                sf[ytid_of(c["source_id"])].append(c)
    rows = []
    for vid, offs in per.items():
        t = truth.get(vid, {})
        mode = _mode(offs)
        certs = sf.get(vid, [])
        sf_offs = [c[k] for c in certs for k in ("sf_offset_first", "sf_offset_last")]
        rows.append({"id": vid, "kind": t.get("kind", "unknown"),
                     "true_offset_s": _true_offset(t),
                     "sync_offset_s": mode, "sync_windows": len(offs),
                     "sync_agree": float(np.mean(np.isclose(offs, mode))) if offs else None,
                     "sf_offsets_s": sf_offs,
                     "desync_s": float(np.mean([c["desync_s"] for c in certs])) if certs else None})
    return sorted(rows, key=lambda r: (r["kind"], r["id"]))


def _s(x: float | None, fmt: str = "{:+.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def format_offset_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The table the demo prints (offsets in s, Synchformer's sign)."""
    head = (f"  {'kind':<22}{'video':<11}{'true':>7}  {'classifier (agree, windows)':<30}"
            f"{'Synchformer (contexts)':<26}{'DeSync':>7}")
    out = [head]
    for r in rows:
        clf = f"{_s(r['sync_offset_s'])} ({_s(r['sync_agree'], '{:.2f}')}, {r['sync_windows']})"
        sf = " ".join(f"{x:+.1f}" for x in r["sf_offsets_s"]) or "-"
        out.append(f"  {r['kind'][:22]:<22}{r['id'][:11]:<11}{r['true_offset_s']:>+7.2f}  {clf:<30}"
                   f"{sf[:25]:<26}{_s(r['desync_s'], '{:.2f}'):>7}")
    return out


def kind_summary(rows: list[dict[str, Any]], tolerance: float = 0.2) -> list[str]:
    """Per truth kind: videos, how many of each model's offsets lie within ``tolerance`` s of
    the truth (the classifier's clip mode; Synchformer's contexts), mean DeSync."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["kind"]].append(r)
    out = [f"  {'kind':<22}{'videos':>7}{'classifier ok':>15}{'Synchformer ok':>16}{'mean DeSync':>13}"]
    for kind, rs in sorted(by.items()):
        clf = [abs(r["sync_offset_s"] - r["true_offset_s"]) <= tolerance + 1e-9 for r in rs
               if r["sync_offset_s"] is not None]
        sf = [abs(x - r["true_offset_s"]) <= tolerance + 1e-9 for r in rs for x in r["sf_offsets_s"]]
        ds = [r["desync_s"] for r in rs if r["desync_s"] is not None]
        out.append(f"  {kind[:22]:<22}{len(rs):>7}{f'{sum(clf)}/{len(clf)}':>15}"
                   f"{(f'{sum(sf)}/{len(sf)}' if sf else '-'):>16}"
                   f"{(f'{np.mean(ds):.2f}' if ds else '-'):>13}")
    return out


def repair_rows(out: str | Path, truth_path: str | Path) -> list[dict[str, Any]]:
    """With repair on: each selected clip of a truly shifted video, and each clip the repair
    touched (repaired, refused, rejected), with its truth, the applied shift (Synchformer's
    sign: minus the delay undone), the outcome in words and the stage's note. Empty with
    repair off (no clip has a note)."""
    from manifests.columns import read_columns
    from curate.reports.stats import repair_outcome
    if not schemas.has_manifest(out, "selected"):
        return []
    truth = _truth(truth_path)
    cols = ["source_id", "start", "end", "status", "error", "av_shift_ms", "repaired", "repair_note"]
    rows = []
    for r in read_columns(out, "selected", cols).to_pylist():
        if r["repair_note"] is None:
            continue
        t = truth.get(ytid_of(r["source_id"]), {})
        true = _true_offset(t)
        if not (r["repaired"] or abs(true) > 1e-9 or r["status"] != schemas.STATUS_OK):
            continue
        rows.append({"id": ytid_of(r["source_id"]), "kind": t.get("kind", "unknown"),
                     "span": (r["start"], r["end"]), "true_offset_s": true,
                     "shift_offset_s": 0.0 - (r["av_shift_ms"] or 0.0) / 1000.0, "status": r["status"],
                     "outcome": repair_outcome(r["status"], r["repaired"], r["repair_note"], r["error"]),
                     "note": r["repair_note"]})
    return sorted(rows, key=lambda r: (r["kind"], r["id"], r["span"]))


def format_repair_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The demo's repair table: what was repaired, by how much, and the rescore's verdict."""
    out = [f"  {'kind':<22}{'video':<11}{'clip (s)':<12}{'true':>7}{'undone':>8}  {'ships':<7}outcome / note"]
    for r in rows:
        span = f"{r['span'][0]:.1f}-{r['span'][1]:.1f}"
        ships = "yes" if r["status"] == schemas.STATUS_OK else "no"
        out.append(f"  {r['kind'][:22]:<22}{r['id'][:11]:<11}{span:<12}{r['true_offset_s']:>+7.2f}"
                   f"{r['shift_offset_s']:>+8.2f}  {ships:<7}{r['outcome']}")
        out.append(f"  {'':<60}{r['note'][:140]}")
    return out
