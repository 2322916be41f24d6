"""Train the small sync classifier on the CPU, and (``--demo``) produce the checkpoint the demo
ships (``sync_classifier/weights/sync_demo_small.pt``).

Two data recipes:

* default: ``sync_classifier.synthetic`` event grids in memory (flash + noise click), then the
  31-offset protocol on held-out generated videos (chance 311/961 = 0.324 with edges).
* ``--demo``: the demo's own media kind, rendered by ``curate.synth.make_event_video`` (a
  moving texture, a disc flashing for 3 frames at 24 fps, a beep at the same instant), with
  event gaps uniform in [0.5, 1.5] s as ``curate synth`` draws them, in sync, from seeds
  ``DEMO_SEED_BASE + i`` (the demo corpus uses seed 0, so no demo video is trained on). The
  videos are written to ``--media`` and trained on through the mp4 path (decode, shifted
  clips, hard negatives), exactly as ``curate sync train --data`` would.

The shipped checkpoint was produced with:

    nice .venv/bin/python benchmarks/train_sync_small.py --demo --seed 0 --minutes 14 \\
        --out sync_classifier/weights/sync_demo_small.pt

Prints one JSON line with the figures; the checkpoint goes to --out.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import torch

from sync_classifier.evaluate import evaluate
from sync_classifier.model import load_sync_classifier, parameter_counts, small_config
from sync_classifier.train import TrainConfig, train

DEMO_SEED_BASE = 910_000
DEMO_VIDEOS = 40
DEMO_DURATION = 10.0


def demo_media(folder: Path, n: int = DEMO_VIDEOS, seed: int = 0,
               duration: float = DEMO_DURATION) -> list[Path]:
    """In-sync flash/beep videos like the demo's ``flash_click`` kind (rendered once)."""
    from curate.synth import make_event_video

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"demo_sync_{seed}_{i:03d}.mp4"
        paths.append(path)
        if path.exists():
            continue
        rng = random.Random(DEMO_SEED_BASE + 1000 * seed + i)
        t, events = rng.uniform(0.0, 1.5), []
        while t < duration:
            events.append(t)
            t += rng.uniform(0.5, 1.5)
        make_event_video(path, duration, events, seed=DEMO_SEED_BASE + 1000 * seed + i)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="checkpoint path (*.pt)")
    p.add_argument("--demo", action="store_true", help="the demo recipe (curate.synth media)")
    p.add_argument("--media", default="/tmp/curate_sync_demo_media", help="--demo: video folder")
    p.add_argument("--videos", type=int, default=DEMO_VIDEOS, help="--demo: training videos")
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-time cap")
    p.add_argument("--steps", type=int, default=100_000, help="step cap")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=0, help="easy-negative stage-1 steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-videos", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    data = None
    t0 = time.monotonic()
    if args.demo:
        data = Path(args.media)
        demo_media(data, args.videos, args.seed)
    t_media = time.monotonic() - t0
    t0 = time.monotonic()
    ckpt = train(TrainConfig(out=Path(args.out), data=data, model=small_config(), steps=args.steps,
                             batch_size=args.batch_size, lr=args.lr, num_workers=args.workers,
                             max_minutes=args.minutes, ckpt_every=100, log_every=25,
                             warmup_steps=args.warmup_steps, seed=args.seed, resume=False))
    t_train = time.monotonic() - t0
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    if args.demo:
        # the shipped file holds weights and config only (no optimizer, no history)
        state["extra"] = {"recipe": "benchmarks/train_sync_small.py --demo", "seed": args.seed,
                          "videos": args.videos, "minutes": args.minutes, "lr": args.lr,
                          "batch_size": args.batch_size, "steps": state["step"]}
        from manifests.atomic import atomic_path
        with atomic_path(ckpt) as tmp:
            torch.save(state, tmp)
    model = load_sync_classifier(ckpt)
    t1 = time.monotonic()
    res = evaluate(model=model, data=None, n_generated=args.eval_videos, num_workers=0)
    res.pop("skipped", None)
    print(json.dumps({"checkpoint": str(ckpt), "media_s": round(t_media, 1),
                      "train_wall_s": round(t_train, 1), "steps": state["step"],
                      "batch_size": args.batch_size, "lr": args.lr,
                      "params": parameter_counts(model), "bytes": Path(ckpt).stat().st_size,
                      "eval_wall_s": round(time.monotonic() - t1, 1), **res}))


if __name__ == "__main__":
    main()
