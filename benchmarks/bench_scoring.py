"""Cost of scoring windows: naive (decode each window, every filter, no reuse) vs ours.

    python benchmarks/bench_scoring.py                 # generates 4 ten-second videos
    python benchmarks/bench_scoring.py DIR --videos 8  # or scores the *.mp4 in DIR

naive: every 3-s window (0.5-s stride) is decoded on its own with ``decode_clip`` (plus the
0.5 s either side that ImageBind's 2-s audio may need), and every filter runs on it with
fresh feature caches and no cascade.
ours: each segment is decoded once (``decode_grid``); ``score_segment`` shares CLIP /
ImageBind / sync features between overlapping windows and runs the cascade.
"ours, no cascade" separates the two savings; "ours, cheap gate only" gates on pixel_diff
and amplitude only (the random-weight models are score-only, as in the demo), so the model
filters run on every window that passes the cheap filters. Both sides use the same small
random-weight models (tiny CLIP, ``ImageBindScorer.random()``, ``small_config`` sync), so the
scores mean nothing; only the costs are compared. Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decoding.media import decode_clip, decode_grid, probe  # noqa: E402
from curate.ops.scoring import Scorers, score_segment
from filters import registry  # noqa: E402
from testkit.counting import Counting  # noqa: E402

# (video source, audio source): moving + tone, static + tone, moving + silence, busy + noise
RECIPES = [
    ("testsrc2=size=320x240:rate=25", "sine=frequency=440:sample_rate=44100"),
    ("color=c=gray:size=320x240:rate=25", "sine=frequency=300:sample_rate=44100"),
    ("testsrc2=size=320x240:rate=25", "anullsrc=r=44100:cl=mono"),
    ("mandelbrot=size=320x240:rate=25", "anoisesrc=a=0.2:r=44100"),
]


def make_corpus(folder: Path, n: int, seconds: float = 10.0) -> list[Path]:
    paths = []
    for i in range(n):
        v, a = RECIPES[i % len(RECIPES)]
        p = folder / f"bench{i:02d}.mp4"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", v, "-f", "lavfi",
                        "-i", a, "-t", str(seconds), "-pix_fmt", "yuv420p", "-c:v", "libx264",
                        "-c:a", "aac", "-shortest", str(p)], check=True)
        paths.append(p)
    return paths


def windows_of(path: Path, duration: float) -> list[dict]:
    out, s = [], 0.0
    while s + 3.0 <= duration + 1e-6:
        out.append({"window_id": f"{path.stem}_{int(round(s * 1000)):06d}", "source_id": path.stem,
                    "start": s, "end": s + 3.0})
        s += 0.5
    return out


def scorers(models: dict, counter: Counter) -> Scorers:
    return Scorers(clip=Counting(models["clip"], counter, "clip"),
                   imagebind=Counting(models["imagebind"], counter, "imagebind"),
                   sync=Counting(models["sync"], counter, "sync"))


def run_naive(paths, models, thr):
    c = Counter()
    sc = scorers(models, c)
    rows = []
    for p in paths:
        dur = probe(p)["duration"]
        for w in windows_of(p, dur):
            lo, hi = max(0.0, w["start"] - 0.5), min(dur, w["end"] + 0.5)
            g = decode_clip(p, lo, hi)
            rows += score_segment(g, [w], sc, thr, "dog barking", cascade=False)
    return rows, c


def run_ours(paths, models, thr, cascade=True, gate=None):
    c = Counter()
    sc = scorers(models, c)
    rows = []
    for p in paths:
        g = decode_grid(p)
        rows += score_segment(g, windows_of(p, g.duration), sc, thr, "dog barking",
                              cascade=cascade, gate=gate)
    return rows, c


def timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", help="folder of .mp4 files (default: generate a corpus)")
    ap.add_argument("--videos", type=int, default=4, help="videos to generate")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    import torch
    torch.set_num_threads(args.threads)
    from filters.clip_model import ClipScorer
    from filters.imagebind_scorer import ImageBindScorer
    from filters.sync import SyncScorer
    from sync_classifier.model import small_config
    models = {"clip": ClipScorer.random(seed=0, device=args.device),
              "imagebind": ImageBindScorer.random(seed=0, device=args.device),
              "sync": SyncScorer.random(seed=0, config=small_config(), device=args.device)}
    thr = registry.default_thresholds()

    with tempfile.TemporaryDirectory() as tmp:
        paths = (sorted(Path(args.folder).glob("*.mp4")) if args.folder
                 else make_corpus(Path(tmp), args.videos))
        seconds = sum(probe(p)["duration"] for p in paths)
        run_ours(paths[:1], models, thr)  # warm-up: first-call allocations, tokenizer
        t_naive, (rows_n, c_n) = timed(run_naive, paths, models, thr)
        t_flat, (rows_f, c_f) = timed(run_ours, paths, models, thr, cascade=False)
        t_cheap, (rows_c, c_c) = timed(run_ours, paths, models, thr, gate={"pixel_diff", "amplitude"})
        t_ours, (rows_o, c_o) = timed(run_ours, paths, models, thr)

    n = len(rows_n)
    print(f"corpus: {len(paths)} videos, {seconds:.1f} s, {n} windows (3 s, stride 0.5 s); "
          f"device {args.device}, torch threads {args.threads}")
    print(f"{'mode':<22}{'seconds':>9}{'ms/window':>11}{'speed-up':>10}  model inputs")
    for name, t, c in (("naive", t_naive, c_n), ("ours, no cascade", t_flat, c_f),
                       ("ours, cheap gate only", t_cheap, c_c), ("ours (cascade+cache)", t_ours, c_o)):
        inputs = ", ".join(f"{k}={v}" for k, v in sorted(c.items()))
        print(f"{name:<22}{t:9.2f}{1000 * t / n:11.1f}{t_naive / t:9.1f}x  {inputs}")
    for name, rows in (("cheap gate only", rows_c), ("cascade+cache", rows_o)):
        print(f"ours, {name}: sync column outcomes:",
              dict(Counter(r["sync_note"] or "scored" for r in rows)))
    same = sum(all(a[c] == b[c] for c in ("pixel_diff", "amplitude", "clip_diff"))
               for a, b in zip(rows_n, rows_f))
    print(f"naive vs ours (no cascade): {same}/{n} windows with identical pixel/amplitude/clip scores")


if __name__ == "__main__":
    main()
