"""Score small, fetch full: how far scores and selections move when a source is scored at
240p / 360p instead of 720p, and the bytes and decode CPU that saves.

    python benchmarks/bench_renditions.py                # 6 generated ten-second sources
    python benchmarks/bench_renditions.py --videos 12 --no-models

Each source is generated once at 1280x720 (30 fps; flashes and beeps at varied times, some
with audio offsets, some nearly static) and encoded, as a site's rendition ladder does, at
720p (1280x720), 360p (640x360) and 240p (426x240) with the same H.264 settings. Every
rendition is decoded onto the 224-px grid (``decode_grid``: timed with process CPU time) and
its 3-s windows (0.5-s stride) scored by every filter, no cascade. Models are the small
*random-weight* ones of benchmarks/bench_scoring.py (tiny CLIP, ImageBindScorer.random(),
small sync): their scores mean nothing as judgements, but they show how much the model inputs
change with the rendition. Selections are compared on the model-free gate (pixel_diff and
amplitude with their declared thresholds), the only gate whose decisions mean something here.
Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.ops.scoring import Scorers, SegmentJob, score_segments
from curate.demo.synth import make_event_video
from curate.ops.windows import make_windows
from decoding.media import decode_grid, probe  # noqa: E402
from filters import registry  # noqa: E402
from manifests.schemas import ALL_SCORES  # noqa: E402

LADDER = {"720p": (1280, 720), "360p": (640, 360), "240p": (426, 240)}
GATE = ("pixel_diff", "amplitude")


def make_sources(root: Path, n: int, duration: float = 10.0) -> list[dict[str, Path]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        master = root / f"m{i:02d}.mp4"
        k = int(rng.integers(0, 9)) if i % 4 != 3 else 1      # every 4th nearly static
        events = sorted(rng.uniform(0.3, duration - 0.3, size=max(k, 1)).round(2).tolist())
        make_event_video(master, duration=duration, event_times=events, fps=30,
                         size=LADDER["720p"], seed=i, audio_offset=0.3 if i % 3 == 2 else 0.0,
                         kind="drum" if i % 2 else "flash_click")
        files = {}
        for name, (w, h) in LADDER.items():
            f = root / f"s{i:02d}_{name}.mp4"
            subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(master),
                            "-vf", f"scale={w}:{h}", "-c:v", "libx264", "-preset", "veryfast",
                            "-crf", "23", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
                            str(f)], check=True)
            files[name] = f
        out.append(files)
    return out


def windows_of(sid: str, duration: float) -> list[dict]:
    shot = [{"shot_id": f"{sid}_shot000", "source_id": sid, "shot_index": 0, "start": 0.0,
             "end": duration, "status": "ok", "error": None}]
    return make_windows(shot, None, None)


def score(path: Path, sid: str, scorers: Scorers) -> tuple[list[dict], float]:
    t0 = time.process_time()
    grid = decode_grid(path)
    cpu = time.process_time() - t0
    rows = score_segments([SegmentJob(grid, windows_of(sid, probe(path)["duration"]), "dog barking")],
                          scorers, registry.default_thresholds(), cascade=False)[0]
    return rows, cpu


def keep(row: dict, thr: dict) -> bool:
    return all(registry.passes(n, row, thr) is True for n in GATE)


def _args(argv=None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--no-models", action="store_true", help="model-free filters only")
    return ap.parse_args(argv)


def _scorers(no_models: bool) -> Scorers:
    """Small random models (none with ``--no-models``)."""
    if no_models:
        return Scorers()
    from filters.clip_model import ClipScorer
    from filters.imagebind_scorer import ImageBindScorer
    from filters.sync import SyncScorer
    from sync_classifier.model import small_config
    return Scorers(clip=ClipScorer.random(seed=0), imagebind=ImageBindScorer.random(seed=0),
                   sync=SyncScorer.random(seed=0, config=small_config()))


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    logging.basicConfig(level=logging.ERROR)
    import torch
    torch.set_num_threads(1)
    scorers = _scorers(args.no_models)
    thr = registry.default_thresholds()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        sources = make_sources(Path(tmp), args.videos)
        print(f"{args.videos} sources x 10 s generated at {'/'.join(LADDER)} in {time.monotonic() - t0:.0f} s")
        score(sources[0]["240p"], "warm", scorers)       # first-call allocations
        res = {name: {"rows": [], "cpu": 0.0, "bytes": 0} for name in LADDER}
        for i, files in enumerate(sources):
            for name, f in files.items():
                rows, cpu = score(f, f"s{i:02d}_000000_000010", scorers)
                res[name]["rows"] += rows
                res[name]["cpu"] += cpu
                res[name]["bytes"] += f.stat().st_size
    ref = res["720p"]
    n_win = len(ref["rows"])
    print(f"{n_win} windows per rendition; decode = decode_grid (224-px grid, 12 fps, 16 kHz)")
    print(f"{'rendition':<10}{'bytes':>12}{'vs 720p':>9}{'decode CPU s':>14}{'vs 720p':>9}"
          f"{'CPU ms / src s':>16}")
    secs = 10.0 * args.videos
    for name in LADDER:
        r = res[name]
        print(f"{name:<10}{r['bytes']:>12,}{r['bytes'] / ref['bytes']:>9.2f}{r['cpu']:>14.2f}"
              f"{r['cpu'] / ref['cpu']:>9.2f}{1000 * r['cpu'] / secs:>16.1f}")
    cols = [c for c in ALL_SCORES if any(row.get(c) is not None for row in ref["rows"])]
    keep_ref = [keep(row, thr) for row in ref["rows"]]
    for name in ("360p", "240p"):
        rows = res[name]["rows"]
        print(f"\n{name} vs 720p, per score: max |diff|, mean |diff|, spread of the score at 720p (p95 - p5)")
        for c in cols:
            a = np.array([r.get(c) for r in rows], dtype=float)
            b = np.array([r.get(c) for r in ref["rows"]], dtype=float)
            ok = ~np.isnan(a) & ~np.isnan(b)
            d = np.abs(a[ok] - b[ok])
            spread = np.percentile(b[ok], 95) - np.percentile(b[ok], 5) if ok.any() else float("nan")
            print(f"  {c:<14} max {d.max():.4f}  mean {d.mean():.4f}  spread {spread:.4f}"
                  f"{'  (random-weight model)' if c not in ('pixel_diff', 'amplitude') else ''}")
        k = [keep(row, thr) for row in rows]
        flips = sum(x != y for x, y in zip(k, keep_ref))
        print(f"  gate {'+'.join(GATE)}: {sum(k)} kept vs {sum(keep_ref)} at 720p; "
              f"{flips} of {n_win} windows decided differently")


if __name__ == "__main__":
    main()
