"""A whole `curate build` over many generated sources: items/s per stage and driver peak RSS.

    python benchmarks/bench_build.py                      # 200 sources of 4 s, --workers 2
    python benchmarks/bench_build.py --sources 400 --duration 5 --workers 4

The corpus (`curate.demo.synth`) is generated in a child process and served on loopback; the
build is the real console script (demo recipe without its sync training, random models
scored but not gating, as in tests/e2e/test_build_e2e.py), run once in a fresh folder, then once
more to time a finished rerun. Stage wall times come from the moments the build prints its
"== <stage>" lines (the shard stage ends at its verify summary); item counts are the records
of each stage's checkpoints (``work/<stage>/part-*.jsonl``: download, split, score, cut) and
the manifests (select: windows in, clips out; shards: samples). Peak RSS of the driver is the
kernel's high-water mark (``VmHWM`` in ``/proc/<pid>/status``) of the build process only,
polled every 0.2 s until it exits (Ray workers and ffmpeg children are not in it);
``ru_maxrss`` of RUSAGE_CHILDREN (the largest waited-for descendant, the corpus generator's
ffmpeg included) is printed beside it. Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testkit.kill_resume import RECIPE, build_args, build_env, write_inputs

#: the corpus generator, run in a child (its memory stays out of this process)
_SYNTH_CHILD = (
    "import sys, json; from curate.demo.synth import synthesize; "
    "t = synthesize(sys.argv[1], n_videos=int(sys.argv[2]), seed=7, duration=float(sys.argv[3])); "
    "open(sys.argv[1] + '/truth.small.json', 'w').write(json.dumps({'duration': t['duration'], "
    "'videos': [{k: v[k] for k in ('id', 'label', 'split')} for v in t['videos']]}))")
STAGE_LINE = re.compile(r"^== (\S+)")
VERIFY_LINE = re.compile(r"^\d+ shards, \d+ ok")


def _hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def run_timed(args: list[str], log_path: Path) -> dict:
    """Run the build; time each '== stage' line; poll the driver's VmHWM."""
    env = build_env()
    marks: list[tuple[str, float]] = []
    peak = {"kib": 0}
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                         cwd=str(REPO), text=True, bufsize=1)

    def poll() -> None:
        while p.poll() is None:
            v = _hwm_kib(p.pid)
            if v:
                peak["kib"] = max(peak["kib"], v)
            time.sleep(0.2)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    with log_path.open("w") as logf:
        for line in p.stdout:
            logf.write(line)
            now = time.monotonic() - t0
            m = STAGE_LINE.match(line)
            if m:
                marks.append((m.group(1), now))
            elif VERIFY_LINE.match(line):
                marks.append(("(verified)", now))
    p.wait()
    th.join()
    total = time.monotonic() - t0
    stages = {}
    for (name, t), nxt in zip(marks, marks[1:] + [("(end)", total)]):
        if name != "(verified)":
            stages[name] = nxt[1] - t
    return {"rc": p.returncode, "total_s": total, "stages": stages, "driver_peak_kib": peak["kib"]}


def _records(out: Path, stage: str) -> int:
    n = 0
    for part in (out / "work" / stage).glob("part-*.jsonl"):
        with part.open() as f:
            n += sum(1 for line in f if line.strip())
    return n


def item_counts(out: Path) -> dict[str, str]:
    from manifests.schemas import read_rows
    counts = {"download": _records(out, "download"), "split": _records(out, "split"),
              "score": _records(out, "score")}
    windows = len(read_rows(out, "windows"))
    clips = len(read_rows(out, "clips"))
    sharded = len(read_rows(out, "shards"))
    return {"sources": f"{len(read_rows(out, 'sources'))} rows",
            "download": f"{counts['download']} sources",
            "split": f"{counts['split']} sources -> {windows} windows",
            "score": f"{counts['score']} sources scored",
            "select": f"{windows} windows -> {clips} clips",
            "shard": f"{_records(out, 'cut')} clips cut, {sharded} samples sharded"}


def _args(argv=None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", type=int, default=200)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per generated source")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--per-class", type=int, default=0,
                    help="cap of clips per class (0: no cap; the tests' cap of 2 leaves the shard stage ~8 items)")
    ap.add_argument("--corpus", type=Path, default=None,
                    help="reuse (or generate into) this corpus folder instead of a temporary one")
    ap.add_argument("--keep", action="store_true")
    return ap.parse_args(argv)


def _report(a, truth: dict, out: Path, first: dict, rerun: dict) -> None:
    """The measured figures: per stage wall time and items/s, memory, the finished rerun."""
    counts = item_counts(out)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"build: {len(truth['videos'])} sources of {truth['duration']:g} s, --per-class {a.per_class}, "
          f"{first['total_s']:.1f} s wall, --workers {a.workers}, {os.cpu_count()} CPUs visible, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'stage':<10s} {'wall s':>8s} {'items/s':>8s}  items")
    n_items = {"download": _records(out, "download"), "split": _records(out, "split"),
               "score": _records(out, "score"), "select": None, "shard": _records(out, "cut")}
    for name, secs in first["stages"].items():
        n = n_items.get(name)
        rate = f"{n / secs:8.2f}" if n and secs > 0 else f"{'-':>8s}"
        print(f"{name:<10s} {secs:8.1f} {rate}  {counts.get(name, '')}")
    print(f"driver peak RSS (VmHWM of the build process, polled): {first['driver_peak_kib'] / 1024:.0f} MiB")
    print(f"largest waited-for descendant (RUSAGE_CHILDREN ru_maxrss): {ru / 1024:.0f} MiB")
    print(f"finished rerun: {rerun['total_s']:.1f} s (rc {rerun['rc']}), "
          f"driver peak {rerun['driver_peak_kib'] / 1024:.0f} MiB")


def main() -> int:
    a = _args()

    from curate.demo.loopback import LoopbackServer

    tmp = Path(tempfile.mkdtemp(prefix="bench_build_"))
    try:
        corpus = a.corpus or tmp / "corpus"
        t0 = time.monotonic()
        if not (corpus / "truth.small.json").is_file():
            subprocess.run([sys.executable, "-c", _SYNTH_CHILD, str(corpus), str(a.sources), str(a.duration)],
                           check=True, cwd=str(REPO))
            print(f"corpus: {a.sources} sources of {a.duration:g} s generated in {time.monotonic() - t0:.0f} s",
                  flush=True)
        truth = json.loads((corpus / "truth.small.json").read_text())
        with LoopbackServer(corpus / "videos") as server:
            src, cfg = write_inputs(corpus, server, truth)
            cap = a.per_class or None
            cfg.write_text(json.dumps({**RECIPE, "select": {"per_class": cap,
                                                            "test_per_class": cap and max(1, cap // 3)}}))
            out = tmp / "run" / "out"
            out.parent.mkdir()
            args = build_args(out, src, cfg, a.workers)
            first = run_timed(args, out.parent / "build.log")
            if first["rc"] != 0:
                print((out.parent / "build.log").read_text()[-4000:])
                print(f"build failed rc {first['rc']}")
                return 1
            rerun = run_timed(args, out.parent / "rerun.log")
        _report(a, truth, out, first, rerun)
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
