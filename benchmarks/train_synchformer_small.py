"""Train a small Synchformer-shaped model on generated flash/beep events and print the
confusion of true vs predicted offset classes on held-out generated clips.

The model is our ``filters.synchformer_model.Synchformer`` at reduced sizes (``SMALL``: encoder
widths 32 with one block each, frames reduced to 32 px by area averaging of the 224 crop, a
2-layer global transformer of width 168 with 21 heads): the same 14 segments of 16 frames, the
same AST input, the same 21 offset classes over +-2 s. The released model is never trained here.

Data: ``synth.make_event_video`` flash/beep mp4 files (a moving texture, a disc flashing at each
event, a beep at the same instant, gaps uniform in [0.5, 1.5] s: the demo's flash_click density),
decoded by the real path (``synchformer.decode_context_media``: 25 fps as ffmpeg's fps filter,
short side 256, 16-kHz mono) once (``--cache`` keeps them) and held as 32-px frames plus the
log-mel of the audio segment starting at every frame, so a training context only indexes. A
context takes 4.8 s of video from frame f0 and the audio ``offset`` later (the authors'
convention, as ``filters/synchformer.py`` states: a positive offset means what is heard at video
time t belongs to video time t + offset). Held-out clips are other seeds, made with the audio
shifted by ``-offset`` (sounds at event - offset); the truth is how the media were made.

Two stages:
1. ``train_encoders``: the video and audio encoders learn where the events are: binary
   cross-entropy of a linear onset head (training only) on every token, the targets known from
   the seeds (a video tubelet holding the first 25-fps frame that shows a flash, an audio patch
   holding a beep onset).
2. ``init_correlator`` + ``train_global``: the global transformer's init is ours and starts as a
   correlator of the two encoders' onset heads over the 21 offsets (layer 1: one head per
   offset class carries each video token to the audio tokens one offset away; layer 2 pools, in
   OFF, the share of video events that have a sound at each offset; the head reads it). Then
   the encoders are frozen, their tokens computed once per frame, and the projections and the
   whole global transformer are trained on cross-entropy; the best state on held-out validation
   contexts (seeds apart from the final table's and the test's) is kept.

Why that init: from a random global transformer the offset never left chance on this CPU (the
previous attempts, same data: 3500 joint steps with onset losses, then 3600 steps with frozen
encoders, ~230k contexts, loss 3.04 = ln 21 throughout, held-out accuracy 1/21; on ideal tokens
the dense events did not leave chance in 600 steps). Lining up video with audio events is what
a random init learns slowly; the correlator states it, and training fits it to the encoders.

The shipped ``filters/weights/synchformer_demo_small.pt`` (0.87 M parameters) is the ``--out``
file, copied unchanged, of a second run that starts from the first one's model (``--init``: its
encoders kept, no first stage) and trains its global stage with the audio moved off the class
centre by up to 2 frames (``--jitter 2``: 0.08 s, labelled with the nearest class; a real shift,
or the residual a repair leaves on the classifier's 0.04-s grid, is rarely a class centre):

    PYTHONPATH=. .venv/bin/python benchmarks/train_synchformer_small.py --seed 0 --sources 100 \
        --cache /tmp/i27t/sources100.pt --steps 2000 --global-steps 600 --global-minutes 12 \
        --out /tmp/i27t/final1.pt
    PYTHONPATH=. .venv/bin/python benchmarks/train_synchformer_small.py --seed 0 --sources 60 \
        --cache /tmp/i27e/sources60.pt --init /tmp/i27t/final1.pt --jitter 2 \
        --global-steps 600 --global-minutes 12 --out /tmp/i27e/jit1.pt

on the shared 2-core CPU (one torch thread, load average 3-40 from other work; the first run
07:16-07:38 UTC, the second 07:56-08:07 of 2026-12-06). First run, first stage: 2000 steps of
batch 16 (709 s): onset loss 0.68 at step 50, 0.04 at 150, 0.007 at 2000. (In an exploratory
first stage with the same data and steps, its onset heads found every video onset of the 42
validation contexts, 191 of 191, with 12 tokens firing with no onset; before the video targets
followed ffmpeg's frame picks, 40 sources and 1500 steps found 164 of 191 with 89.) Its second
stage: the correlator init alone 0.952 on the validation contexts, 1.000 from step 200; 600 steps
(460 s): 126 of 126 held-out contexts exact, but off-grid shifts misread (one clip per shift of
``OFFGRID_SHIFTS``: 10 of 18 contexts on the nearest class; e.g. +0.08 s read +1.2, -0.92 s read
+1.2 and +1.4). The demo's repair of a 0.40-s shift by the classifier's 0.32 s left -0.08 s,
which it read as -1.4 s. Second run (the first 60 of the same sources; validation contexts at
the centres and 1-2 frames off): 0.857 at step 0, best 0.940 (within one class 0.964) at step
500 of 600 (447 s, loss 0.22). Held-out table (3 clips of 8 s per class, seeds 960_000 on, 126
contexts): 124 exact (a -2.0 s context read 0.0 and a +2.0 s one -1.4; every other class 6 of
6, so -1.0, -0.4, 0, +0.2 and +0.8 s: 6 of 6 each); off-grid (2 clips per shift, seeds 980_000
on, 36 contexts): 31 on the nearest class (every one of +-0.04, -0.08, -0.32; one of four wrong
for +0.08 (+0.2), +0.48 (+0.6), -0.92 (+0.4), +1.28 (+1.4), -1.72 (-1.6)). A third run
continuing the second (100 sources, ``--global-lr 2e-4``, 450 steps) gave 124 and 27: not
shipped. ``--eval-only`` measures a saved file (the tables above are those its run printed).
On the demo corpus (the first run's model; each whole 10-s video through ``certify_clip``, a
scratch script): the 5 flash_click videos at 0 and the 3 shifted ones at their +-0.4 s, both
contexts, probability >= 0.99; the drum videos (periodic beats with a decaying flash and a kick,
never trained on; a periodic train is ambiguous by its period) 3 of 10 contexts at 0; the
videos without events probability 0.10-0.36. The shipped model in the demo (README): flash_click
10/10 contexts at 0, the shifted videos' 12/12 at their shift, drum 5/10, and with repair on
every shifted video repaired at offset 0 (the -0.08-s residual now reads 0). These are
generated clips; the released checkpoints' accuracy on real clips is not measured here (no
model hub).

Prints progress, the held-out confusion table (rows: true class, columns: predicted class, two
contexts per clip through ``synchformer.certify_clip``, as the certify stage measures), then one
JSON line with the figures; ``--eval-only`` measures an existing ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from curate.demo import synth
from filters import synchformer as sf
from filters.synchformer_model import (AUDIO_T, VIDEO_T, Synchformer, SynchformerConfig,
                                       save_synchformer)

SMALL = SynchformerConfig(video_dim=32, video_depth=1, video_heads=2, audio_dim=32, audio_depth=1,
                          audio_heads=2, dim=168, layers=2, heads=21, image=32)
TRAIN_SEED_BASE = 930_000
VAL_SEED_BASE = 950_000
#: held-out seeds of the final table (the test uses its own, 970_000 on)
EVAL_SEED_BASE = 960_000
#: the issue's known shifts (Synchformer offsets, s)
EVAL_SHIFTS = (-1.0, -0.4, 0.0, 0.2, 0.8)
#: held-out shifts between class centres (whole 25-fps frames, at most 2 frames = 0.08 s from
#: the nearest centre): a real shift, or the residual a repair leaves, is rarely a class centre
OFFGRID_SHIFTS = (0.08, -0.32, 0.48, -0.92, 0.04, -0.04, -0.08, 1.28, -1.72)
#: held-out seeds of the off-grid table
OFFGRID_SEED_BASE = 980_000
SOURCE_S = 16.0
CLIP_S = 8.0
MARGIN = 50          # frames kept free before and after a context (2 s: the largest offset)


def event_times(rng: np.random.Generator, duration: float) -> list[float]:
    """Events from 2 s before the start to 2 s after the end, gaps uniform in [0.5, 1.5] s."""
    n = int(math.ceil((duration + 4.0) / 0.5)) + 1
    ev = np.cumsum(rng.uniform(0.5, 1.5, n)) - 2.0 - float(rng.uniform(0.0, 1.5))
    return [float(e) for e in ev if e < duration + 2.0]


def make_clip(path: Path, seed: int, duration: float, offset: float = 0.0) -> Path:
    """A flash/beep mp4 whose audio carries Synchformer offset ``offset`` (sounds at e - offset)."""
    rng = np.random.default_rng(seed)
    synth.make_event_video(path, duration, event_times(rng, duration), audio_offset=-offset,
                           seed=int(rng.integers(1 << 30)))
    return path


def source_events(i: int) -> np.ndarray:
    """The event times of training source ``i`` as make_clip drew them (snapped to 24-fps frames)."""
    ev = event_times(np.random.default_rng(TRAIN_SEED_BASE + i), SOURCE_S)
    return np.array([round(e * synth.FPS) / synth.FPS for e in ev])


def render_sources(n: int, workdir: Path, cache: str | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """In-sync training sources through the real decode: (frames [T, 3, 32, 32], the log-mel of
    every 16-frame audio segment starting on a frame [T - 15, 1, 128, 66]); kept in ``cache``."""
    if cache and Path(cache).is_file():
        return torch.load(cache, weights_only=True)
    out = []
    for i in range(n):
        p = make_clip(workdir / f"train_{i}.mp4", TRAIN_SEED_BASE + i, SOURCE_S)
        frames, wave = sf.decode_context_media(p, 0.0, SOURCE_S)
        out.append((sf.normalise_frames(frames, SMALL.image), segment_mels(wave, len(frames))))
        p.unlink()
    if cache:
        torch.save(out, cache)
    return out


def segment_mels(wave: np.ndarray, n_frames: int) -> torch.Tensor:
    """Log-mel of the 0.64-s audio segment starting at each frame (every 640 samples): training
    contexts then only index (offsets are whole frames: 0.2 s = 5 frames)."""
    per = sf.SAMPLE_RATE // sf.FPS
    n = min(n_frames, (len(wave) - sf.SEG_SAMPLES) // per + 1)
    w = torch.as_tensor(np.asarray(wave, np.float32))
    segs = torch.stack([w[i * per:i * per + sf.SEG_SAMPLES] for i in range(n)])
    return torch.cat([sf.log_mel(c) for c in segs.split(64)]).unsqueeze(1)


def sample_batch(sources: list, events: list, batch: int, rng: np.random.Generator) -> tuple:
    """Contexts with a random offset class each (video from frame f0, audio from f0 + offset),
    their labels, and which video / audio tokens hold an event onset (the auxiliary targets)."""
    grid = sf.offset_grid()
    step = int(round(float(grid[1] - grid[0]) * sf.FPS))            # frames per class (5)
    seg = sf.segment_starts(0)
    frame_seg = seg[:, None] + np.arange(sf.SEG_FRAMES)[None, :]
    vids, auds, labels, vflags, aflags = [], [], [], [], []
    for _ in range(batch):
        i = int(rng.integers(len(sources)))
        frames, mels = sources[i]
        k = int(rng.integers(len(grid)))
        f0 = int(rng.integers(MARGIN, len(mels) - sf.CONTEXT_FRAMES - MARGIN))
        a_first = f0 + step * (k - len(grid) // 2)
        vids.append(frames[f0 + frame_seg])
        auds.append(mels[a_first + seg])
        labels.append(k)
        vt = (f0 + seg[:, None] + 2 * np.arange(VIDEO_T)[None, :]) / sf.FPS
        at = (a_first + seg[:, None]) / sf.FPS + 0.1 * np.arange(AUDIO_T)[None, :] + 0.03
        vflags.append(_onsets(frame_onsets(events[i]), vt, 2 / sf.FPS))
        aflags.append(_onsets(events[i], at, 0.1))
    return (torch.stack(vids), torch.stack(auds), torch.tensor(labels),
            torch.tensor(np.array(vflags)), torch.tensor(np.array(aflags)))


def frame_onsets(events: np.ndarray) -> np.ndarray:
    """The time of the first 25-fps frame showing each flash: ffmpeg's fps filter gives slot n
    the last source frame shown before (n + 0.5) / 25, so a flash starting at e is first seen
    in slot floor(25 e + 0.5) (the onset targets of the video tokens; e alone put a quarter of
    them one tubelet early)."""
    return np.floor(events * sf.FPS + 0.5 + 1e-9) / sf.FPS


def _onsets(events: np.ndarray, starts: np.ndarray, width: float) -> np.ndarray:
    """1.0 where an event onset falls in [start, start + width)."""
    d = events[None, None, :] - starts[..., None]
    return ((d >= -1e-6) & (d < width - 1e-6)).any(-1).astype(np.float32)


def token_times() -> torch.Tensor:
    """Time (s) of each global token: OFF, 14x8 video tubelets, MOD, 14x6 audio patches (the
    middle of the onsets each token's event target covers)."""
    s = torch.arange(sf.N_SEGMENTS, dtype=torch.float64)[:, None]
    video = (sf.SEG_STEP * s + 2 * torch.arange(VIDEO_T) + 0.5) / sf.FPS
    audio = (sf.SEG_STEP_SAMPLES * s + 1600 * torch.arange(AUDIO_T) + 1280) / sf.SAMPLE_RATE
    return torch.cat((torch.tensor([-1.0]), video.flatten(), torch.tensor([-1.0]), audio.flatten()))


def init_small(model: Synchformer) -> None:
    """Random tokens and positions in the encoders (the loader's zeros would start every token
    alike); the global stage has its own init (``init_correlator``)."""
    for name, p in model.named_parameters():
        if name.endswith(("cls_token", "distillation_token", "pos_embed", "temp_embed",
                          "position_embeddings")):
            nn.init.trunc_normal_(p, std=0.02)


#: the residual stream of the global transformer as its init lays it out: 21 slots (one per
#: offset class), the video and the audio event flags, a constant, the OFF marker, then the
#: time of each video and each audio token as sinusoids (periods in s, chosen so that the sum
#: of their cosines peaks at a time difference of 0 and stays below half of it beyond 0.2 s
#: across the +-7 s a video and an audio token can be apart). Every value is written with its
#: negative in the second half of the stream: each token then has mean 0, and the pre-norm
#: LayerNorms only scale it.
EV, EA, CONST, OFF_DIM, PE = 21, 22, 23, 24, 25
PERIODS = (0.563, 0.84, 2.809, 9.105)


def _put(w: torch.Tensor, row: int, value) -> None:
    """Write ``value`` into output ``row`` and its negative into the mirror row."""
    w[row] = value
    w[row + w.shape[0] // 2] = -torch.as_tensor(value) if torch.is_tensor(value) else -value


def _read(x_rows: int, dim: int, scale: float = 1.0) -> torch.Tensor:
    """An input row vector reading stream dim ``dim`` (half of it and minus half of its mirror)."""
    r = torch.zeros(x_rows)
    r[dim], r[dim + x_rows // 2] = 0.5 * scale, -0.5 * scale
    return r


def _event_projection(proj: nn.Linear, norm: nn.LayerNorm, head: nn.Linear, dim: int) -> None:
    """proj + norm -> the event flag in (0, 1) on ``dim``: the encoder's onset head gives a logit
    z (row ``dim``, beside a constant 1 on CONST); the LayerNorm of that mirrored pair is
    sqrt(d/2) z / sqrt(z^2 + 1), which gamma and beta map to (1 + z / sqrt(z^2 + 1)) / 2."""
    d = proj.out_features
    with torch.no_grad():
        proj.weight.zero_(), proj.bias.zero_(), norm.weight.zero_(), norm.bias.zero_()
        _put(proj.weight, dim, head.weight[0]), _put(proj.bias, dim, float(head.bias[0]))
        _put(proj.bias, CONST, 1.0)
        g = 0.5 / math.sqrt(d / 2)
        norm.weight[dim] = norm.weight[dim + d // 2] = g
        norm.bias[dim], norm.bias[dim + d // 2] = 0.5, -0.5


def _positions(d: int, amp_off: float) -> torch.Tensor:
    """The constant, the OFF marker and the time sinusoids of every token (video and audio
    apart), each mirrored."""
    t = token_times().float()
    n_v = sf.N_SEGMENTS * VIDEO_T
    pe = torch.zeros(len(t), d)
    pe[:, CONST], pe[0, OFF_DIM] = 1.0, amp_off
    for f, period in enumerate(PERIODS):
        w = 2 * math.pi / period
        for rows, base in ((slice(1, 1 + n_v), PE), (slice(2 + n_v, None), PE + 2 * len(PERIODS))):
            pe[rows, base + 2 * f] = torch.cos(w * t[rows])
            pe[rows, base + 2 * f + 1] = torch.sin(w * t[rows])
    return torch.cat((pe[:, :d // 2], -pe[:, :d // 2]), 1)


def _lag_heads(attn, d: int, hd: int, sharp: float) -> None:
    """First layer: head k is offset class k. A video token's query is its time moved by the
    class's offset (a rotation of the sinusoids), an audio token's key is its time, so the
    attention of a video token at t falls on the audio tokens at t - offset_k (a positive offset:
    the sound heard at t' belongs to video time t' + offset); its value is their event flag,
    written into slot k of the video token."""
    grid = sf.offset_grid()
    a_pe = PE + 2 * len(PERIODS)
    for k, off in enumerate(grid):
        for f, period in enumerate(PERIODS):
            w, q = 2 * math.pi / period, k * hd + 2 * f
            c, s = math.cos(w * off), math.sin(w * off)
            scale = sharp * math.sqrt(hd)
            attn.query.weight[q] = scale * (c * _read(d, PE + 2 * f) + s * _read(d, PE + 2 * f + 1))
            attn.query.weight[q + 1] = scale * (-s * _read(d, PE + 2 * f) + c * _read(d, PE + 2 * f + 1))
            attn.key.weight[q], attn.key.weight[q + 1] = _read(d, a_pe + 2 * f), _read(d, a_pe + 2 * f + 1)
        attn.value.weight[k * hd] = _read(d, EA)
        _put(attn.proj.weight[:, k * hd], k, 1.0)


def _pool_heads(attn, d: int, hd: int, sharp: float, amp_off: float) -> None:
    """Second layer: every head lets OFF attend to the video tokens holding an event and copies
    their slot k (the share of video events that have a sound at offset k) into OFF's slot k."""
    for k in range(sf.N_CLASSES):
        attn.query.weight[k * hd] = _read(d, OFF_DIM, sharp * math.sqrt(hd) / amp_off)
        attn.key.weight[k * hd] = _read(d, EV)
        attn.value.weight[k * hd] = _read(d, k)
        _put(attn.proj.weight[:, k * hd], k, 1.0)


def init_correlator(model: Synchformer, aux: nn.ModuleList, sharp: tuple[float, float] = (1.5, 8.0),
                    gain: float = 10.0) -> None:
    """The global stage starts as a correlator of the trained encoders' event flags over the
    21 offsets (a first layer of one head per offset, a second pooling them into OFF, MLPs off);
    training then fits every weight of it. Gains: ``sharp`` (attention of each layer) and
    ``gain`` (the offset head)."""
    cfg, tr = model.cfg, model.transformer
    d, hd, n_f = cfg.dim, cfg.dim // cfg.heads, len(PERIODS)
    assert cfg.heads == sf.N_CLASSES and hd >= 2 * n_f and PE + 4 * n_f <= d // 2
    amp_off = math.sqrt(n_f + 0.5)
    _event_projection(model.vproj, tr.vis_in_lnorm, aux[0], EV)
    _event_projection(model.aproj, tr.aud_in_lnorm, aux[1], EA)
    gamma = math.sqrt(2 * (1.5 + n_f) / d)      # LayerNorm of a typical token -> about itself
    with torch.no_grad():
        tr.OFF_tok.zero_(), tr.MOD_tok.zero_()
        tr.pos_emb_cfg.pos_emb.copy_(_positions(d, amp_off)[None])
        for blk in tr.blocks:
            for m in (blk.attn.query, blk.attn.key, blk.attn.value, blk.attn.proj):
                m.weight.zero_(), m.bias.zero_()
            blk.mlp[2].weight.zero_(), blk.mlp[2].bias.zero_()
            blk.ln1.weight.fill_(gamma), blk.ln2.weight.fill_(gamma)
        _lag_heads(tr.blocks[0].attn, d, hd, sharp[0])
        _pool_heads(tr.blocks[1].attn, d, hd, sharp[1], amp_off)
        tr.ln_f.weight.fill_(gamma)
        tr.off_head.weight.zero_(), tr.off_head.bias.zero_()
        for k in range(sf.N_CLASSES):
            tr.off_head.weight[k] = _read(d, k, gain)


def lr_at(step: int, steps: int, lr: float, warmup: int = 50) -> float:
    """Linear warmup, then cosine to a tenth."""
    if step < warmup:
        return lr * (step + 1) / warmup
    x = min((step - warmup) / max(steps - warmup, 1), 1.0)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * x)))


def heldout_contexts(per_class: int, workdir: Path, jitter: int = 0) -> tuple[torch.Tensor, ...]:
    """Validation contexts of every class from held-out mp4s (decoded as the certify path does):
    ``per_class`` at the class centre, and with ``jitter`` as many again moved off it by
    1 .. ``jitter`` frames (either way, labelled with the class)."""
    vids, auds, labels = [], [], []
    moves = [0] * per_class + [(-1) ** j * (1 + j % jitter) for j in range(per_class if jitter else 0)]
    for k, off in enumerate(sf.offset_grid()):
        for j, move in enumerate(moves):
            p = make_clip(workdir / "val.mp4", VAL_SEED_BASE + 100 * k + j, 5.0, float(off) + move / sf.FPS)
            frames, wave = sf.decode_context_media(p, 0.0, 5.0)
            v, a = sf.context(frames, wave, 0, size=SMALL.image)
            vids.append(v), auds.append(a), labels.append(k)
    return torch.stack(vids), torch.stack(auds), torch.tensor(labels)


def event_loss(model: Synchformer, aux: nn.ModuleList, batch: tuple) -> torch.Tensor:
    """The auxiliary event-onset losses on the encoders' tokens (linear heads used to train the
    encoders and to initialise the global stage; not in the model)."""
    v, a, _, vflag, aflag = batch
    vf, af = model.video_features(v), model.audio_features(a)
    pos = torch.tensor(5.0, device=vflag.device)
    return sum(F.binary_cross_entropy_with_logits(head(feats).squeeze(-1), flags, pos_weight=pos)
               for head, feats, flags in ((aux[0], vf, vflag), (aux[1], af, aflag)))


def train_encoders(args: argparse.Namespace, sources: list) -> tuple[Synchformer, nn.ModuleList]:
    """First stage: the video and audio encoders learn where the events are (onset losses)."""
    torch.manual_seed(args.seed)
    model = Synchformer(SMALL)
    init_small(model)
    model.to(args.device)
    aux = nn.ModuleList([nn.Linear(SMALL.video_dim, 1), nn.Linear(SMALL.audio_dim, 1)]).to(args.device)
    params = [*model.vfeat_extractor.parameters(), *model.afeat_extractor.parameters(), *aux.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    rng, events = np.random.default_rng(args.seed), [source_events(i) for i in range(len(sources))]
    t0, losses = time.monotonic(), []
    for step in range(args.steps):
        if time.monotonic() - t0 > 60 * args.minutes:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr)
        batch = [t.to(args.device) for t in sample_batch(sources, events, args.batch_size, rng)]
        loss = event_loss(model.train(), aux, batch)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            logging.info("encoder step %d event loss (last 50) %.3f (%.0f s)", step + 1,
                         np.mean(losses[-50:]), time.monotonic() - t0)
    model.trained_steps = step + 1
    return model.cpu().eval(), aux.cpu()


def segment_features(model: Synchformer, sources: list) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per source, the frozen encoders' tokens of the segment starting at every frame:
    video (n, 8, D) and audio (n, 6, D) (a context then only indexes them)."""
    first = np.arange(sf.SEG_FRAMES)
    out = []
    with torch.no_grad():
        for frames, mels in sources:
            segs = frames[np.arange(len(mels))[:, None] + first[None]]
            v = torch.cat([model.vfeat_extractor(c.transpose(1, 2)) for c in segs.split(128)])
            a = torch.cat([model.afeat_extractor(c[:, 0]) for c in mels.split(128)])
            out.append((v, a))
    return out


def global_batch(feats: list, batch: int, rng: np.random.Generator,
                 jitter: int = 0) -> tuple[torch.Tensor, ...]:
    """Contexts of random offset classes from the frozen encoders' per-frame tokens; the audio
    moved by a further ``jitter`` frames at most each way (uniform; labelled with the class
    it is nearest: 2 frames = 0.08 s < half a class), as a shift that is no class centre looks."""
    seg, step = sf.segment_starts(0), 5                      # 0.2 s = 5 frames per class
    assert 2 * jitter < step
    margin = MARGIN + jitter
    vs, auds, ys = [], [], []
    for _ in range(batch):
        v, a = feats[int(rng.integers(len(feats)))]
        k = int(rng.integers(sf.N_CLASSES))
        f0 = int(rng.integers(margin, len(a) - sf.CONTEXT_FRAMES - margin))
        a0 = f0 + step * (k - sf.N_CLASSES // 2) + int(rng.integers(-jitter, jitter + 1))
        vs.append(v[f0 + seg]), auds.append(a[a0 + seg]), ys.append(k)
    return torch.stack(vs), torch.stack(auds), torch.tensor(ys)


def val_accuracy(model: Synchformer, vval: tuple[torch.Tensor, ...]) -> tuple[float, float]:
    """(exact, within one class) of the global stage on the held-out contexts' frozen tokens."""
    with torch.no_grad():
        d = (model.eval().compare(vval[0], vval[1]).argmax(-1) - vval[2]).abs()
    model.train()
    return float((d == 0).float().mean()), float((d <= 1).float().mean())


def train_global(model: Synchformer, sources: list, val: tuple, args: argparse.Namespace) -> Synchformer:
    """Second stage: the encoders frozen, their tokens computed once; the projections and the
    global transformer trained on cross-entropy, the best held-out state kept (and saved)."""
    feats = segment_features(model, sources)
    with torch.no_grad():
        vval = (model.video_features(val[0]), model.audio_features(val[1]), val[2])
    params = [*model.vproj.parameters(), *model.aproj.parameters(), *model.transformer.parameters()]
    opt = torch.optim.AdamW(params, lr=args.global_lr, weight_decay=0.0)
    rng, losses, t0 = np.random.default_rng(args.seed), [], time.monotonic()
    best = (*val_accuracy(model, vval), 0)
    logging.info("global step 0 (the correlator init) held-out acc %.3f, within one class %.3f", *best[:2])
    best_state = copy.deepcopy(model.state_dict())
    for step in range(args.global_steps):
        if time.monotonic() - t0 > 60 * args.global_minutes:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.global_steps, args.global_lr)
        v, a, y = global_batch(feats, args.global_batch, rng, args.jitter)
        loss = F.cross_entropy(model.compare(v, a), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % args.val_every == 0:
            acc = val_accuracy(model, vval)
            logging.info("global step %d loss (last %d) %.3f held-out acc %.3f, within one class %.3f "
                         "(%.0f s)", step + 1, args.val_every, np.mean(losses[-args.val_every:]), *acc,
                         time.monotonic() - t0)
            if acc >= best[:2]:
                best, best_state = (*acc, step + 1), copy.deepcopy(model.state_dict())
                save_synchformer(model, args.out)
    model.load_state_dict(best_state)
    model.global_steps = best[2]
    return model.eval()


def confusion(model: Synchformer, per_class: int, workdir: Path) -> np.ndarray:
    """counts[true class, predicted class] over held-out 8-s clips through ``certify_clip``
    (two contexts per clip: the first and the last 4.8 s)."""
    grid = sf.offset_grid()
    counts = np.zeros((len(grid), len(grid)), dtype=int)
    for k, off in enumerate(grid):
        for j in range(per_class):
            p = make_clip(workdir / "eval.mp4", EVAL_SEED_BASE + 100 * k + j, CLIP_S, float(off))
            cert, _ = sf.certify_clip(model, p, 0.0, CLIP_S, CLIP_S)
            for col in ("sf_offset_first", "sf_offset_last"):
                counts[k, int(np.argmin(np.abs(grid - cert[col])))] += 1
    return counts


def offgrid(model: Synchformer, per_shift: int, workdir: Path) -> dict[str, list[float]]:
    """Held-out 8-s clips at ``OFFGRID_SHIFTS`` through ``certify_clip``: per shift, the
    predicted offsets of their contexts (each should be the class nearest the shift)."""
    out = {}
    for i, shift in enumerate(OFFGRID_SHIFTS):
        preds = []
        for j in range(per_shift):
            p = make_clip(workdir / "offgrid.mp4", OFFGRID_SEED_BASE + 100 * i + j, CLIP_S, shift)
            cert, _ = sf.certify_clip(model, p, 0.0, CLIP_S, CLIP_S)
            preds += [round(float(cert[c]), 1) for c in ("sf_offset_first", "sf_offset_last")]
        out[f"{shift:+.2f}"] = preds
    return out


def nearest_class(shift: float) -> float:
    """The class centre nearest a shift (s)."""
    grid = sf.offset_grid()
    return round(float(grid[int(np.argmin(np.abs(grid - shift)))]), 1)


def print_confusion(counts: np.ndarray) -> None:
    grid = sf.offset_grid()
    print("true \\ predicted offset class (s); held-out generated clips, 2 contexts each")
    print("      " + " ".join(f"{g:+5.1f}" for g in grid))
    for k, row in enumerate(counts):
        print(f"{grid[k]:+5.1f} " + " ".join(f"{c:5d}" if c else "    ." for c in row))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=1500, help="first stage (encoders): steps")
    p.add_argument("--minutes", type=float, default=20.0, help="first stage: wall-clock limit")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--global-steps", type=int, default=1000, help="second stage: steps")
    p.add_argument("--global-minutes", type=float, default=20.0, help="second stage: wall-clock limit")
    p.add_argument("--global-lr", type=float, default=3e-4)
    p.add_argument("--global-batch", type=int, default=32)
    p.add_argument("--sources", type=int, default=40, help="16-s training sources")
    p.add_argument("--val-per-class", type=int, default=2)
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--eval-per-class", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", help="keep the rendered training sources in this file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="where to train (held-out clips run on the CPU)")
    p.add_argument("--eval-only", action="store_true", help="only the confusion of --out's weights")
    p.add_argument("--init", help="start from this model: its encoders kept (no first stage), "
                                  "its global stage trained further")
    p.add_argument("--jitter", type=int, default=0,
                   help="second stage: audio moved off the class centre by up to this many frames")
    p.add_argument("--offgrid-per-shift", type=int, default=2, help="held-out clips per off-grid shift")
    return p.parse_args()


def trained(args: argparse.Namespace, work: Path) -> Synchformer:
    """Both stages; the model holds how many steps each took."""
    sources = render_sources(args.sources, work, args.cache)
    val = heldout_contexts(args.val_per_class, work, args.jitter)
    logging.info("%d sources, %d held-out validation contexts", len(sources), len(val[2]))
    if args.init:           # its encoders kept, its global stage trained further
        from filters.synchformer_model import load_synchformer
        model = load_synchformer(args.init)
        model.trained_steps = f"the encoders of {Path(args.init).name}"
    else:
        model, aux = train_encoders(args, sources)
        init_correlator(model, aux)
    model = train_global(model, sources, val, args)
    model.trained_steps = f"{model.trained_steps} encoder + {model.global_steps} global"
    return model


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        work, t0 = Path(d), time.monotonic()
        if args.eval_only:
            from filters.synchformer_model import load_synchformer
            model, t_train = load_synchformer(args.out), 0.0
            model.trained_steps = None
        else:
            model, t_train = trained(args, work), time.monotonic() - t0
            save_synchformer(model, args.out)
        counts = confusion(model, args.eval_per_class, work)
        off = offgrid(model, args.offgrid_per_shift, work)
    print_confusion(counts)
    report(model, counts, off, t_train, args.out)


def report(model: Synchformer, counts: np.ndarray, off: dict[str, list[float]], t_train: float,
           out: str) -> None:
    """One JSON line: exact and within-one-class accuracy, the five shifts' rows, the off-grid
    shifts' predictions and how many land on the nearest class."""
    grid = sf.offset_grid()
    rows = [int(np.argmin(np.abs(grid - s))) for s in EVAL_SHIFTS]
    near = sum(counts[k, max(k - 1, 0):k + 2].sum() for k in range(len(grid)))
    print(json.dumps({"steps": model.trained_steps, "train_s": round(t_train),
                      "params": sum(p.numel() for p in model.parameters()),
                      "heldout_contexts": int(counts.sum()),
                      "exact": round(float(np.trace(counts) / counts.sum()), 4),
                      "within_one_class": round(float(near / counts.sum()), 4),
                      "five_shifts_correct": {f"{s:+.1f}": int(counts[k, k]) for s, k in zip(EVAL_SHIFTS, rows)},
                      "five_shifts_rows": {f"{s:+.1f}": counts[k].tolist() for s, k in zip(EVAL_SHIFTS, rows)},
                      "offgrid_predicted": off,
                      "offgrid_nearest": f"{sum(p == nearest_class(float(s)) for s, ps in off.items() for p in ps)}"
                                         f"/{sum(len(ps) for ps in off.values())}",
                      "out": out}))


if __name__ == "__main__":
    main()
