"""The streaming engine: model loads per scoring stage, stragglers, scoring scale-out.

    python benchmarks/bench_engine.py                  # all three
    python benchmarks/bench_engine.py --only loads     # loads | straggler | scaling

loads: a scoring-shaped stage (prepare tasks -> stateful actors, batches of segments) over
1,000 items with a fake scorer factory that sleeps ``--load-s`` to "load a model" and
appends a line to a counter file: model loads must equal the number of scoring actors.
straggler: 256 items of 0.25 s, one 8-s item per 64, 16 workers (stateless tasks, sleeping
items: the machine's cores do not limit it). Busy fraction = item-seconds / (wall x workers);
the best possible wall is max(8 s, 95 s / 16) = 8 s, i.e. 74% is the ceiling of this case at 8 s
and >= 80% needs the 8-s items to overlap the short ones (they start first here).
scaling: the demo's scoring stage (decode tasks + scoring actors with the demo's random
models) over ``--videos`` generated sources, with --workers 1 and 2, downloads and splits
done once beforehand. Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.execution.spec import StageSpec
from curate.execution.checkpoints import run_stage


def _fake_model_factory(counter: str, load_s: float, item_s: float):
    time.sleep(load_s)                       # "load the model"
    with open(counter, "a") as f:
        f.write(f"{os.getpid()}\n")

    def fn(item, payload):
        time.sleep(item_s)
        return {"windows": [{"window_id": item["key"], "status": "ok", "pixel_diff": float(payload)}]}
    return fn


def _fake_decode_factory():
    def prep(item):
        return item["x"] * 0.5
    return prep


def _sleep_factory():
    def fn(item):
        t0 = time.time()
        time.sleep(item["s"])
        return {"downloads": [{"source_id": item["key"], "status": "ok", "t0": t0, "t1": time.time()}]}
    return fn


def _err(item, error):
    return {"downloads": [{"source_id": item["key"], "status": "failed", "error": error}]}


def _register() -> None:
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _executor(workers: int):
    """One local Ray for the whole script (restarting Ray on a loaded machine can time out);
    ``workers`` only sets how many items/actors a stage runs at once."""
    from curate.execution.ray import RayExecutor
    global _EX
    if _EX is None:
        _EX = RayExecutor(workers=workers)
    _EX.workers = workers
    return _EX


_EX = None


def bench_loads(n: int, workers: int, load_s: float) -> None:
    tmp = Path(tempfile.mkdtemp())
    counter = tmp / "loads.txt"
    ex = _executor(workers)
    _register()
    spec = StageSpec("score", functools.partial(_fake_model_factory, str(counter), load_s, 0.002), _err,
                     stateful=True, prepare=_fake_decode_factory, batch_size=4)
    items = [{"key": f"w{i:05d}", "x": i} for i in range(n)]
    t0 = time.monotonic()
    res = run_stage(tmp, spec, items, ex, progress=False)
    wall = time.monotonic() - t0
    loads = len(counter.read_text().split())
    actors = len(set(counter.read_text().split()))
    rows = res.table("windows").num_rows
    print(f"loads: {n} items, --workers {workers}: {actors} scoring actors, {loads} model loads, "
          f"{rows} rows, {wall:.1f} s (load {load_s:g} s each)")
    t0 = time.monotonic()
    started = ex.started
    run_stage(tmp, spec, items, ex, progress=False)
    print(f"loads: rerun of the finished stage: {time.monotonic() - t0:.2f} s, "
          f"Ray stage runs started: {ex.started - started}, model loads now {len(counter.read_text().split())}")
    shutil.rmtree(tmp, ignore_errors=True)


def bench_straggler(workers: int = 16, n: int = 256, short: float = 0.25, long: float = 8.0,
                    every: int = 64) -> None:
    ex = _executor(workers)
    _register()
    tmp = Path(tempfile.mkdtemp())
    spec = StageSpec("s", _sleep_factory, _err)
    # warm the worker processes first: process start-up is not what this measures
    run_stage(tmp / "warm", spec, [{"key": f"w{i}", "s": 4.0} for i in range(workers)], ex, progress=False)
    items = [{"key": f"i{i}", "s": long if i % every == 0 else short} for i in range(n)]
    work = sum(it["s"] for it in items)
    t0 = time.monotonic()
    t0_wall = time.time()
    res = run_stage(tmp / "run", spec, items, ex, progress=False)
    wall = time.monotonic() - t0
    rows = res.table("downloads").to_pylist()
    # while items were still waiting to start (until the last one started), how much of the
    # workers' time was busy: the measure of "no barrier" (the tail is the last items alone)
    drain = max(r["t0"] for r in rows)
    busy_q = sum(max(0.0, min(r["t1"], drain) - max(r["t0"], t0_wall)) for r in rows)
    print(f"straggler: {n} items ({n // every} of {long:g} s, the rest {short:g} s), {workers} workers: "
          f"wall {wall:.1f} s (best possible {max(long, work / workers):.1f} s), "
          f"busy {work / (wall * workers):.0%} of wall x workers (ceiling at 8 s: {work / (8 * workers):.0%}), "
          f"busy {busy_q / ((drain - t0_wall) * workers):.0%} while items were waiting "
          f"({drain - t0_wall:.1f} s)")
    shutil.rmtree(tmp, ignore_errors=True)


def bench_scaling(videos: int, workers_list: list[int]) -> None:
    from curate.config.run_state import load_run, new_run
    from curate.build import stage_value
    from manifests.schemas import read_rows
    from curate.config.recipes import get_recipe
    from curate.execution.local import LocalExecutor
    from curate.demo.synth import synthesize

    tmp = Path(tempfile.mkdtemp())
    synthesize(tmp / "corpus", n_videos=videos, seed=0)
    src = tmp / "sources.csv"
    src.write_text((tmp / "corpus" / "sources.csv").read_text().replace("videos/", f"{tmp / 'corpus'}/videos/"))
    base = tmp / "base"
    recipe = get_recipe("demo")
    run = new_run(base, recipe, {"allow_random_weights": True})
    stage_value("sources", base, run, sources=src)
    stage_value("download", base, run, LocalExecutor())
    stage_value("split", base, run, LocalExecutor())
    n_win = len(read_rows(base, "windows"))
    for w in workers_list:
        out = tmp / f"w{w}"
        shutil.copytree(base, out)
        run = load_run(out)
        ex = _executor(w)
        ex._ensure_ray()
        t0 = time.monotonic()
        stage_value("score", out, run, ex)
        wall = time.monotonic() - t0
        print(f"scaling: demo scoring, {videos} sources / {n_win} windows, --workers {w}: "
              f"{wall:.1f} s ({n_win / wall:.1f} windows/s; Ray CPUs {ex.cpus:g})")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["loads", "straggler", "scaling"])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--load-s", type=float, default=2.0)
    ap.add_argument("--videos", type=int, default=6)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if a.only in (None, "loads"):
        bench_loads(a.items, a.workers, a.load_s)
    if a.only in (None, "straggler"):
        bench_straggler()
    if a.only in (None, "scaling"):
        bench_scaling(a.videos, [1, 2])
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
