"""Image semantics difference (seed 003, section 5.2): shot changes PySceneDetect missed.

Score: CLIP image features of the 10 sampled frames, L2-normalised (raw ViT features have
norms near 10, which the 0.17..0.55 band could not fit: DESIGN section 3), then the max over
the 9 consecutive L2 distances. Keep when ``min <= s <= max`` (inclusive).
The model lives in ``filters.clip_model``; this module is the math, the runner and the
declaration.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from filters.spec import Bound, FilterSpec, ModelSpec


def score(features: np.ndarray) -> float:
    """``features``: ``[T, D]`` image features (T = 10 by the sampling convention)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"clip_diff needs features [T>=2, D], got shape {f.shape}")
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    if not np.all(np.isfinite(f)) or np.any(norms == 0):
        raise ValueError("clip_diff: a feature vector is zero or not finite")
    f = f / norms
    return float(np.linalg.norm(np.diff(f, axis=0), axis=1).max())


def run(seg, alive: list[int]) -> dict[int, str]:
    """CLIP features once per grid frame of the segment, then each window's score."""
    ix = {k: seg.uniform10(k) for k in alive}
    cache = seg.cache("clip")
    seg.embed_missing(cache, [i for v in ix.values() for i in v], seg.frames, seg.model("clip_diff").embed)

    def one(k):
        seg.rows[k]["clip_diff"] = score(np.stack([cache[i] for i in ix[k]]))
    return seg.per_window(alive, one)


def load(weights: str | None, random: bool, run_models: Mapping[str, Any], device: str,
         convention: str | None = None):
    """``filters.clip_model.ClipScorer``: random, a local checkpoint file, or open_clip's
    pretrained weights named by the recipe (``clip_model`` / ``clip_pretrained``)."""
    from filters.clip_model import ClipScorer
    if random:
        return ClipScorer.random(seed=0, device=device)
    if Path(str(weights)).is_file():
        return ClipScorer.from_checkpoint(weights, model=run_models["clip_model"], device=device)
    return ClipScorer.from_pretrained(run_models["clip_model"], run_models["clip_pretrained"], device=device)


def _pretrained(run_models: Mapping[str, Any]) -> str:
    return f"{run_models['clip_model']}/{run_models['clip_pretrained']}"


FILTER = FilterSpec(
    name="clip_diff", columns=("clip_diff",), run=run,
    cost=59.0,   # GFLOP per window, CLIP ViT-B/32 with feature reuse (benchmarks/bench_flops.py)
    bounds=(Bound("clip_diff", "min", "min", 0.17), Bound("clip_diff", "max", "max", 0.55)),
    model=ModelSpec("clip", "clip_checkpoint", load, default_weights=_pretrained))
