"""One generated clip and its reference, scored under each convention (what
``sync_classifier.conventions`` ``Ours`` / ``Released`` call for ``generated_eval``; the
protocols are described in ``sync_classifier.generated_eval``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from decoding import native
from decoding.media import decode_clip
from decoding.mel import imagebind_mel, released_mel
from shards.clip_decode import generation_pixels, released_frames, released_wave
from sync_classifier import metrics
from sync_classifier.data import CLIP_FPS, CLIP_LEN, SAMPLE_RATE, resize_frames, video_tensor
from sync_classifier.model import SyncClassifier
from sync_classifier.released import CLIP_MEAN, CLIP_STD


class ImageBindScorer(Protocol):
    """What generated-video evaluation needs: ``filters.imagebind_scorer.ImageBindScorer`` fits."""

    def embed_audio(self, waves: np.ndarray) -> np.ndarray:  # float32 [N, 32000] -> [N, D]
        ...

    def embed_images(self, frames: np.ndarray) -> np.ndarray:  # uint8 [b, 224, 224, 3] -> [b, D]
        ...

    def embed_text(self, names: list[str]) -> np.ndarray:  # -> [n, D]
        ...


def clip_starts(duration: float, clip_len: float = CLIP_LEN) -> dict[str, float]:
    """Head, centre and tail clip starts of a ``duration``-s video."""
    last = max(duration - clip_len, 0.0)
    return {"head": 0.0, "center": last / 2, "tail": last}


def released_clip_starts(duration: float, clip_len: float = CLIP_LEN) -> dict[str, float]:
    """Head, centre and tail starts as released: ``linspace(0, D - clip_len, 3)``."""
    h, c, t = np.linspace(0.0, duration - clip_len, num=3, endpoint=True)
    return {"head": float(h), "center": float(c), "tail": float(t)}


def metrics_video(frames: np.ndarray, image_size: int = 256, size: int = 224) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> ``[3, T, size, size]`` as the released metrics see a clip:
    /255, centre trim to a square (``load_and_transform_images_stable_diffusion``), bilinear
    antialiased resize to ``image_size`` (both ``shards.loader.generation_pixels``), then
    ``preprocess_videos``: squashed to ``size x size`` (bicubic, antialiased, no clamp) and
    CLIP mean/std."""
    x = generation_pixels(frames, image_size)
    if image_size != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic",
                                            align_corners=False, antialias=True)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).permute(1, 0, 2, 3).contiguous()


def released_clip(path: Path, start: float, n: int = 12, fps: int = CLIP_FPS,
                  clip_len: float = CLIP_LEN, audio: bool = True) -> dict:
    """Frames (uint8 ``[n, H, W, 3]``, native) and, with ``audio``, the 16-kHz ``[C, N]``
    wave of the clip at ``start`` as the released generated-video loader reads them: the
    steps of ``shards.loader.decode_released`` (frames decoded from ``max(start, 0)``)."""
    nf, picks = released_frames(path, start, clip_len, fps, n, decode_from=max(start, 0.0))
    out = {"frames": nf.frames[picks]}
    if audio:
        out["wave"] = released_wave(path, start, clip_len, SAMPLE_RATE)[0]
    return out


@torch.no_grad()
def score_released(ref: Path, gen: Path, start: float, text: str | None,
                   sync_model: SyncClassifier, scorer: "ImageBindScorer | None",
                   image_size: int) -> dict:
    size = sync_model.config.frame_size
    dev = next(sync_model.parameters()).device
    gt = released_clip(ref, start)
    gmeta = native.released_metadata(gen)
    own_audio = gmeta["audio_duration"] is not None
    g = released_clip(gen, (gmeta["av_duration"] - CLIP_LEN) / 2., audio=own_audio)
    a_gt = released_mel(gt["wave"])[None]
    a_gen = released_mel(g["wave"])[None] if own_audio else a_gt
    v = torch.stack([metrics_video(g["frames"], image_size, size),
                     metrics_video(gt["frames"], image_size, size)]).to(dev)
    fa = sync_model.encode_audio(torch.cat([a_gen, a_gt]).to(dev))
    fv = sync_model.encode_video(v)
    phi_gen = float(sync_model.head(fa[:1].float(), fv[:1].float()).reshape(-1)[0])
    phi_gt = float(sync_model.head(fa[1:].float(), fv[1:].float()).reshape(-1)[0])
    row = {"phi_gen": phi_gen, "phi_gt": phi_gt, "rel_sync": metrics.rel_sync(phi_gen, phi_gt),
           "audio": "generated file" if own_audio else "reference"}
    if scorer is None:
        return row
    n = int(round(CLIP_LEN * SAMPLE_RATE))
    wave = np.zeros(n, np.float32)
    left = g["wave"][0].numpy() if own_audio else gt["wave"][0].numpy()
    i0 = (len(left) - n) // 2 if len(left) > n else 0
    wave[:min(n, len(left))] = left[i0:i0 + n]
    fa_ib = scorer.embed_audio(wave[None])[0]
    f_gen = scorer.embed_images(resize_frames(g["frames"], 224))
    f_gt1 = scorer.embed_images(resize_frames(gt["frames"][:1], 224))
    ia_frames = metrics.frame_cosines(fa_ib, f_gen)
    row["ia"] = metrics.ia(fa_ib, f_gen, generated=True)
    row["p_align"] = metrics.p_align(ia_frames, float(metrics.frame_cosines(fa_ib, f_gt1)[0]))
    row["align_sync"] = row["rel_sync"] * row["p_align"]
    if text:
        row["it"] = metrics.it(scorer.embed_text([text])[0], f_gen, generated=True)
    return row


def _decode(path: Path, start: float, frame_size: int):
    return decode_clip(path, start, start + CLIP_LEN, fps=CLIP_FPS, short_side=frame_size,
                       crop=frame_size, sample_rate=SAMPLE_RATE)


@torch.no_grad()
def score_ours(ref: Path, gen: Path, start: float, text: str | None, sync_model: SyncClassifier,
               scorer: ImageBindScorer | None) -> dict:
    size = sync_model.config.frame_size
    dev = next(sync_model.parameters()).device
    gt = _decode(ref, start, 224)
    g = _decode(gen, 0.0, 224)
    n = int(round(CLIP_LEN * CLIP_FPS))
    if len(g.frames) < n or len(gt.frames) < n:
        raise ValueError(f"clips need {n} frames at {CLIP_FPS} fps "
                         f"(generated {len(g.frames)}, reference {len(gt.frames)})")
    wave = gt.audio[: int(CLIP_LEN * SAMPLE_RATE)]
    mel = imagebind_mel(wave)[None]
    a = sync_model.encode_audio(mel.to(dev))
    v = sync_model.encode_video(torch.stack([video_tensor(g.frames[:n], size),
                                             video_tensor(gt.frames[:n], size)]).to(dev))
    phi = sync_model.pairwise(a.float(), v.float())[0].cpu()
    row = {"phi_gen": float(phi[0]), "phi_gt": float(phi[1]),
           "rel_sync": metrics.rel_sync(float(phi[0]), float(phi[1]))}
    if scorer is None:
        return row
    fa = scorer.embed_audio(wave[None])[0]
    f_gen = scorer.embed_images(g.frames[:n])
    f_gt1 = scorer.embed_images(gt.frames[:1])
    ia_frames = metrics.frame_cosines(fa, f_gen)
    ia_gt1 = float(metrics.frame_cosines(fa, f_gt1)[0])
    row["ia"] = metrics.ia(fa, f_gen, generated=True)
    row["p_align"] = metrics.p_align(ia_frames, ia_gt1)
    row["align_sync"] = row["rel_sync"] * row["p_align"]
    if text:
        row["it"] = metrics.it(scorer.embed_text([text])[0], f_gen, generated=True)
    return row
