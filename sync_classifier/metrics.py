"""Synchronisation and alignment metrics of seed 003 section 2 and 3.4 (the one place for them).

* ``p_sync(phi3)``: Eq. 4, softmax over 3 shifts (no temperature), mass on the middle.
* ``p_sync_pair``: P_sync in both directions for a source, from 3 clips 0.25 s apart.
* ``rel_sync``: Eq. 5, ``e^phi_gen / (e^phi_gen + e^phi_gt)``.
* ``p_align``: Eqs. 7-9, per generated frame ``e^IA_i / (e^IA_i + e^IA_gt1)`` averaged over
  frames 2..b.
* ``align_sync``: Eqs. 10-11, RelSync x P_align.
* ``ia`` / ``it``: Eqs. 13-14, mean cosine between one audio (text) embedding and frame
  embeddings; generated videos exclude the first frame. Eq. 13/14 write the numerator as a
  norm of the dot product; we use the signed cosine, as CLIP-score implementations do.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from decoding.media import Grid
from sync_classifier.data import CLIP_FPS, CLIP_LEN, shifted_clips
from sync_classifier.model import SyncClassifier

P_SYNC_SHIFT = 0.25


def _sigmoid(x: float) -> float:
    # e^a / (e^a + e^b) = sigmoid(a - b), computed without overflow
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def p_sync(phi3: Sequence[float] | np.ndarray | torch.Tensor) -> float:
    """Eq. 4: ``exp(phi_2) / sum_i exp(phi_i)`` for the 3 scores of one anchor (middle = synced)."""
    x = np.asarray(phi3.detach().cpu() if isinstance(phi3, torch.Tensor) else phi3, np.float64)
    if x.shape != (3,):
        raise ValueError(f"p_sync needs 3 scores (shifts -d, 0, +d), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"p_sync got non-finite scores {x.tolist()}")
    e = np.exp(x - x.max())
    return float(e[1] / e.sum())


@torch.no_grad()
def phi_for_clips(model: SyncClassifier, mel: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """``[K, K]`` phi (rows audio, columns video) for K clips, each encoded once."""
    dev = next(model.parameters()).device
    a = model.encode_audio(mel.to(dev))
    v = model.encode_video(video.to(dev))
    return model.pairwise(a.float(), v.float()).cpu()


def p_sync_pair(model: SyncClassifier, grid: Grid, center: float, shift: float = P_SYNC_SHIFT,
                clip_len: float = CLIP_LEN, fps: int = CLIP_FPS,
                frame_size: int | None = None) -> dict:
    """P_sync a2v and v2a from 3 clips at ``center + (-shift, 0, shift)``.

    a2v: the middle audio against the three videos; v2a: the middle video against the three
    audios. Returns ``{"a2v", "v2a", "phi"}`` (phi as a 3x3 nested list). Raises ValueError
    when the clips do not fit in the grid (the caller records the reason).
    """
    was_training = model.training
    model.eval()
    size = frame_size if frame_size is not None else model.config.frame_size
    mel, video = shifted_clips(grid, center, (-shift, 0.0, shift), clip_len, fps, size)
    phi = phi_for_clips(model, mel, video)
    model.train(was_training)
    return {"a2v": p_sync(phi[1, :]), "v2a": p_sync(phi[:, 1]), "phi": phi.tolist()}


def rel_sync(phi_gen: float, phi_gt: float) -> float:
    """Eq. 5: ``e^phi(a, v_gen) / (e^phi(a, v_gen) + e^phi(a, v_gt))``."""
    return _sigmoid(float(phi_gen) - float(phi_gt))


def p_align(ia_gen_frames: Sequence[float] | np.ndarray, ia_first_gt: float) -> float:
    """Eqs. 7-9: mean over generated frames 2..b of ``e^IA_i / (e^IA_i + e^IA(a, v_1))``.

    ``ia_gen_frames``: IA (cosine) of the audio with each of the b generated frames, first
    frame included (it is dropped here); ``ia_first_gt``: IA with the ground-truth first frame.
    """
    x = np.asarray(ia_gen_frames, np.float64).ravel()
    if x.size < 2:
        raise ValueError(f"p_align needs at least 2 generated frames, got {x.size}")
    return float(np.mean([_sigmoid(v - float(ia_first_gt)) for v in x[1:]]))


def align_sync(phi_gen: float, phi_gt: float, ia_gen_frames: Sequence[float] | np.ndarray,
               ia_first_gt: float) -> float:
    """Eqs. 10-11: RelSync x P_align."""
    return rel_sync(phi_gen, phi_gt) * p_align(ia_gen_frames, ia_first_gt)


def _cosines(query, frame_embs) -> np.ndarray:
    q = np.asarray(query.detach().cpu() if isinstance(query, torch.Tensor) else query, np.float64).ravel()
    f = np.asarray(frame_embs.detach().cpu() if isinstance(frame_embs, torch.Tensor) else frame_embs,
                   np.float64)
    if f.ndim != 2 or f.shape[1] != q.size:
        raise ValueError(f"frame embeddings must be [b, {q.size}], got {f.shape}")
    qn, fn = np.linalg.norm(q), np.linalg.norm(f, axis=1)
    if qn == 0 or np.any(fn == 0):
        raise ValueError("zero embedding: cosine undefined")
    return (f @ q) / (fn * qn)


def frame_cosines(query, frame_embs) -> np.ndarray:
    """Cosine of one embedding with each frame embedding, ``[b]``."""
    return _cosines(query, frame_embs)


def ia(audio_emb, frame_embs, generated: bool = False) -> float:
    """Eq. 14: mean cosine between the audio embedding and frames (2..b when ``generated``)."""
    c = _cosines(audio_emb, frame_embs)
    return _mean_frames(c, generated)


def it(text_emb, frame_embs, generated: bool = False) -> float:
    """Eq. 13: mean cosine between the text embedding and frames (2..b when ``generated``)."""
    c = _cosines(text_emb, frame_embs)
    return _mean_frames(c, generated)


def _mean_frames(c: np.ndarray, generated: bool) -> float:
    if generated:
        if c.size < 2:
            raise ValueError("a generated video needs at least 2 frames (the first is excluded)")
        c = c[1:]
    return float(c.mean())
