"""A site throttling the crawler: what one health control for all workers does with it.

    python benchmarks/bench_throttle.py                 # throttles of 8 s and 60 s
    python benchmarks/bench_throttle.py --throttle 60 --workers 16 --sources 16

A loopback server answers ``429 Too Many Requests`` (Retry-After: 1) to every request for its
first T seconds; ``--sources`` generated 3-s sources are downloaded by ``--workers`` download
workers on a local Ray (the download stage of the demo recipe, default health options).
Prints, per throttle: wall time, requests the server saw, 429 answers (in total, and after the
pause began), pauses, probes, seconds paused, and how the sources ended. Asserts nothing.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.config.run_state import new_run
from curate.build import stage_value
from curate.ops.health import read_state
from curate.demo.loopback import LoopbackServer
from curate.config.recipes import get_recipe
from testkit.avmedia import event_video_copies, served_sources_csv


def run(root: Path, throttle_s: float, workers: int, n: int) -> None:
    from curate.execution.ray import RayExecutor
    media = root / "m"
    ids = event_video_copies(media, n)
    out = root / "out"
    with LoopbackServer(media, throttle_s=throttle_s, throttle_retry_after="1") as srv:
        served_sources_csv(root / "s.csv", srv, ids)
        r = new_run(out, get_recipe("demo"), {"download_workers": workers})
        stage_value("sources", out, r, sources=root / "s.csv")
        ex = RayExecutor(workers=2)
        ex._ensure_ray()                     # Ray start-up is not the throttle's cost
        t0 = time.monotonic()
        rows = stage_value("download", out, r, ex)
        wall = time.monotonic() - t0
        ex.shutdown()
    st = read_state(out)
    c = st["counts"]
    th = srv.throttled_answers()
    first_pause = st["history"][0]["paused_at"] if st["history"] else None
    after = sum(q.at > first_pause for q in th) if first_pause else 0
    ends = Counter(f"{row['status']}/{row['reason']}" for row in rows)
    print(f"throttle {throttle_s:g} s, {workers} workers, {n} sources: {wall:.1f} s; server saw "
          f"{srv.count()} requests, {len(th)} answered 429 ({after} after the pause began); "
          f"control: {c['requests']} requests granted, {c['pauses']} pauses, {c['probes']} probes, "
          f"{st['paused_s']:.1f} s paused; sources: {dict(ends)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--throttle", type=float, nargs="+", default=[8.0, 60.0])
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--sources", type=int, default=16)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    import yt_dlp  # noqa: F401 - import cost out of the timings
    for t in args.throttle:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp), t, args.workers, args.sources)


if __name__ == "__main__":
    main()
