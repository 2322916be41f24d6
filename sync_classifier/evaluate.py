"""The 31-offset evaluation protocol (seed 003 section 1.3).

Per test video, 31 clips shifted by 0.04 s over [-0.6, 0.6] s (taken from the middle of the
video); phi for all 31x31 pairs. a2v accuracy: for each audio anchor k, the argmax over the
31 videos counts as correct when it lies within +-5 offsets (+-0.2 s) of k; v2a likewise per
video anchor over the audios. Chance: 11/31 = 0.355 for an anchor away from the edges; with
the edges, a uniformly random guess scores 311/961 = 0.324 on average.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from sync_classifier.data import (EVAL_OFFSETS, EVAL_TOLERANCE, GeneratedClipDataset,
                                  ShiftedClipDataset, collate_instances, find_sources,
                                  usable_sources)
from sync_classifier.model import SyncClassifier, load_sync_classifier

log = logging.getLogger(__name__)


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
             max_videos: int | None = None, frame_size: int | None = None) -> dict:
    """Evaluate a checkpoint (or an in-memory ``model``) on ``data`` (folder of mp4s / curate
    output / manifest parquet) or, with ``data=None``, on ``n_generated`` held-out generated
    sources (seeded differently from training).

    Returns ``{"a2v", "v2a", "n_videos", "chance", "chance_middle", "skipped": [...]}``;
    a2v/v2a are None when no video could be evaluated.
    """
    if model is None:
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = load_sync_classifier(ckpt, dev)
    model.eval()
    size = frame_size or model.config.frame_size
    skipped: list[dict] = []
    if data is None:
        from sync_classifier.synthetic import make_grid_factory
        dataset = GeneratedClipDataset(make_grid_factory(8.0, size), n_generated, EVAL_OFFSETS,
                                       size, train=False, seed=seed)
    else:
        sources, sk = usable_sources(find_sources(data), EVAL_OFFSETS)
        skipped = [{"source": s.source, "reason": s.reason} for s in sk]
        if max_videos is not None:
            sources = sources[:max_videos]
        dataset = ShiftedClipDataset(sources, EVAL_OFFSETS, size, train=False, seed=seed)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_instances)
    a2v, v2a, n = 0.0, 0.0, 0
    for batch in loader:
        skipped += [{"source": f.source, "reason": f.reason} for f in batch["failed"]]
        if batch["mel"] is None:
            continue
        phi = phi_matrix(model, batch["mel"][0], batch["video"][0])
        x, y = tolerant_accuracy(phi)
        a2v, v2a, n = a2v + x, v2a + y, n + 1
    result = {"a2v": a2v / n if n else None, "v2a": v2a / n if n else None, "n_videos": n,
              "chance": chance_accuracy(), "chance_middle": (2 * EVAL_TOLERANCE + 1) / len(EVAL_OFFSETS),
              "skipped": skipped}
    if n == 0:
        result["error"] = "no video could be evaluated"
    log.info("sync eval: a2v %s v2a %s over %d videos", result["a2v"], result["v2a"], n)
    return result
