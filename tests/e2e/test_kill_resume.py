"""Kill and resume (issue 10): SIGKILL of a real `curate build` (the console script, in its own
process group, on a local Ray) at six points, then a rerun to completion must give the same
selected keys, shard members and shard payload sha256 as an uninterrupted build, leave no temp
files and pass `curate verify`; and after each kill nothing keeps writing into the output.

To stay short, the kill points form one chain over one output folder: the first build is
killed during download, its rerun during split, the next rerun during score, then during
clip cutting, during tar writing and after verify; the last rerun runs to completion and is
compared with the reference. Every rerun after a kill is therefore itself a resume of a killed
run (kills twice and more in a row), and each stage is entered by a run that has to clean up
what the kill before left. The helpers are ``testkit/kill_resume.py`` (the benchmarks use them too).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from testkit.kill_resume import (DURATION, KILL_POINTS, N_SOURCES, build_args, compare, file_snapshot,
                                 outcome, run_build, temp_files, verify_cli, verify_manifests,
                                 write_inputs)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A small generated corpus served on loopback, and the reference (uninterrupted) build."""
    from curate.demo.loopback import LoopbackServer
    from curate.demo.synth import synthesize

    corpus = tmp_path_factory.mktemp("kr_corpus")
    truth = synthesize(corpus, n_videos=N_SOURCES, seed=3, duration=DURATION)
    with LoopbackServer(corpus / "videos") as server:
        src, cfg = write_inputs(corpus, server, truth)
        ref_out = tmp_path_factory.mktemp("kr_ref") / "out"
        ref = run_build(build_args(ref_out, src, cfg), ref_out, ref_out.parent / "build.log")
        assert ref.rc == 0, ref.log[-4000:]
        yield {"src": src, "cfg": cfg, "ref_out": ref_out, "ref": outcome(ref_out),
               "tmp": tmp_path_factory}


@pytest.mark.slow
def test_reference_build_is_complete(served):
    ref = served["ref"]
    # every stage ran: something was selected and sharded, in both splits
    assert ref["selected"] and set(ref["payload"]) == set(ref["selected"])
    assert {s.split("-")[0] for s in ref["members"]} == {"train", "test"}
    assert temp_files(served["ref_out"]) == []
    assert verify_cli(served["ref_out"]).returncode == 0


@pytest.mark.slow
def test_kill_chain_resumes_to_the_reference(served):
    out = served["tmp"].mktemp("kr_chain") / "out"
    args = build_args(out, served["src"], served["cfg"])
    for i, (name, trigger) in enumerate(KILL_POINTS):
        res = run_build(args, out, out.parent / f"kill{i}.log", trigger=trigger)
        assert res.killed, f"{name}: the build ended (rc {res.rc}) before its kill point:\n{res.log[-3000:]}"
        # nothing keeps writing into the output once the process group is gone
        changed = {k for k in set(res.after_kill) | set(res.later)
                   if res.after_kill.get(k) != res.later.get(k)}
        assert not changed, f"{name}: written after the kill: {sorted(changed)[:10]}"
        temps = [k for k in res.after_kill if Path(k).name.startswith(".")]
        print(f"kill {i + 1} ({name}): at {res.seconds:.1f} s in stage {res.stage}, "
              f"{len(res.after_kill)} files, {len(temps)} temp, "
              f"shards/: {sorted(k for k in res.after_kill if k.startswith('shards/'))[:4]}")
    final = run_build(args, out, out.parent / "final.log")
    assert final.rc == 0, final.log[-4000:]
    diffs = compare(served["ref"], outcome(out))
    assert not diffs, diffs
    assert temp_files(out) == []
    p = verify_cli(out)
    assert p.returncode == 0, p.stdout + p.stderr
    ok, text = verify_manifests(out)
    assert ok, text
    # and a finished rerun changes nothing
    before = file_snapshot(out / "shards") | {f"m/{k}": v for k, v in file_snapshot(out / "manifests").items()}
    again = run_build(args, out, out.parent / "again.log")
    assert again.rc == 0
    after = file_snapshot(out / "shards") | {f"m/{k}": v for k, v in file_snapshot(out / "manifests").items()}
    assert after == before
