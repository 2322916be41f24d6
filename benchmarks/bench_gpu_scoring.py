"""GPU scoring at real model sizes: per-model throughput, decode fps, the score stage through
the Ray actor pools, GPU utilisation and memory, and the projected GPU-hours for VGGSS.

    python benchmarks/bench_gpu_scoring.py                    # on a GPU machine (device tool)
    python benchmarks/bench_gpu_scoring.py --small --sources 4  # CPU smoke run of the script

Real sizes: ImageBind-huge, CLIP ViT-B/32 and the full sync classifier (released layout),
each with random weights written to local checkpoint files and loaded through the same
options a user passes (`--imagebind-checkpoint`, `--clip-checkpoint`, `--sync-checkpoint`),
so the loading path is the real one. Media: generated 640x360 10-s videos (ffmpeg lavfi,
four kinds of motion and sound). The stage runs with no gating filter, so every model scores
every window (the cascade would skip work on rejected windows: this is the upper bound).
`--small` uses the tiny random models and no checkpoint files (to check the script on CPU).
The projection scales the measured windows/s to VGGSS's 1.10M windows (over 105k shots).
This script needs Ray and ffmpeg; the lent GPU machine has neither, and
``benchmarks/device_check.py`` is the check sized for it. Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_flops import VGGSS_WINDOWS  # noqa: E402  (1.10M windows over 105k shots)
from device_check import GpuMonitor  # noqa: E402  (the one nvidia-smi sampler)

RECIPES = [
    ("testsrc2=size=640x360:rate=25", "sine=frequency=440:sample_rate=44100"),
    ("mandelbrot=size=640x360:rate=25", "anoisesrc=a=0.2:r=44100"),
    ("life=size=640x360:rate=25:mold=10:ratio=0.5", "sine=frequency=300:sample_rate=44100"),
    ("cellauto=size=640x360:rate=25", "anoisesrc=a=0.1:r=44100:c=pink"),
]


def make_media(folder: Path, n: int, seconds: float = 10.0) -> Path:
    """n videos + a generic sources CSV with local paths; returns the CSV."""
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    lines = ["id,path,start,end,label,split"]
    for i in range(n):
        v, a = RECIPES[i % len(RECIPES)]
        vid = f"gpu{i:04d}"
        p = folder / "videos" / f"{vid}.mp4"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", v, "-f", "lavfi",
                        "-i", a, "-t", str(seconds), "-pix_fmt", "yuv420p", "-c:v", "libx264",
                        "-preset", "veryfast", "-c:a", "aac", "-shortest", str(p)], check=True)
        lines.append(f"{vid},{p},0,{int(seconds)},dog barking,{'test' if i % 10 == 0 else 'train'}")
    csv = folder / "sources.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def write_weights(folder: Path) -> dict[str, str]:
    """Random real-size weights in the files users hand us."""
    from filters.imagebind_model import ImageBind
    from filters.torch_compat import import_open_clip
    from sync_classifier.model import SyncClassifier, SyncConfig, save_checkpoint

    torch.manual_seed(0)
    paths = {"imagebind_checkpoint": str(folder / "imagebind_huge_random.pth"),
             "clip_checkpoint": str(folder / "clip_vitb32_random.pt"),
             "sync_checkpoint": str(folder / "sync_full_random.pt")}
    torch.save(ImageBind().state_dict(), paths["imagebind_checkpoint"])
    clip = import_open_clip().create_model("ViT-B-32", pretrained=None)
    torch.save({"state_dict": clip.state_dict()}, paths["clip_checkpoint"])
    save_checkpoint(paths["sync_checkpoint"], SyncClassifier(SyncConfig()))
    return paths


def per_model(device: str, batch: int, weights: dict[str, str] | None) -> list[str]:
    """Forward throughput of each model alone at ``batch`` inputs per call (``weights`` None:
    the tiny random models)."""
    import numpy as np
    from curate.config.models import build_scorers

    names = (("clip_diff", "clip"), ("imagebind", "imagebind"), ("sync", "sync"))
    models = {f: {"model": m, "weights": (weights or {}).get(f"{m}_checkpoint"), "random": weights is None}
              for f, m in names}
    sc = build_scorers(models, {"clip_model": "ViT-B-32" if weights else "tiny"}, device)
    out = []
    frames = np.random.default_rng(0).integers(0, 255, (batch, 224, 224, 3), dtype=np.uint8)
    waves = np.random.default_rng(1).standard_normal((batch, 32000)).astype(np.float32) * 0.1
    clips = np.random.default_rng(2).integers(0, 255, (batch, 12, 224, 224, 3), dtype=np.uint8)
    tests = [("clip images", lambda s: s.clip.embed(frames)),
             ("imagebind images", lambda s: s.imagebind.embed_images(frames)),
             ("imagebind audio", lambda s: s.imagebind.embed_audio(waves)),
             ("sync (video+audio clips, pairs)", lambda s: s.sync.phi_pairs(
                 {i: waves[i] for i in range(batch)}, {i: clips[i] for i in range(batch)},
                 [(i, i) for i in range(batch)]))]
    for name, fn in tests:
        fn(sc)                          # warm-up (cudnn autotune, allocations)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        reps = 3
        for _ in range(reps):
            fn(sc)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t) / reps
        mem = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device == "cuda" else ""
        out.append(f"  {name:<34}{batch / dt:9.1f} inputs/s (batch {batch}){mem}")
    return out


def decode_fps(csv: Path, limit: int = 8) -> str:
    from decoding.media import decode_grid

    paths = [line.split(",")[1] for line in csv.read_text().splitlines()[1:limit + 1]]
    t, frames = time.perf_counter(), 0
    for p in paths:
        frames += len(decode_grid(p).frames)
    dt = time.perf_counter() - t
    return (f"decode (one CPU process): {frames / dt:.0f} grid frames/s = "
            f"{len(paths) * 10.0 / dt:.1f} source seconds/s")


def _args(argv=None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=64)
    ap.add_argument("--workers", type=int, default=8, help="decode tasks / CPU actors")
    ap.add_argument("--batch", type=int, default=64, help="inputs per call in the per-model test")
    ap.add_argument("--score-batch-size", type=int, default=4, help="segments per actor call")
    ap.add_argument("--actors-per-gpu", type=int, default=2)
    ap.add_argument("--small", action="store_true", help="tiny random models (CPU smoke run)")
    ap.add_argument("--keep", type=Path)
    return ap.parse_args(argv)


def _recipe(args) -> dict:
    """The demo recipe, nothing gating, the engine options measured."""
    from curate.config.recipes import get_recipe
    recipe = get_recipe("demo")
    recipe.update(name="gpu-bench", gate=[], allow_random_weights=args.small)
    recipe["engine"] = {**recipe["engine"], "score_batch_size": args.score_batch_size,
                        "score_actors_per_gpu": args.actors_per_gpu}
    if not args.small:
        recipe["models"] = {"clip_model": "ViT-B-32", "clip_pretrained": "openai"}
    return recipe


def main(argv=None) -> None:
    args = _args(argv)
    logging.basicConfig(level=logging.WARNING)

    from curate.config.run_state import new_run
    from curate.build import stage_value
    from curate.execution.make import make_executor

    device = "cuda" if torch.cuda.is_available() else "cpu"
    root = args.keep or Path(tempfile.mkdtemp(prefix="curate-gpu-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"device: {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'}; "
          f"models: {'tiny random' if args.small else 'ImageBind-huge, CLIP ViT-B/32, full sync (random weights)'}")
    options = {} if args.small else write_weights(root)
    print("per-model forward throughput:")
    print("\n".join(per_model(device, min(args.batch, 8) if args.small else args.batch,
                              None if args.small else options)))
    csv = make_media(root / "media", args.sources)
    print(decode_fps(csv))

    out = root / "run"
    run = new_run(out, _recipe(args), {**options, "allow_random_weights": args.small or None})
    ex = make_executor("ray", workers=args.workers)
    stage_value("sources", out, run, sources=csv)
    stage_value("download", out, run, ex)
    windows = stage_value("split", out, run, ex)[1]
    n_win = windows.num_rows
    with GpuMonitor(period=0.5) as mon:
        t = time.perf_counter()
        stage_value("score", out, run, ex)
        dt = time.perf_counter() - t
    ex.shutdown()
    per_seg = n_win / args.sources
    print(f"score stage (Ray actor pools, {args.actors_per_gpu} actors/GPU, {args.score_batch_size} "
          f"segments/call, no gating): {n_win} windows of {args.sources} segments in {dt:.1f} s "
          f"= {n_win / dt:.1f} windows/s (model loads included)")
    print(mon.summary())
    print(f"projection, VGGSS ({VGGSS_WINDOWS / 1e6:.2f}M windows; this corpus has {per_seg:.1f} windows "
          f"per 10-s segment): {VGGSS_WINDOWS / (n_win / dt) / 3600:.1f} hours on this "
          f"{'GPU' if device == 'cuda' else 'CPU'} (upper bound: every model on every window)")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
