"""Train a small Synchformer-shaped model on generated flash/beep events and print the
confusion of true vs predicted offset classes on held-out generated clips.

Status: the script runs end to end (rendering, training steps, held-out mp4s through the real
decode and certify path), but no checkpoint has been trained to convergence yet: on the shared
2-core machine under load ~17 one step of batch 8 took ~30 s, so no weights ship and no
confusion table is claimed. Run it where a few thousand steps fit.

The model is our ``filters.synchformer_model.Synchformer`` at reduced sizes (``SMALL``: widths
64, 2 blocks per encoder, frames reduced to 32 px by area averaging of the 224 crop): the same
14 segments of 16 frames, the same AST input, the same 21 offset classes over +-2 s. Training
data are ``curate synth``'s ``flash_click`` sources (a moving texture, a disc flashing at each
event, a beep at the same instant, gaps uniform in [0.5, 1.5] s), rendered in memory at 24 fps,
put on the 25-fps grid as ffmpeg's fps filter picks, short side 256 (bilinear), and cut into
contexts with the audio taken ``offset`` later (the authors' convention: the label is the
offset of the audio window). Held-out evaluation goes through the real path: mp4 files made
by ``synth.make_event_video`` with known audio delays, decoded and certified like a clip.

    .venv/bin/python benchmarks/train_synchformer_small.py --minutes 60 --out small_sf.pt

Prints per-step losses, then one JSON line with the figures; the checkpoint goes to --out.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from filters import synchformer as sf
from filters.synchformer_model import Synchformer, SynchformerConfig, save_synchformer

SMALL = SynchformerConfig(video_dim=64, video_depth=2, video_heads=4, audio_dim=64, audio_depth=2,
                          audio_heads=4, dim=64, layers=2, heads=4, image=32)
TRAIN_SEED_BASE = 930_000
EVAL_SEED_BASE = 960_000
#: the issue's known shifts (Synchformer offsets, s): the audio is early by the shift
EVAL_SHIFTS = (-1.0, -0.4, 0.0, 0.2, 0.8)
DURATION = 12.0
MARGIN = 50          # frames kept free before a context (2 s: the largest negative offset)


def _to_25fps(frames24: np.ndarray, fps_in: float, n_out: int) -> np.ndarray:
    """ffmpeg's fps filter: output slot n takes the last input frame with pts < (n + 0.5) / 25."""
    n = np.arange(n_out)
    idx = np.ceil((n + 0.5) / sf.FPS * fps_in - 1e-9).astype(int) - 1
    return frames24[np.clip(idx, 0, len(frames24) - 1)]


def _short_side_256(frames: np.ndarray) -> np.ndarray:
    h, w = frames.shape[1:3]
    s = sf.SHORT_SIDE / min(h, w)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def render_source(seed: int, duration: float = DURATION) -> tuple[torch.Tensor, np.ndarray]:
    """(normalised small frames [T25, 3, 32, 32], mono 16-kHz audio) of one in-sync source."""
    from curate.demo import synth
    spec = synth.make_spec(f"sf_{seed}", "", "flash_click", "train", seed=seed, duration=duration)
    rng = np.random.default_rng([spec.seed, 2])
    frames = np.stack(list(synth._frames(spec, rng)))
    audio = synth._audio(spec, rng, sr=sf.SAMPLE_RATE)[:, 0].astype(np.float32)
    frames = _short_side_256(_to_25fps(frames, spec.fps, int(duration * sf.FPS)))
    return sf.normalise_frames(frames, SMALL.image), audio


def sample_batch(sources: list, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """Contexts with a random offset class each: video from frame f0, audio from f0 + offset."""
    grid = sf.offset_grid()
    vids, auds, labels = [], [], []
    seg = sf.segment_starts(0)[:, None] + np.arange(sf.SEG_FRAMES)[None, :]
    for _ in range(batch):
        frames, audio = sources[rng.integers(len(sources))]
        k = int(rng.integers(len(grid)))
        f0 = int(rng.integers(MARGIN, len(frames) - sf.CONTEXT_FRAMES - MARGIN))
        a0 = sf.first_sample_of(f0) + int(round(float(grid[k]) * sf.SAMPLE_RATE))
        vids.append(frames[f0 + seg])
        auds.append(sf.audio_segments(audio, a0))
        labels.append(k)
    return torch.stack(vids), torch.stack(auds), torch.tensor(labels)


def train(minutes: float, steps: int, batch: int, lr: float, n_sources: int, seed: int) -> Synchformer:
    torch.manual_seed(seed)
    t0 = time.monotonic()
    sources = [render_source(TRAIN_SEED_BASE + i) for i in range(n_sources)]
    logging.info("rendered %d sources in %.0f s", n_sources, time.monotonic() - t0)
    model = Synchformer(SMALL)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    t0, step, acc = time.monotonic(), 0, []
    while step < steps and time.monotonic() - t0 < 60 * minutes:
        v, a, y = sample_batch(sources, batch, rng)
        logits = model.train()(v, a)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc.append(float((logits.argmax(-1) == y).float().mean()))
        step += 1
        if step % 25 == 0:
            logging.info("step %d loss %.3f acc(last 25) %.2f (%.0f s)", step, float(loss),
                         np.mean(acc[-25:]), time.monotonic() - t0)
    model.trained_steps = step
    return model.eval()


def evaluate(model: Synchformer, per_shift: int, workdir: Path) -> dict:
    """Confusion of true vs predicted offset class over held-out mp4s (the real decode path)."""
    from curate.demo import synth
    grid = sf.offset_grid()
    rows = {}
    for si, shift in enumerate(EVAL_SHIFTS):
        preds = []
        for j in range(per_shift):
            rng = np.random.default_rng(EVAL_SEED_BASE + 100 * si + j)
            events = np.cumsum(rng.uniform(0.5, 1.5, 20)) - 2.0
            path = workdir / f"eval_{si}_{j}.mp4"
            synth.make_event_video(path, 8.0, list(events), audio_offset=-shift, seed=int(rng.integers(1e6)))
            frames, wave = sf.decode_context_media(path, 0.0, 8.0)
            off = sf.predict(model, frames, wave, [40])[0]     # one context from 1.6 s
            preds.append(round(off.offset_s, 1))
        rows[f"{shift:+.1f}"] = preds
    k = {f"{shift:+.1f}": int(np.argmin(np.abs(grid - shift))) for shift in EVAL_SHIFTS}
    correct = {s: sum(abs(p - float(s)) < 1e-6 for p in ps) for s, ps in rows.items()}
    return {"predictions": rows, "true_class": k, "correct": correct}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=12.0)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--sources", type=int, default=32)
    p.add_argument("--eval-per-shift", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    model = train(args.minutes, args.steps, args.batch_size, args.lr, args.sources, args.seed)
    t_train = time.monotonic() - t0
    save_synchformer(model, args.out)
    with tempfile.TemporaryDirectory() as d:
        ev = evaluate(model, args.eval_per_shift, Path(d))
    print(json.dumps({"steps": model.trained_steps, "train_s": round(t_train), "config": SMALL.__dict__,
                      "params": sum(p.numel() for p in model.parameters()), **ev,
                      "out": args.out}))


if __name__ == "__main__":
    main()
