"""Signals and one build per output, through the real `curate` console script on a local Ray
(issue 14, findings 3 and 4): SIGTERM during scoring exits 143 within 20 s with the resume
message and no C++ abort, SIGINT to the whole process group (Ctrl-C) exits 130, a second
build on a running output refuses within seconds; every interrupted or concurrent run ends
identical to an uninterrupted build (selected keys, shard members, payload sha256)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from testkit.kill_resume import (REPO, build_args, build_env, compare, in_score, outcome,
                                    run_build, temp_files, write_inputs)

N_SOURCES = 3
MESSAGE = "interrupted: rerun the same command to resume"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from curate.demo.loopback import LoopbackServer
    from curate.demo.synth import synthesize

    corpus = tmp_path_factory.mktemp("int_corpus")
    truth = synthesize(corpus, n_videos=N_SOURCES, seed=3, duration=6.0)
    with LoopbackServer(corpus / "videos") as server:
        src, cfg = write_inputs(corpus, server, truth)
        ref_out = tmp_path_factory.mktemp("int_ref") / "out"
        ref = run_build(build_args(ref_out, src, cfg), ref_out, ref_out.parent / "build.log")
        assert ref.rc == 0, ref.log[-4000:]
        yield {"src": src, "cfg": cfg, "ref": outcome(ref_out), "tmp": tmp_path_factory}


def _start(args, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=build_env(),
                            cwd=str(REPO), start_new_session=True)


def _wait_for(cond, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _interrupt_during_score(served, sig: int, group: bool, name: str) -> None:
    out = served["tmp"].mktemp(name) / "out"
    args = build_args(out, served["src"], served["cfg"])
    log = out.parent / "int.log"
    p = _start(args, log)
    try:
        _wait_for(lambda: p.poll() is not None or in_score(out, log.read_text(errors="replace")),
                  600, "scoring to start")
        assert p.poll() is None, log.read_text()[-3000:]
        (os.killpg if group else os.kill)(p.pid, sig)
        t0 = time.monotonic()
        rc = p.wait(timeout=60)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert rc == 128 + sig, f"rc {rc}\n{text[-3000:]}"
    assert took < 20, f"took {took:.1f} s to stop"
    assert MESSAGE in text
    assert "*** SIGTERM received" not in text and "*** " not in text      # no C++ failure dump
    assert not (out / "curate.lock").exists()
    # finished records were flushed: the rerun redoes only what was in flight
    resumed = run_build(args, out, out.parent / "resume.log")
    assert resumed.rc == 0, resumed.log[-3000:]
    assert compare(served["ref"], outcome(out)) == []
    assert temp_files(out) == []


@pytest.mark.slow
def test_sigterm_during_scoring_exits_143_and_resumes_identical(served):
    _interrupt_during_score(served, signal.SIGTERM, group=False, name="int_term")


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_exits_130_and_resumes_identical(served):
    _interrupt_during_score(served, signal.SIGINT, group=True, name="int_int")


@pytest.mark.slow
def test_a_second_build_on_a_running_output_refuses_and_the_first_ends_identical(served):
    out = served["tmp"].mktemp("int_two") / "out"
    args = build_args(out, served["src"], served["cfg"])
    first = _start(args, out.parent / "first.log")
    try:
        _wait_for(lambda: (out / "curate.lock").exists() or first.poll() is not None, 120, "the lock")
        t0 = time.monotonic()
        second = subprocess.run(args, capture_output=True, text=True, env=build_env(), cwd=str(REPO),
                                timeout=120)
        took = time.monotonic() - t0
        assert second.returncode == 2, second.stdout + second.stderr
        assert "in use by" in second.stderr and f"pid {first.pid}" in second.stderr
        assert took < 30, f"refusal took {took:.1f} s"
        rc = first.wait(timeout=900)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert rc == 0, (out.parent / "first.log").read_text()[-3000:]
    assert compare(served["ref"], outcome(out)) == []
