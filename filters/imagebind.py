"""ImageBind filter: image-audio and image-text agreement of a 3-s window (DESIGN section 3).

Protocol (seed 003): 3 frames uniformly over the window; for each, the 2-s audio centred on
it; the class name as text. IA = min of the 3 cos(image, audio), IT = min of the 3
cos(image, text). Keep when IA >= 0.15 and IT >= 0.22. Which frames and audio spans are
used is decided in ``filters/sampling.py``; this module holds the math (``score``), the
runner and the declaration; the scorer that turns frames / waveforms / names into
L2-normalised ImageBind embeddings is ``filters.imagebind_scorer.ImageBindScorer``.

Weights: Meta's ImageBind-huge checkpoint is licensed CC BY-NC 4.0 (non-commercial use only)
and is never downloaded by curate; see ``filters.imagebind_model.load_imagebind``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from filters import sampling
from filters.spec import Bound, FilterSpec, ModelSpec


# ---------------------------------------------------------------- pure math


def _unit_rows(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} embedding has non-finite values")
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{what} embedding has zero norm")
    return x / norms


def score(image_emb: np.ndarray, audio_emb: np.ndarray, text_emb: np.ndarray) -> tuple[float, float]:
    """(IA, IT): the minimum over the sampled frames of cos(image_i, audio_i) and of
    cos(image_i, text). ``image_emb`` and ``audio_emb`` are [K, D] with row i the frame and
    the audio centred on it (K = 3 in the protocol), ``text_emb`` is [D]. Inputs need not be
    normalised; bad shapes or values raise ValueError."""
    img, aud, txt = (np.asarray(a) for a in (image_emb, audio_emb, text_emb))
    if img.ndim != 2 or img.shape[0] == 0:
        raise ValueError(f"image embeddings must be [K, D] with K >= 1, got {img.shape}")
    if aud.shape != img.shape:
        raise ValueError(f"audio embeddings {aud.shape} do not match image embeddings {img.shape}")
    if txt.shape != (img.shape[1],):
        raise ValueError(f"text embedding must be [{img.shape[1]}], got {txt.shape}")
    img, aud, txt = _unit_rows(img, "image"), _unit_rows(aud, "audio"), _unit_rows(txt, "text")
    ia = float(np.min(np.sum(img * aud, axis=1)))
    it = float(np.min(img @ txt))
    return ia, it


# ---------------------------------------------------------------- the filter


def _inputs(seg, k: int) -> tuple[list[int], list[int]]:
    """Grid indices of window ``k``'s 3 frames and the start samples of their 2-s audio."""
    s, e = seg.bounds(k)
    frames = sampling.uniform3_indices(s, seg.grid.start)
    # each 2-s audio is centred on its frame and slid inside the window (filters.sampling)
    audio = [seg.audio_key(a0, sampling.IMAGEBIND_AUDIO_SECONDS)
             for a0, _ in sampling.imagebind_audio_spans(s, seg.grid.start, e)]
    return frames, audio


def run(seg, alive: list[int]) -> dict[int, str]:
    """Image embeddings once per grid frame and audio embeddings once per distinct 2-s
    audio of the segment, the class name's text embedding once, then each window's (IA, IT)."""
    if not seg.class_text:
        return {k: "error: no class name to use as ImageBind text" for k in alive}
    ib = seg.model("imagebind")
    text = ib.embed_text([seg.class_text])[0]
    inp = {k: _inputs(seg, k) for k in alive}
    secs = sampling.IMAGEBIND_AUDIO_SECONDS
    images, audio = seg.cache("imagebind_image"), seg.cache("imagebind_audio")
    seg.embed_missing(images, [i for f, _ in inp.values() for i in f], seg.frames, ib.embed_images)
    seg.embed_missing(audio, [a for _, au in inp.values() for a in au],
                      lambda todo: np.stack([seg.audio_at(a, secs) for a in todo]), ib.embed_audio)

    def one(k):
        f, a = inp[k]
        ia, it = score(np.stack([images[i] for i in f]), np.stack([audio[j] for j in a]), text)
        seg.rows[k]["imagebind_ia"], seg.rows[k]["imagebind_it"] = ia, it
    return seg.per_window(alive, one)


def inspect(weights: str) -> dict:
    """The checkpoint's keys and shapes against ImageBind-huge on the meta device (the file is
    memory-mapped: its 4.5 GB are not read)."""
    from filters.imagebind_model import check_checkpoint
    check_checkpoint(weights)
    return {}


def load(weights: str | None, random: bool, run_models: Mapping[str, Any], device: str,
         convention: str | None = None):
    from filters.imagebind_scorer import ImageBindScorer
    return (ImageBindScorer.random(seed=0, device=device) if random
            else ImageBindScorer.from_checkpoint(weights, device=device))


FILTER = FilterSpec(
    name="imagebind", columns=("imagebind_ia", "imagebind_it"), run=run, needs_audio=True, reads_fbank=True,
    cost=512.0,   # GFLOP per window, ImageBind-huge: 335 per image (benchmarks/bench_flops.py)
    bounds=(Bound("imagebind_ia", "ia_min", "min", 0.15), Bound("imagebind_it", "it_min", "min", 0.22)),
    model=ModelSpec("imagebind", "imagebind_checkpoint", load, inspect=inspect))
