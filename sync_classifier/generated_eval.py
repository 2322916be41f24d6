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
from typing import Protocol

import numpy as np
import torch

from decoding import native
from decoding.media import DecodeError, decode_clip, probe
from decoding.mel import imagebind_mel, released_mel
from shards.loader import generation_pixels, released_frames, released_wave
from sync_classifier import conventions, metrics
from sync_classifier.data import CLIP_FPS, CLIP_LEN, SAMPLE_RATE, resize_frames, video_tensor
from sync_classifier.model import SyncClassifier

log = logging.getLogger(__name__)

PARTS = ("head", "center", "tail")


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
    mean = torch.tensor(conventions.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(conventions.CLIP_STD).view(1, 3, 1, 1)
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
def _score_clip_released(ref: Path, gen: Path, start: float, text: str | None,
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
def _score_clip(ref: Path, gen: Path, start: float, text: str | None, sync_model: SyncClassifier,
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


def evaluate_generated(generated_dir: str | Path, reference_dir: str | Path,
                       sync_model: SyncClassifier, imagebind_scorer: ImageBindScorer | None = None,
                       protocol: str | None = None, image_size: int = 256) -> list[dict]:
    """One row per (test video, part): name, part, protocol, phi_gen, phi_gt, rel_sync, ia,
    it, p_align, align_sync, error. Missing/undecodable clips give a row with an error.
    ``protocol``: ``released`` or ``ours`` (default: the sync weights' convention)."""
    generated_dir, reference_dir = Path(generated_dir), Path(reference_dir)
    proto = conventions.convention_of(sync_model, protocol).name
    sync_model.eval()
    rows = []
    for ref in sorted(reference_dir.rglob("*.mp4")):
        rel = ref.relative_to(reference_dir)
        text = rel.parent.name.replace("_", " ") if rel.parent != Path(".") else None
        try:
            if proto == conventions.RELEASED:
                starts = released_clip_starts(native.released_metadata(ref)["av_duration"] or 0.0)
            else:
                starts = clip_starts(probe(ref)["duration"] or 0.0)
        except DecodeError as e:
            rows += [_error_row(rel, p, f"reference: {e}", proto) for p in PARTS]
            continue
        for part, start in starts.items():
            gen = generated_dir / rel.parent / f"{ref.stem}_{part}.mp4"
            if not gen.exists():
                rows.append(_error_row(rel, part, f"missing generated clip {gen.name}", proto))
                continue
            try:
                if proto == conventions.RELEASED:
                    row = _score_clip_released(ref, gen, start, text, sync_model, imagebind_scorer,
                                               image_size)
                else:
                    row = _score_clip(ref, gen, start, text, sync_model, imagebind_scorer)
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
