"""Random kill points (issue 10): SIGKILL a real `curate build` at N random moments, resume
each to completion and compare with an uninterrupted build.

    python benchmarks/kill_resume.py                 # 20 points, 5 sources of 6 s
    python benchmarks/kill_resume.py --points 5 --seed 1 --sources 4

A generated corpus is served on loopback (one server for the whole run, so source URLs and
download fingerprints stay the same). The reference build runs first and gives the range of
the kill points, in units of the build's own progress, not of wall time: a unit is a stage
entered (an "== stage" line) or an item a stage finished (its progress bar count). A point
is a unit drawn uniformly (seeded) among all but the last of the reference's units plus a
jitter in [0, 2) s after it, so on a machine whose load changes between builds (wall times
here varied 3x) every kill still lands inside the build. Each point starts a fresh output
folder, kills the build's process group at its point, checks that nothing is written into
the output in the 3 s after the kill, reruns the build to completion and compares selected
keys, shard members (tar index, with member sha256) and shard payload sha256 per key; the
rerun must leave no temp files and `curate verify` must pass. Prints one line per point and
"matched K of N"; asserts nothing (exit 0), so it is a figure, not a test.
"""
from __future__ import annotations

import argparse
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testkit.kill_resume import (
    build_args,
    compare,
    outcome,
    run_build,
    temp_files,
    verify_cli,
    write_inputs,
)


_STAGE = re.compile(r"^== (\S+)", re.M)
_BAR = re.compile(r"([a-z][\w-]*):\s+\d+%\|[^|\r\n]*\|\s*(\d+)/(\d+)")


def progress_units(log: str) -> int:
    """Stages entered plus, per stage, the largest finished-item count its bar showed (a bar
    may skip counts; its largest one only grows)."""
    done: dict[str, int] = {}
    for m in _BAR.finditer(log):
        done[m.group(1)] = max(done.get(m.group(1), 0), int(m.group(2)))
    return len(_STAGE.findall(log)) + sum(done.values())


def _trigger(unit: int, jitter: float):
    """Kill once the build's log shows ``unit`` progress units, ``jitter`` seconds later."""
    seen: list[float] = []

    def fire(out: Path, log: str) -> bool:
        if not seen and progress_units(log) >= unit:
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= jitter
    return fire


def _point(i: int, point: tuple[int, float], args_for, ref: dict, tmp: Path) -> dict:
    out = tmp / f"p{i:02d}" / "out"
    out.parent.mkdir(parents=True)
    args = args_for(out)
    killed = run_build(args, out, out.parent / "kill.log", trigger=_trigger(*point))
    changed = sorted(k for k in set(killed.after_kill) | set(killed.later)
                     if killed.after_kill.get(k) != killed.later.get(k))
    t0 = time.monotonic()
    resumed = run_build(args, out, out.parent / "resume.log")
    resume_s = time.monotonic() - t0
    problems = []
    if not killed.killed:
        problems.append(f"ended before the kill (rc {killed.rc})")
    if changed:
        problems.append(f"{len(changed)} files written after the kill: {changed[:3]}")
    if resumed.rc != 0:
        problems.append(f"resume failed rc {resumed.rc}: {resumed.log[-300:]!r}")
    else:
        problems += compare(ref, outcome(out))
        left = temp_files(out)
        if left:
            problems.append(f"temp files left: {left[:3]}")
        if verify_cli(out).returncode != 0:
            problems.append("curate verify failed")
    shutil.rmtree(out.parent, ignore_errors=True)
    return {"delay": killed.seconds, "stage": killed.stage if killed.killed else "(finished)",
            "resume_s": resume_s, "problems": problems}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sources", type=int, default=5)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per generated source")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()

    from curate.demo.loopback import LoopbackServer
    from curate.demo.synth import synthesize

    tmp = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    try:
        truth = synthesize(tmp / "corpus", n_videos=a.sources, seed=3, duration=a.duration)
        with LoopbackServer(tmp / "corpus" / "videos") as server:
            src, cfg = write_inputs(tmp / "corpus", server, truth)
            ref_out = tmp / "ref" / "out"
            ref_out.parent.mkdir()
            ref_run = run_build(build_args(ref_out, src, cfg, a.workers), ref_out, ref_out.parent / "build.log")
            if ref_run.rc != 0:
                print(ref_run.log[-3000:])
                print("reference build failed")
                return 1
            ref = outcome(ref_out)
            print(f"reference build: {ref_run.seconds:.1f} s, {len(ref['selected'])} selected, "
                  f"{len(ref['members'])} shards ({a.sources} sources of {a.duration:g} s, "
                  f"--workers {a.workers})", flush=True)
            units = progress_units(ref_run.log)
            print(f"reference progress: {units} units", flush=True)
            rng = random.Random(a.seed)
            points = [(rng.randrange(1, units), rng.uniform(0.0, 2.0)) for _ in range(a.points)]
            matched = 0
            for i, pt in enumerate(points):
                r = _point(i, pt, lambda o: build_args(o, src, cfg, a.workers), ref, tmp)
                ok = not r["problems"]
                matched += ok
                print(f"point {i + 1:2d}/{a.points}: unit {pt[0]:3d}/{units} +{pt[1]:.1f} s: kill at "
                      f"{r['delay']:6.1f} s during {r['stage']:<10s} "
                      f"resume {r['resume_s']:6.1f} s  {'match' if ok else 'MISMATCH: ' + '; '.join(r['problems'])}",
                      flush=True)
            print(f"matched {matched} of {a.points}")
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
