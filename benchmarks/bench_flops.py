"""Scoring cost at VGGSS's shape: model inputs counted through the real score path, weighted
by the real models' GFLOPs per input; naive / feature reuse / cascade per cascade order.

    python benchmarks/bench_flops.py                      # 400 segments, the stated pass rates
    python benchmarks/bench_flops.py --segments 1000 --correlation 0.8 \\
        --pass pixel_diff=0.7 amplitude=0.95 clip_diff=0.55 sync=0.625 imagebind=0.40

Corpus: ``--segments`` 10-s segments cut into shots so that windows per shot match VGGSS
(1.10M windows over 105k shots = 10.48, ``--windows-per-shot``): a share of the segments is
one shot, the others have one or two cuts at random times (shots under 3 s hold no window);
the share is found by bisection on the generated corpus and the achieved shape is printed.
Windows are made by the split stage's own ``curate.ops.windows.make_windows`` (3 s, stride 0.5 s,
inside shots), and scored by ``curate.ops.scoring.score_segments`` four segments per call (the
scoring actor's call, ``engine.score_batch_size``), with counting stand-ins for the models:
every frame, 2-s audio, text, video clip and (audio, video) pair that reaches a model is
counted, through the real feature caches and the real cascade.

Pass rates are **stated inputs**, not measurements: the cascade asks ``registry.passes``
whether a window passes a filter, and here that answer is a deterministic draw with the stated
rate per filter (``--pass``); with ``--correlation`` c, a window takes its shot's draw with
probability c (static shots, silent segments and off-sync videos fail whole shots), else its
own. The defaults are issue 16's plausible rates whose product is the AVSync15 supplement's
9.15% kept. Each filter's draw is independent of the order, so every order keeps the same
windows (checked and printed).

Modes: naive = every window scored alone, every filter, no reuse (what a per-window script
does); reuse = ours without the cascade (features shared between the windows of a segment);
cascade = ours with every filter gating, per order. GFLOPs per input are measured with
``torch.utils.flop_counter.FlopCounterMode`` on ImageBind-huge, CLIP ViT-B/32 and the full
sync classifier built on the ``meta`` device (no weights allocated, nothing downloaded); a
multiply-add counts 2 FLOPs. Decoding is not counted (each segment is decoded once in ours).
Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

#: issue 16's plausible per-filter pass rates (product 9.15%, the supplement's kept share)
DEFAULT_PASS = {"pixel_diff": 0.70, "amplitude": 0.95, "clip_diff": 0.55, "imagebind": 0.40,
                "sync": 0.625}
VGGSS_WINDOWS = 1_100_000
VGGSS_SHOTS = 105_000
SEGMENT_SECONDS = 10.0


# ---------------------------------------------------------------- GFLOPs per model input

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


def synchformer_costs() -> dict[str, float]:
    """Synchformer per 4.8-s context (14 segments): its encoders and the offset transformer."""
    from filters.synchformer_model import Synchformer

    with torch.device("meta"):
        m = Synchformer().eval()
        video = torch.zeros(1, 14, 16, 3, 224, 224)
        spec = torch.zeros(1, 14, 1, 128, 66)
        v, a = m.video_features(video), m.audio_features(spec)
    return {"synchformer.video": _gflops(m.video_features, video),
            "synchformer.audio": _gflops(m.audio_features, spec),
            "synchformer.offset_head": _gflops(m.compare, v, a)}


def all_costs() -> dict[str, float]:
    return {**imagebind_costs(), **clip_costs(), **sync_costs()}


def weighted(counts: Counter, cost: dict[str, float]) -> tuple[float, dict[str, float]]:
    unknown = set(counts) - set(cost)
    if unknown:
        raise KeyError(f"no FLOP figure for model inputs {sorted(unknown)}")
    per = {k: counts.get(k, 0) * g for k, g in cost.items()}
    return sum(per.values()), per


# ---------------------------------------------------------------- the corpus at VGGSS's shape

def _shots(rng: np.random.Generator, one_shot_share: float) -> list[tuple[float, float]]:
    if rng.random() < one_shot_share:
        return [(0.0, SEGMENT_SECONDS)]
    cuts = sorted(np.round(rng.uniform(0.5, SEGMENT_SECONDS - 0.5, 1 + (rng.random() < 0.3)), 1))
    edges = [0.0, *map(float, cuts), SEGMENT_SECONDS]
    return list(zip(edges[:-1], edges[1:]))


def _windows(sid: str, shots: list[tuple[float, float]]) -> list[dict]:
    from curate.ops.windows import make_windows

    rows = [{"shot_id": f"{sid}_shot{k:03d}", "source_id": sid, "shot_index": k, "start": s,
             "end": e, "status": "ok"} for k, (s, e) in enumerate(shots)]
    return [{"window_id": w["window_id"], "shot_id": w["shot_id"], "start": w["start"], "end": w["end"]}
            for w in make_windows(rows, "c", "train")]


def vggss_corpus(n: int, windows_per_shot: float, seed: int = 0) -> tuple[list[list[dict]], float]:
    """Window rows of ``n`` segments whose windows per shot (shots holding a window) are
    closest to ``windows_per_shot``; returns (per segment windows, the one-shot share)."""
    def build(share: float) -> list[list[dict]]:
        rng = np.random.default_rng(seed)
        return [_windows(f"seg{i:05d}_000000_000010", _shots(rng, share)) for i in range(n)]

    def per_shot(segs: list[list[dict]]) -> float:
        shots = {w["shot_id"] for ws in segs for w in ws}
        return sum(map(len, segs)) / max(len(shots), 1)

    lo, hi = 0.0, 1.0
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if per_shot(build(mid)) < windows_per_shot else (lo, mid)
    share = (lo + hi) / 2
    return build(share), share


def _grid(seed: int):
    """A 10-s analysis grid (small frames: the counting models never look at them)."""
    from decoding.media import Grid

    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (int(SEGMENT_SECONDS * 12), 8, 8, 3), dtype=np.uint8)
    audio = (0.3 * rng.standard_normal((1, int(SEGMENT_SECONDS * 16000)))).astype(np.float32)
    return Grid(frames=frames, audio_channels=audio, start=0.0)


# ---------------------------------------------------------------- counting models, stated pass rates

class CountingModels:
    """Stand-ins with the scorers' interfaces: count every input, return valid features."""

    def __init__(self, cache_text: bool = True) -> None:
        self.counts: Counter = Counter()
        self.cache_text = cache_text
        self.texts: set[str] = set()
        self.rng = np.random.default_rng(0)

    def _feat(self, n: int) -> np.ndarray:
        return self.rng.standard_normal((n, 8)).astype(np.float32) + 3.0

    # CLIP
    def embed(self, frames):
        self.counts["clip.embed"] += len(frames)
        return self._feat(len(frames))

    # ImageBind (texts once per actor, as ImageBindScorer caches them; naive: per window)
    def embed_images(self, frames):
        self.counts["imagebind.embed_images"] += len(frames)
        return self._feat(len(frames))

    def embed_audio(self, waves):
        self.counts["imagebind.embed_audio"] += len(waves)
        return self._feat(len(waves))

    def embed_text(self, names):
        new = [n for n in names if n not in self.texts]
        if self.cache_text:
            self.texts.update(new)
        self.counts["imagebind.embed_text"] += len(new)
        return self._feat(len(names))

    # sync classifier (SyncScorer.phi_pairs: each distinct clip encoded once, head per pair)
    def phi_pairs(self, audio, video, pairs, mels=None, primary=None):
        pairs = list(dict.fromkeys(pairs))
        self.counts["sync.audio_clips"] += len({a for a, _ in pairs})
        self.counts["sync.video_clips"] += len({v for _, v in pairs})
        self.counts["sync.pairs"] += len(pairs)
        return {p: float(x) for p, x in zip(pairs, self.rng.standard_normal(len(pairs)))}


def _u(*parts: str) -> float:
    h = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2 ** 64


def stated_pass(name: str, row: dict, rates: dict[str, float], corr: float, seed: int) -> bool:
    """The window's stated outcome for ``name``: its shot's draw with probability ``corr``."""
    key = row["shot_id"] if _u(str(seed), name, "c", row["window_id"]) < corr else row["window_id"]
    return _u(str(seed), name, key) < rates[name]


@contextlib.contextmanager
def stated_pass_rates(rates: dict[str, float], corr: float, seed: int) -> Iterator[None]:
    """``registry.passes`` answers with the stated draws (a missing score still fails)."""
    from filters import registry

    real = registry.passes

    def passes(name, row, thresholds):
        if real(name, row, thresholds) is None:
            return None
        return stated_pass(name, row, rates, corr, seed)
    registry.passes = passes
    try:
        yield
    finally:
        registry.passes = real


def count(segs: list[list[dict]], mode: str, order=None, batch: int = 4) -> tuple[Counter, list]:
    """Model inputs of one mode over the corpus, and the rows."""
    from curate.ops.scoring import Scorers, SegmentJob, score_segments

    m = CountingModels(cache_text=mode != "naive")   # naive: the class text once per window
    sc = Scorers(clip=m, imagebind=m, sync=m)
    if mode == "naive":   # each window alone: no shared features, no cascade
        grids = [_grid(i) for i in range(len(segs))]
        jobs = [SegmentJob(grids[i], [dict(w)], "dog barking") for i, ws in enumerate(segs) for w in ws]
        batch = 1
    else:
        jobs = [SegmentJob(_grid(i), copy.deepcopy(ws), "dog barking") for i, ws in enumerate(segs)]
    rows = []
    for i in range(0, len(jobs), batch):
        for rs in score_segments(jobs[i:i + batch], sc, None, cascade=mode == "cascade", order=order):
            rows += rs
    return m.counts, rows


def kept(rows: list[dict], order, rates, corr, seed) -> list[str]:
    return [r["window_id"] for r in rows
            if r["status"] == "ok" and all(stated_pass(n, r, rates, corr, seed) for n in order)]


def _args(argv=None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=400, help="10-s segments in the corpus")
    ap.add_argument("--windows-per-shot", type=float, default=VGGSS_WINDOWS / VGGSS_SHOTS)
    ap.add_argument("--pass", dest="rates", nargs="*", default=[], metavar="FILTER=RATE",
                    help=f"stated pass rates (default {DEFAULT_PASS})")
    ap.add_argument("--correlation", type=float, default=0.5,
                    help="share of a filter's outcomes decided per shot instead of per window")
    ap.add_argument("--order", nargs="*", action="append", default=None, metavar="FILTER",
                    help="an extra cascade order to count (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def _rates(items: list[str]) -> dict[str, float]:
    """The stated pass rates with ``--pass FILTER=RATE`` over the defaults."""
    rates = dict(DEFAULT_PASS)
    for item in items:
        k, _, v = item.partition("=")
        if k not in rates:
            raise SystemExit(f"--pass: unknown filter {k!r}; filters: {list(rates)}")
        rates[k] = float(v)
    return rates


def _print_costs() -> tuple[dict[str, float], float]:
    """Print and return the GFLOPs per model input, and the Synchformer's per 4.8-s context."""
    cost = all_costs()
    print("GFLOPs per model input (real architectures, FlopCounterMode on meta tensors):")
    for k, g in sorted(cost.items()):
        print(f"  {k:<24}{g:10.2f}")
    sf_cost = synchformer_costs()
    per_context = sum(sf_cost.values())
    for k, g in sorted(sf_cost.items()):
        print(f"  {k:<24}{g:10.2f}   (per 4.8-s context)")
    print(f"  {'synchformer (context)':<24}{per_context:10.2f}   (certify: first + last context per merged clip)")
    return cost, per_context


def main(argv=None) -> None:
    from filters import registry

    args = _args(argv)
    logging.basicConfig(level=logging.ERROR)
    rates = _rates(args.rates)

    cost, per_context = _print_costs()

    segs, share = vggss_corpus(args.segments, args.windows_per_shot, args.seed)
    n_win = sum(map(len, segs))
    n_shots = len({w["shot_id"] for ws in segs for w in ws})
    print(f"\ncorpus: {args.segments} segments of {SEGMENT_SECONDS:g} s, {n_shots} shots holding windows "
          f"({n_shots / args.segments:.2f} per segment; {share:.1%} of segments one shot), {n_win} windows: "
          f"{n_win / n_shots:.2f} per shot (VGGSS {VGGSS_WINDOWS / VGGSS_SHOTS:.2f}), "
          f"{n_win / args.segments:.2f} per segment")
    prod = float(np.prod(list(rates.values())))
    print("stated pass rates (inputs, not measured): " + ", ".join(f"{k} {v:g}" for k, v in rates.items())
          + f"; product {prod:.2%}; correlation within shots {args.correlation:g}")

    orders = {"default (sync before imagebind)": registry.DEFAULT_ORDER,
              "schema / paper (imagebind before sync)": registry.LEGACY_ORDER}
    for o in args.order or []:
        orders[" ".join(o)] = registry.cascade_order(o)

    naive, _ = count(segs, "naive")
    base, _ = weighted(naive, cost)
    results = [("naive (per window, no reuse)", naive), ("reuse (ours, no cascade)", count(segs, "reuse")[0])]
    kept_by = {}
    with stated_pass_rates(rates, args.correlation, args.seed):
        for name, order in orders.items():
            counts, rows = count(segs, "cascade", order)
            kept_by[name] = kept(rows, order, rates, args.correlation, args.seed)
            results.append((f"cascade, {name}", counts))
    w = max(len(name) for name, _ in results) + 2
    print(f"\n{'mode':<{w}}{'GFLOP/window':>13}{'naive/mode':>11}  ImageBind share; inputs per window")
    for name, counts in results:
        total, per = weighted(counts, cost)
        ib = sum(v for k, v in per.items() if k.startswith("imagebind")) / total
        inputs = ", ".join(f"{k} {counts.get(k, 0) / n_win:.2f}" for k in sorted(cost))
        print(f"{name:<{w}}{total / n_win:13.1f}{base / total:10.2f}x  {ib:.0%}; {inputs}")
    first = next(iter(kept_by.values()))
    _certify_share(segs, first, orders, rates, args, cost, 2 * per_context, n_win)
    same = all(v == first for v in kept_by.values())
    print(f"\nkept windows: {len(first)} of {n_win} ({len(first) / n_win:.2%}); the same windows under "
          f"every order: {'yes' if same else 'NO'}")


def _certify_share(segs, kept_ids, orders, rates, args, cost, per_clip: float, n_win: int) -> None:
    """Synchformer's share of the default cascade's compute at this corpus shape: one
    certificate (two contexts) per shot holding kept windows (kept windows of a shot merge,
    so this counts at least one clip per such shot: a lower bound on clips)."""
    shot_of = {w["window_id"]: w["shot_id"] for ws in segs for w in ws}
    clips = len({shot_of[k] for k in kept_ids if k in shot_of})
    with stated_pass_rates(rates, args.correlation, args.seed):
        counts, _ = count(segs, "cascade", next(iter(orders.values())))
    cascade, _ = weighted(counts, cost)
    sf = clips * per_clip
    print(f"\ncertify: {clips} merged clips (>= 1 per shot with kept windows) x {per_clip:.1f} GFLOP = "
          f"{sf / n_win:.1f} GFLOP per window; share of cascade + certify: {sf / (cascade + sf):.1%}")


if __name__ == "__main__":
    main()
