"""CPU cost of what the audio holds (issue 26) beside the rest of the score stage.

    python benchmarks/bench_audio_scores.py                # 8 demo videos, demo models
    python benchmarks/bench_audio_scores.py --videos 16 --threads 2

On the demo corpus (``curate.demo.synth``) with the models the demo build scores with
(``curate.config.models.build_scorers`` of the demo recipe: random CLIP and ImageBind,
the shipped demo sync classifier, Silero VAD with its real weights), it measures process
CPU time (every thread) of

- decode: ``decode_grid`` of each segment (the one decode, native audio kept), and the same
  decode without the native audio (what keeping it costs);
- the score stage's scoring: ``score_segments`` over all the demo's filters, its cascade
  and gate, as the stage runs it;
- speech alone and audio_quality alone (``only``, no cascade: every window).

and prints CPU-ms per source-second of each, and the share of speech + audio_quality in
the score stage's CPU (decode + scoring). Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu(fn, *a, **kw):
    """(CPU seconds of this process, all threads; result)."""
    t = time.process_time()
    out = fn(*a, **kw)
    return time.process_time() - t, out


def demo_jobs(folder: Path, n: int):
    """(segment jobs of the first ``n`` demo videos, their paths, seconds)."""
    from curate.demo.synth import corpus_specs, render
    from curate.ops.scoring import SegmentJob
    from curate.ops.windows import window_starts_ms
    from decoding.media import decode_grid

    jobs, paths = [], []
    for spec in corpus_specs(n, 0):
        path = render(spec, folder / f"{spec.id}.mp4")
        starts = window_starts_ms(0, int(1000 * spec.duration), 3000, 500)
        wins = [{"window_id": f"{spec.id}_{s:06d}", "shot_id": f"{spec.id}_shot000",
                 "class_name": spec.label, "start": s / 1000, "end": s / 1000 + 3.0} for s in starts]
        jobs.append(SegmentJob(decode_grid(path), wins, spec.label.replace("_", " ")))
        paths.append(path)
    return jobs, paths, sum(j.grid.duration for j in jobs)


def _only(jobs, name: str):
    """The same segments, scoring only filter ``name``."""
    import dataclasses
    return [dataclasses.replace(j, only={name}) for j in jobs]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (at least 2 when scoring)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    import torch
    from curate.config.models import build_scorers, gating, resolve_models
    from curate.config.recipes import get_recipe
    from curate.config.run_state import cascade_order
    from curate.config.thresholds import thresholds
    from curate.ops.scoring import deterministic_torch, score_segments
    from decoding.media import decode_clip, decode_grid

    torch.set_num_threads(args.threads)
    deterministic_torch()
    run = {"recipe": get_recipe("demo"), "options": {"allow_random_weights": True}}
    scorers = build_scorers(resolve_models(run), run["recipe"]["models"], "cpu")
    th, (gate, _), order = thresholds(run), gating(run), cascade_order(run)
    with tempfile.TemporaryDirectory() as tmp:
        jobs, paths, seconds = demo_jobs(Path(tmp), args.videos)
        score_segments(jobs[:1], scorers, th, gate=set(gate), order=order)     # warm-up
        t_dec, _ = cpu(lambda: [decode_grid(p) for p in paths])
        t_dec16, _ = cpu(lambda: [decode_clip(p, 0.0, j.grid.duration) for p, j in zip(paths, jobs)])
        t_all, rows = cpu(score_segments, jobs, scorers, th, gate=set(gate), order=order)
        t_sp, _ = cpu(score_segments, _only(jobs, "speech"), scorers, th, cascade=False, order=order)
        t_aq, _ = cpu(score_segments, _only(jobs, "audio_quality"), scorers, th, cascade=False, order=order)
    stage = t_dec + t_all
    n_win = sum(len(r) for r in rows)
    print(f"demo corpus: {len(jobs)} videos, {seconds:.0f} s, {n_win} windows; torch threads "
          f"{torch.get_num_threads()}; process CPU time")
    print(f"{'':<44}{'CPU s':>8}{'CPU-ms per source-s':>21}{'of stage':>10}")
    for name, t in (("decode (one decode, native audio kept)", t_dec),
                    ("decode without the native audio", t_dec16),
                    ("scoring, every demo filter, cascade", t_all),
                    ("score stage (decode + scoring)", stage),
                    ("speech alone (every window)", t_sp),
                    ("audio_quality alone (every window)", t_aq),
                    ("speech + audio_quality", t_sp + t_aq)):
        print(f"{name:<44}{t:8.2f}{1000 * t / seconds:21.1f}{100 * t / stage:9.1f}%")


if __name__ == "__main__":
    main()
