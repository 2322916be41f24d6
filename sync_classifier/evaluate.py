"""The 31-offset evaluation protocols (seed 003 section 1.3).

Per test video, 31 clips shifted by 0.04 s over [-0.6, 0.6] s (taken from the middle of the
video); phi for all 31x31 pairs. Two accuracies come from the same phi:

* ``released`` (``scripts/avsync_eval.py`` of lzhangbj/ASVA, the paper's A2V 40.76 / V2A
  40.86): one anchor per video, the centre audio against the 31 videos (a2v) and the centre
  video against the 31 audios (v2a); a hit when the argmax lies within +-5 offsets of the
  centre. Chance 11/31 = 0.355.
* ``all-anchors``: every audio anchor k against the 31 videos (and every video anchor),
  correct within +-5 of k, edges included. Chance 311/961 = 0.324.

The inputs follow the weights' convention (``sync_classifier.conventions``): released weights
get the released clips and, by default, the released protocol; ours get our clips and
all-anchors. ``convention`` / ``protocol`` override; the result says which were used and
always carries both accuracies under ``protocols``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from sync_classifier import conventions
from sync_classifier.data import (EVAL_OFFSETS, EVAL_TOLERANCE, GeneratedClipDataset,
                                  ReleasedClipDataset, ShiftedClipDataset, collate_instances,
                                  find_sources, released_usable_sources, usable_sources)
from sync_classifier.model import SyncClassifier, load_sync_classifier

log = logging.getLogger(__name__)

#: the option that names the weights under `curate sync eval`: its weight errors say this one
CKPT_OPTION = "--ckpt"


def tolerant_accuracy(phi: torch.Tensor, tolerance: int = EVAL_TOLERANCE) -> tuple[float, float]:
    """(a2v, v2a) accuracy of one ``[K, K]`` phi matrix (rows: audio, columns: video)."""
    k = phi.shape[0]
    idx = torch.arange(k, device=phi.device)
    a2v = ((phi.argmax(1) - idx).abs() <= tolerance).float().mean().item()
    v2a = ((phi.argmax(0) - idx).abs() <= tolerance).float().mean().item()
    return a2v, v2a


def chance_accuracy(k: int = len(EVAL_OFFSETS), tolerance: int = EVAL_TOLERANCE) -> float:
    """Expected accuracy of a uniformly random argmax, edges included."""
    hits = sum(min(i, tolerance) + min(k - 1 - i, tolerance) + 1 for i in range(k))
    return hits / (k * k)


@torch.no_grad()
def phi_matrix(model: SyncClassifier, mel: torch.Tensor, video: torch.Tensor,
               chunk: int = 32) -> torch.Tensor:
    """phi ``[K, K]`` for one instance's clips, encoding each clip once."""
    dev = next(model.parameters()).device
    a = torch.cat([model.encode_audio(mel[i:i + chunk].to(dev)) for i in range(0, len(mel), chunk)])
    v = torch.cat([model.encode_video(video[i:i + chunk].to(dev)) for i in range(0, len(video), chunk)])
    return model.pairwise(a.float(), v.float()).cpu()


def evaluate(ckpt: str | Path | None = None, data: str | Path | None = None, *,
             model: SyncClassifier | None = None, device: str | None = None,
             num_workers: int = 2, n_generated: int = 50, seed: int = 12345,
             max_videos: int | None = None, frame_size: int | None = None,
             convention: str | None = None, protocol: str | None = None) -> dict:
    """Evaluate a checkpoint (or an in-memory ``model``) on ``data`` (folder of mp4s / curate
    output / manifest parquet) or, with ``data=None``, on ``n_generated`` held-out generated
    sources (seeded differently from training; our convention only: they are not files).

    ``convention``: the inputs (default: the weights'); ``protocol``: ``released`` or
    ``all-anchors`` (default: the convention's). Returns ``{"a2v", "v2a", "protocol",
    "convention", "n_videos", "chance", "chance_middle", "protocols": {name: {"a2v", "v2a",
    "chance"}}, "skipped": [...]}``; a2v/v2a are None when no video could be evaluated.
    """
    if model is None:
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = load_sync_classifier(ckpt, dev, option=CKPT_OPTION)
    model.eval()
    conv = conventions.convention_of(model, convention)
    proto = conventions.get_protocol(protocol, conv)
    size = frame_size or model.config.frame_size
    dataset, skipped = _eval_dataset(conv, data, size, n_generated, seed, max_videos)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_instances)
    sums, n = _accumulate(model, loader, skipped)
    middle = (2 * EVAL_TOLERANCE + 1) / len(EVAL_OFFSETS)
    chance = {conventions.RELEASED: middle, conventions.ALL_ANCHORS: chance_accuracy()}
    per = {p: {"a2v": s[0] / n if n else None, "v2a": s[1] / n if n else None, "chance": chance[p]}
           for p, s in sums.items()}
    result = {"a2v": per[proto]["a2v"], "v2a": per[proto]["v2a"], "protocol": proto,
              "convention": conv.name, "n_videos": n, "chance": chance[proto],
              "chance_middle": middle, "protocols": per, "skipped": skipped}
    if n == 0:
        result["error"] = "no video could be evaluated"
    log.info("sync eval (%s convention, %s protocol): a2v %s v2a %s over %d videos",
             conv.name, proto, result["a2v"], result["v2a"], n)
    return result


def _eval_dataset(conv: conventions.Convention, data, size: int, n_generated: int, seed: int,
                  max_videos: int | None) -> tuple[Any, list[dict]]:
    """(the evaluation clips, the sources skipped and why): the convention's clips of the
    videos, or generated held-out events (no ``data``)."""
    conv.require_files(data)
    if data is None:
        from sync_classifier.synthetic import make_grid_factory
        return GeneratedClipDataset(make_grid_factory(8.0, size), n_generated, EVAL_OFFSETS,
                                    size, train=False, seed=seed), []
    sources, sk = conv.usable_sources(find_sources(data), EVAL_OFFSETS)
    skipped = [{"source": s.source, "reason": s.reason} for s in sk]
    if max_videos is not None:
        sources = sources[:max_videos]
    return conv.eval_clips(sources, EVAL_OFFSETS, size, seed), skipped


def _accumulate(model: SyncClassifier, loader: DataLoader, skipped: list[dict]) -> tuple[dict, int]:
    """Per protocol the summed (a2v, v2a) hits over the videos, and how many were evaluated;
    instances that failed join ``skipped``."""
    sums = {p: [0.0, 0.0] for p in conventions.PROTOCOLS}
    n = 0
    for batch in loader:
        skipped += [{"source": f.source, "reason": f.reason} for f in batch["failed"]]
        if batch["mel"] is None:
            continue
        phi = phi_matrix(model, batch["mel"][0], batch["video"][0])
        for p, (x, y) in accuracies(phi).items():
            sums[p][0] += x
            sums[p][1] += y
        n += 1
    return sums, n


def accuracies(phi: torch.Tensor, tolerance: int = EVAL_TOLERANCE) -> dict[str, tuple[float, float]]:
    """(a2v, v2a) of one instance's phi under each protocol."""
    r = conventions.released_accuracy(phi, tolerance)
    return {conventions.RELEASED: (float(r["a2v_hit"]), float(r["v2a_hit"])),
            conventions.ALL_ANCHORS: tolerant_accuracy(phi, tolerance)}
