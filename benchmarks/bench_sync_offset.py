"""What the sync classifier's own offset (31 audio shifts per window, issue 27) costs and finds.

    python benchmarks/bench_sync_offset.py                       # shipped demo classifier
    python benchmarks/bench_sync_offset.py --offsets -0.52 0 0.4 --stride 0.5

For generated flash/beep videos (``curate.demo.synth.make_event_video``, 8 s, irregular events,
the audio ``offset`` s late) cut into the recipe's 3-s windows, it measures process CPU time
(every thread) of the sync filter's model work for one segment, the way ``filters.sync.run``
does it (one ``phi_pairs`` call per segment, each distinct clip encoded once):

- P_sync alone: the 5 pairs per window of a2v / v2a (what the filter cost before);
- P_sync + the offset search: the same call with each window's 31 shifted audio clips
  against its in-sync video clip added;

and prints CPU-ms per window of each, their ratio, the distinct clips and pairs encoded, and
per offset the windows whose argmax lies within the paper's tolerance (+-0.2 s) of the truth
and the clip's mode. It also prints the GFLOP per window at the real classifier's size
(``benchmarks.bench_flops.sync_costs``, meta device) for both. Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EVENTS = [-0.7, 0.3, 1.1, 1.5, 2.6, 3.2, 4.5, 4.9, 6.1, 7.0, 7.4, 8.3]


def segment_for(path: Path, stride: float, scorer):
    from curate.ops.scoring import Scorers, _start_frame
    from decoding.media import decode_grid
    from filters.segment import Segment
    g = decode_grid(path)
    rows = [{"start": float(s), "end": float(s) + 3.0} for s in np.arange(0.0, 5.0 + 1e-9, stride)]
    return Segment(g, rows, [_start_frame(g, r) for r in rows], Scorers(sync=scorer), None, path=str(path))


def pairs_of(seg, with_offsets: bool) -> list:
    from filters import sync
    alive = list(range(len(seg.rows)))
    kd = {k: sync._keys(seg, k) for k in alive}
    need = [p for a, v in kd.values() for p in sync._pairs(a, v)]
    if with_offsets:
        need += [(w, kd[k][1][1]) for k in alive for w in sync._offset_keys(seg, k) if w is not None]
    return list(dict.fromkeys(need))


def phi_of(seg, scorer, pairs) -> dict:
    """What ``filters.sync.run`` computes for ``pairs``: the convention's one call."""
    from filters.sync import SYNC_CLIP
    from sync_classifier.conventions import get_convention
    return get_convention(scorer.convention).segment_phi(seg, scorer, pairs, SYNC_CLIP)


def cpu_of(seg, scorer, pairs, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        phi_of(seg, scorer, pairs)
        best = min(best, time.process_time() - t)
    return best


def flops_per_window(n_windows: int, pairs_p: list, pairs_o: list) -> tuple[float, float]:
    from benchmarks.bench_flops import sync_costs
    c = sync_costs()

    def g(pairs):
        return (len({a for a, _ in pairs}) * c["sync.audio_clips"] + len({v for _, v in pairs}) * c["sync.video_clips"]
                + len(pairs) * c["sync.pairs"]) / n_windows
    return g(pairs_p), g(pairs_o)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--offsets", type=float, nargs="+", default=[-0.52, -0.4, -0.2, 0.0, 0.2, 0.4, 0.52])
    ap.add_argument("--stride", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from curate.demo.synth import make_event_video
    from filters.sync import SyncScorer, clip_offset, offset_of
    from sync_classifier.model import DEMO_CHECKPOINT
    scorer = SyncScorer.from_checkpoint(str(DEMO_CHECKPOINT))
    with tempfile.TemporaryDirectory() as tmp:
        for off in args.offsets:
            path = Path(tmp) / f"ev_{off}.mp4"
            make_event_video(path, 8.0, EVENTS, audio_offset=off, seed=3)
            seg = segment_for(path, args.stride, scorer)
            n = len(seg.rows)
            p_only, p_all = pairs_of(seg, False), pairs_of(seg, True)
            t0, t1 = cpu_of(seg, scorer, p_only, args.repeats), cpu_of(seg, scorer, p_all, args.repeats)
            from filters import sync
            phi = phi_of(seg, scorer, p_all)
            offs = [offset_of([None if w is None else phi[(w, sync._keys(seg, k)[1][1])]
                               for w in sync._offset_keys(seg, k)])[0] for k in range(n)]
            truth = -off
            near = sum(abs(o - truth) <= 0.2 + 1e-9 for o in offs)
            gp, go = flops_per_window(n, p_only, p_all)
            print(f"offset {truth:+.2f} s: {n} windows; CPU-ms per window P_sync {1000 * t0 / n:.0f}, "
                  f"with offsets {1000 * t1 / n:.0f} (x{t1 / t0:.2f}); audio clips {len({a for a, _ in p_only})} -> "
                  f"{len({a for a, _ in p_all})}, pairs {len(p_only)} -> {len(p_all)}; GFLOP per window at the "
                  f"real size {gp:.1f} -> {go:.1f}; windows within 0.2 s {near}/{n}, clip mode "
                  f"{clip_offset(np.array(offs)):+.2f}")


if __name__ == "__main__":
    main()
