"""Evaluating generated videos as AVSyncD does (seed 003 section 3.4): IA, IT, RelSync, AlignSync.

Layout: ``reference_dir`` holds the ground-truth test videos ``<name>.mp4`` (optionally in
class folders ``<class>/<name>.mp4``: the folder name is the text prompt for IT);
``generated_dir`` holds, for each, three 2-s generated clips ``<name>_head.mp4``,
``<name>_center.mp4``, ``<name>_tail.mp4`` (same relative folder), generated from the
ground-truth audio and first frame of the reference clip at [0, 2], the centre and
[d - 2, d]. The generated clip's own audio is ignored: the ground-truth audio is the condition.

Per clip: phi(a, v_gen) and phi(a, v_gt) with the sync classifier -> RelSync (Eq. 5); with an
ImageBind scorer also IA of generated frames 2..b and IT, P_align and AlignSync (Eqs. 7-11).
FID and FVD are not computed here (they need InceptionV3 / I3D feature sets): use a
dedicated tool. A value that cannot be computed is None with an ``error``.

Protocols (``protocol``; default: the sync weights' convention, ``sync_classifier.conventions``):

* ``ours``: clips on our decode grid (last frame at or before start + k/6, short side +
  centre crop), the ground-truth audio as the condition.
* ``released`` (``avgen/evaluations/eval.py``, to reproduce the paper's tables): reference
  clips at ``linspace(0, D - 2, 3)`` of the shorter stream's duration D, generated clips at
  their centre; frames = the first with pts >= start + k/6 (``decoding.native.stepped_frames``),
  trimmed to the generation aspect, bilinear to ``image_size``, then squashed to 224x224
  (bicubic) for the classifier; audio = the AAC frames with pts in [start, start + 2], sinc
  resampled, left-channel mel; the generated file's own audio when it has one (as released),
  else the reference's.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from decoding.media import DecodeError
from sync_classifier import conventions
# the per-convention clip scoring lives in ``generated_clips``; these names stay importable here
from sync_classifier.generated_clips import (ImageBindScorer, clip_starts,  # noqa: F401
                                             metrics_video, released_clip, released_clip_starts)
from sync_classifier.model import SyncClassifier

log = logging.getLogger(__name__)

PARTS = ("head", "center", "tail")



def evaluate_generated(generated_dir: str | Path, reference_dir: str | Path,
                       sync_model: SyncClassifier, imagebind_scorer: ImageBindScorer | None = None,
                       protocol: str | None = None, image_size: int = 256) -> list[dict]:
    """One row per (test video, part): name, part, protocol, phi_gen, phi_gt, rel_sync, ia,
    it, p_align, align_sync, error. Missing/undecodable clips give a row with an error.
    ``protocol``: ``released`` or ``ours`` (default: the sync weights' convention)."""
    generated_dir, reference_dir = Path(generated_dir), Path(reference_dir)
    conv = conventions.convention_of(sync_model, protocol)
    proto = conv.name
    sync_model.eval()
    rows = []
    for ref in sorted(reference_dir.rglob("*.mp4")):
        rel = ref.relative_to(reference_dir)
        text = rel.parent.name.replace("_", " ") if rel.parent != Path(".") else None
        try:
            starts = conv.generated_starts(ref)
        except DecodeError as e:
            rows += [_error_row(rel, p, f"reference: {e}", proto) for p in PARTS]
            continue
        for part, start in starts.items():
            gen = generated_dir / rel.parent / f"{ref.stem}_{part}.mp4"
            if not gen.exists():
                rows.append(_error_row(rel, part, f"missing generated clip {gen.name}", proto))
                continue
            try:
                row = conv.score_generated(ref, gen, start, text, sync_model, imagebind_scorer,
                                           image_size)
            except (DecodeError, ValueError, OSError) as e:
                rows.append(_error_row(rel, part, str(e), proto))
                continue
            rows.append({"name": str(rel.with_suffix("")), "part": part, "protocol": proto,
                         "error": None, **row})
    return rows


def _error_row(rel: Path, part: str, error: str, protocol: str | None = None) -> dict:
    log.warning("generated eval %s/%s: %s", rel, part, error)
    return {"name": str(rel.with_suffix("")), "part": part, "protocol": protocol, "error": error}


def summarize(rows: list[dict]) -> dict:
    """Mean of each metric over rows where it was computed, the counts and the protocol."""
    protos = sorted({r["protocol"] for r in rows if r.get("protocol")})
    out: dict = {"n_clips": len(rows), "n_failed": sum(1 for r in rows if r.get("error")),
                 "protocol": protos[0] if len(protos) == 1 else (protos or None)}
    for k in ("ia", "it", "rel_sync", "align_sync"):
        vals = [r[k] for r in rows if r.get(k) is not None and not r.get("error")]
        out[k] = float(np.mean(vals)) if vals else None
    return out


def format_table(rows: list[dict], method: str = "generated") -> str:
    """A table like seed 003 Table 6 (IA and IT x100, RelSync and AlignSync in %).

    FID and FVD are not computed by this tool: their columns read "n/c".
    """
    s = summarize(rows)

    def fmt(v: float | None, scale: float) -> str:
        return "-" if v is None or math.isnan(v) else f"{v * scale:.2f}"

    head = f"{'Method':<16}{'FID':>8}{'FVD':>8}{'IA':>8}{'IT':>8}{'RelSync':>9}{'AlignSync':>11}"
    line = (f"{method:<16}{'n/c':>8}{'n/c':>8}{fmt(s['ia'], 100):>8}{fmt(s['it'], 100):>8}"
            f"{fmt(s['rel_sync'], 100):>9}{fmt(s['align_sync'], 100):>11}")
    foot = (f"protocol {s['protocol']}; {s['n_clips']} clips, {s['n_failed']} failed; n/c = not computed here "
            "(FID/FVD need InceptionV3/I3D features); '-' = no ImageBind scorer or no value")
    return "\n".join([head, "-" * len(head), line, foot])


def run_metrics(generated_dir: str | Path, reference_dir: str | Path, sync_checkpoint: str | Path,
                imagebind_scorer: ImageBindScorer | None = None, as_json: bool = False,
                device: str | None = None, protocol: str | None = None,
                image_size: int = 256) -> str:
    """What `curate metrics` prints: the Table-6-style summary, or every row as JSON.

    ``sync_checkpoint``: our checkpoint file or the released ``modules/`` folder. Without an
    ImageBind scorer (``curate.reports.gen_metrics`` builds one from a checkpoint; this package does
    not import ``filters``), IA / IT / AlignSync are not computed (RelSync still is).
    """
    import json

    from sync_classifier.model import load_sync_classifier

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_sync_classifier(sync_checkpoint, dev)
    rows = evaluate_generated(generated_dir, reference_dir, model, imagebind_scorer,
                              protocol=protocol, image_size=image_size)
    if not rows:
        raise ValueError(f"no reference videos (*.mp4) under {reference_dir}")
    if as_json:
        return json.dumps({"summary": summarize(rows), "rows": rows}, indent=2, default=str)
    return format_table(rows)
