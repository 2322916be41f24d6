"""Random kill points (issue 10): SIGKILL a real `curate build` at N random moments, resume
each to completion and compare with an uninterrupted build.

    python benchmarks/kill_resume.py                 # 20 points, 5 sources of 6 s
    python benchmarks/kill_resume.py --points 5 --seed 1 --sources 4

A generated corpus is served on loopback (one server for the whole run, so source URLs and
download fingerprints stay the same). The reference build runs first and gives the range of
the delays: uniform in [0, 0.8 x reference duration), seeded (on a loaded machine a build
often ends sooner than the reference did, and a kill after its end is no kill point; such a
point is still printed, as a mismatch). Each point starts a fresh output
folder, kills the build's process group after its delay, checks that nothing is written into
the output in the 3 s after the kill, reruns the build to completion and compares selected
keys, shard members (tar index, with member sha256) and shard payload sha256 per key; the
rerun must leave no temp files and `curate verify` must pass. Prints one line per point and
"matched K of N"; asserts nothing (exit 0), so it is a figure, not a test.
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_kill_resume import (
    build_args,
    compare,
    outcome,
    run_build,
    temp_files,
    verify_cli,
    write_inputs,
)


def _point(i: int, delay: float, args_for, ref: dict, tmp: Path) -> dict:
    out = tmp / f"p{i:02d}" / "out"
    out.parent.mkdir(parents=True)
    args = args_for(out)
    killed = run_build(args, out, out.parent / "kill.log", delay=delay)
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
    return {"delay": delay, "stage": killed.stage if killed.killed else "(finished)",
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

    from curate.loopback import LoopbackServer
    from curate.synth import synthesize

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
            rng = random.Random(a.seed)
            delays = [rng.uniform(0.0, 0.8 * ref_run.seconds) for _ in range(a.points)]
            matched = 0
            for i, d in enumerate(delays):
                r = _point(i, d, lambda o: build_args(o, src, cfg, a.workers), ref, tmp)
                ok = not r["problems"]
                matched += ok
                print(f"point {i + 1:2d}/{a.points}: kill at {r['delay']:6.1f} s during {r['stage']:<10s} "
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
