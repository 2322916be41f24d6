"""Benchmark (not a test): train the small sync classifier on the CPU on generated event
videos for a bounded wall time, then evaluate it with the 31-offset protocol on held-out
generated videos (chance 311/961 = 0.324 with edges, 11/31 = 0.355 in the middle).

    nice .venv/bin/python benchmarks/train_sync_small.py --out /tmp/sync_small.pt --minutes 10

Prints one JSON line with the figures; the checkpoint goes to --out.
"""
from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from sync_classifier.evaluate import evaluate
from sync_classifier.model import load_sync_classifier, small_config
from sync_classifier.train import TrainConfig, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="checkpoint path (*.pt)")
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-time cap")
    p.add_argument("--steps", type=int, default=100_000, help="step cap")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-videos", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    ckpt = train(TrainConfig(out=args.out, data=None, model=small_config(), steps=args.steps,
                             batch_size=args.batch_size, lr=args.lr, num_workers=args.workers,
                             max_minutes=args.minutes, ckpt_every=100, log_every=25,
                             resume=False))
    t_train = time.monotonic() - t0
    steps = torch.load(ckpt, map_location="cpu", weights_only=False)["step"]
    t1 = time.monotonic()
    res = evaluate(model=load_sync_classifier(ckpt), data=None, n_generated=args.eval_videos,
                   num_workers=0)
    res.pop("skipped", None)
    print(json.dumps({"checkpoint": str(ckpt), "train_wall_s": round(t_train, 1), "steps": steps,
                      "batch_size": args.batch_size, "lr": args.lr,
                      "eval_wall_s": round(time.monotonic() - t1, 1), **res}))


if __name__ == "__main__":
    main()
