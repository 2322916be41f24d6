"""Naive vs ours at real model sizes: model inputs per mode weighted by GFLOPs per input.

    python benchmarks/bench_flops.py                 # 4 generated ten-second videos
    python benchmarks/bench_flops.py --videos 8

``bench_scoring.py`` times both modes with tiny random models, where decoding dominates and
the ratio says little about a real run. This script keeps its input counts (how many frames
CLIP sees, how many images / audio clips / texts ImageBind sees, how many video clips, audio
clips and pairs the sync classifier sees) and weights each by the forward cost of the real
architecture at its real input size: ImageBind-huge, CLIP ViT-B/32 and the full sync
classifier. GFLOPs per input are measured with ``torch.utils.flop_counter.FlopCounterMode``
on models built on the ``meta`` device (no weights are allocated, nothing is downloaded).
A multiply-add counts as 2 FLOPs. Decode cost is left out: it is the same CPU work in both
modes per decoded second and ours decodes each segment once. Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402


def _gflops(fn, *args) -> float:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        fn(*args)
    return fc.get_total_flops() / 1e9


def imagebind_costs() -> dict[str, float]:
    from filters.imagebind_model import ImageBind

    with torch.device("meta"):
        m = ImageBind().eval()
        image = torch.zeros(1, 3, 224, 224)
        mel = torch.zeros(1, 1, 128, 204)
        tokens = torch.zeros(1, 77, dtype=torch.long)
    return {"imagebind.embed_images": _gflops(m.embed_vision, image),
            "imagebind.embed_audio": _gflops(m.embed_audio, mel),
            "imagebind.embed_text": _gflops(m.embed_text, tokens)}


def clip_costs(model: str = "ViT-B-32") -> dict[str, float]:
    from filters.torch_compat import import_open_clip

    open_clip = import_open_clip()
    with torch.device("meta"):
        m = open_clip.create_model(model, pretrained=None, device="meta").eval()
        image = torch.zeros(1, 3, 224, 224)
    return {"clip.embed": _gflops(m.encode_image, image)}


def sync_costs() -> dict[str, float]:
    from sync_classifier import model as sm

    cfg = sm.SyncConfig()   # the default configuration is the full model
    with torch.device("meta"):
        m = sm.SyncClassifier(cfg).eval()
        video = torch.zeros(1, 3, 12, 224, 224)
        mel = torch.zeros(1, 1, 128, 204)
        a = m.encode_audio(mel)
        v = m.encode_video(video)
    return {"sync.video_clips": _gflops(m.encode_video, video),
            "sync.audio_clips": _gflops(m.encode_audio, mel),
            "sync.pairs": _gflops(m.head, a, v)}


def weighted(counts: Counter, cost: dict[str, float]) -> tuple[float, dict[str, float]]:
    per = {k: counts.get(k, 0) * g for k, g in cost.items()}
    unknown = set(counts) - set(cost)
    if unknown:
        raise KeyError(f"no FLOP figure for model inputs {sorted(unknown)}")
    return sum(per.values()), per


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=4, help="generated ten-second videos")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    cost = {**imagebind_costs(), **clip_costs(), **sync_costs()}
    print("GFLOPs per model input (real architectures, FlopCounterMode on meta tensors):")
    for k, g in sorted(cost.items()):
        print(f"  {k:<24}{g:10.2f}")

    import bench_scoring as bs
    from filters import registry
    from filters.clip_model import ClipScorer
    from filters.imagebind import ImageBindScorer
    from filters.sync import SyncScorer
    from sync_classifier.model import small_config

    torch.set_num_threads(1)
    models = {"clip": ClipScorer.random(seed=0), "imagebind": ImageBindScorer.random(seed=0),
              "sync": SyncScorer.random(seed=0, config=small_config())}
    thr = registry.default_thresholds()
    with tempfile.TemporaryDirectory() as tmp:
        paths = bs.make_corpus(Path(tmp), args.videos)
        modes = {"naive": bs.run_naive(paths, models, thr)[1],
                 "ours, no cascade": bs.run_ours(paths, models, thr, cascade=False)[1],
                 "ours, cheap gate only": bs.run_ours(paths, models, thr, gate={"pixel_diff", "amplitude"})[1],
                 "ours (cascade+cache)": bs.run_ours(paths, models, thr)[1]}
    base, _ = weighted(modes["naive"], cost)
    print(f"\ncorpus: {args.videos} generated 10-s videos; counts from random small models, "
          "weighted by the real models' GFLOPs")
    print(f"{'mode':<24}{'TFLOPs':>9}{'naive/ours':>12}  model inputs (GFLOPs share)")
    for name, counts in modes.items():
        total, per = weighted(counts, cost)
        shares = ", ".join(f"{k}={counts.get(k, 0)} ({100 * v / total:.0f}%)" for k, v in sorted(per.items()) if v)
        print(f"{name:<24}{total / 1e3:9.2f}{base / total:11.2f}x  {shares}")


if __name__ == "__main__":
    main()
