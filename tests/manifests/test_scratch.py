"""Scratch space outside the output (manifests.scratch): finished files enter the output in
one rename (or a copy and a rename across file systems), failed ones never do, and the
scratch folders of ended processes are cleared while running ones are kept."""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from manifests import scratch
from manifests.atomic import set_write_guard
from manifests.faults import EnvironmentFault


@pytest.fixture()
def root(tmp_path, monkeypatch):
    r = tmp_path / "scratch"
    monkeypatch.setenv(scratch.SCRATCH_ENV, str(r))
    return r


def test_a_finished_file_is_renamed_in_and_nothing_is_left(root, tmp_path):
    dst = tmp_path / "out" / "media" / "clip.mp4"
    with scratch.scratch_path(dst) as tmp:
        assert root in tmp.parents and tmp.name == "clip.mp4"
        tmp.write_bytes(b"clip")
        assert not dst.parent.exists() or list(dst.parent.iterdir()) == []
    assert dst.read_bytes() == b"clip"
    assert oct(dst.stat().st_mode & 0o777) == oct(0o644)
    assert list(dst.parent.iterdir()) == [dst]
    assert list(root.iterdir()) == []       # its own empty folder went with the last use


def test_a_failed_write_leaves_the_target_as_it_was(root, tmp_path):
    dst = tmp_path / "out" / "clip.mp4"
    dst.parent.mkdir()
    dst.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with scratch.scratch_path(dst) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("ffmpeg failed")
    assert dst.read_bytes() == b"old"
    assert list(dst.parent.iterdir()) == [dst]
    assert list(root.iterdir()) == []


def test_across_file_systems_the_file_is_copied_then_renamed(root, tmp_path, monkeypatch):
    dst = tmp_path / "out" / "seg.mp4"
    real = os.replace
    calls = []

    def replace(a, b):
        calls.append((str(a), str(b)))
        if len(calls) == 1:          # the scratch file onto the target: another device
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(a, b)
    monkeypatch.setattr(os, "replace", replace)
    with scratch.scratch_path(dst) as tmp:
        tmp.write_bytes(b"x" * 100_000)
    assert dst.read_bytes() == b"x" * 100_000
    assert len(calls) == 2 and calls[1][0].startswith(str(dst.parent / ".seg.mp4."))
    assert list(dst.parent.iterdir()) == [dst]


def test_the_write_guard_runs_before_a_commit(root, tmp_path):
    dst = tmp_path / "out" / "clip.mp4"
    seen = []
    set_write_guard(lambda: seen.append("checked"))
    try:
        with scratch.scratch_path(dst) as tmp:
            tmp.write_bytes(b"c")
            assert seen == []
    finally:
        set_write_guard(None)
    assert seen and dst.exists()


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _curate_folder(root, pid, host=None, token="0123456789abcdef", start=None):
    d = root / f"p{pid}.{token}"
    (d / ".clip.abc").mkdir(parents=True)
    (d / ".clip.abc" / "clip.mp4").write_bytes(b"left by a killed worker")
    (d / scratch.MARKER).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                "pid_start": start, "token": token}))
    return d


def test_stale_scratch_folders_of_ended_processes_are_removed(root):
    root.mkdir()
    dead = _curate_folder(root, _dead_pid())
    reused = _curate_folder(root, os.getpid(), token="feedfeedfeedfeed", start="1")
    with scratch.scratch_dir("x") as mine:
        assert scratch.read_marker(mine.parent)["pid"] == os.getpid()
        assert scratch.remove_stale() == 2
        assert mine.exists()
    assert not dead.exists() and not reused.exists()
    assert scratch.remove_stale(root / "missing") == 0


def test_a_users_folder_in_curate_scratch_survives(root, caplog):
    """Issue 23: CURATE_SCRATCH pointed at a folder holding the user's own ``p<digits>/``."""
    root.mkdir()
    pid = _dead_pid()
    users = root / f"p{pid}"
    users.mkdir()
    (users / "thesis.tex").write_text("mine")
    # look-alikes: a marker that is not curate's (wrong types, another folder's token, a link)
    fake = root / f"p{pid}.aaaa"
    fake.mkdir()
    (fake / scratch.MARKER).write_text(json.dumps({"pid": str(pid), "host": socket.gethostname(),
                                                   "token": "aaaa"}))
    moved = _curate_folder(root, pid, token="bbbb")
    moved.rename(root / f"p{pid}.cccc")
    (root / "notes.txt").write_text("x")
    with caplog.at_level(logging.INFO, logger="manifests.scratch"):
        assert scratch.remove_stale() == 0
        assert scratch.remove_stale() == 0
    assert (users / "thesis.tex").read_text() == "mine"
    assert fake.exists() and (root / f"p{pid}.cccc").exists() and (root / "notes.txt").exists()
    said = [r.getMessage() for r in caplog.records if "did not make" in r.getMessage()]
    assert len(said) == 1 and str(root) in said[0]          # reported once


_HOLD = """
import sys, time
from manifests import scratch
with scratch.scratch_dir("held") as d:
    print(d, flush=True)
    sys.stdin.readline()
"""


def test_two_processes_sharing_scratch_never_remove_each_others_live_folders(root):
    """Two builds (or two nodes) on one scratch folder: each one's cleanup keeps the other's
    live folder; another host's folder is never ours to judge."""
    root.mkdir()
    env = {**os.environ, scratch.SCRATCH_ENV: str(root), "PYTHONPATH": os.getcwd()}
    other = subprocess.Popen([sys.executable, "-c", _HOLD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        theirs = Path(other.stdout.readline().strip())
        node = _curate_folder(root, _dead_pid(), host="other-node")
        with scratch.scratch_dir("mine") as mine:
            assert scratch.remove_stale() == 0
            r = subprocess.run([sys.executable, "-c", "from manifests import scratch; "
                                "print(scratch.remove_stale())"], env=env, capture_output=True,
                               text=True, timeout=60)
            assert r.stdout.strip() == "0", r.stderr
            assert mine.exists() and theirs.exists() and node.exists()
    finally:
        other.communicate("\n", timeout=60)
    assert not theirs.parent.exists()            # its own process removed it at the end
    assert sorted(p.name for p in root.iterdir()) == [node.name]


def test_a_command_leaves_no_empty_scratch_folder(root):
    root.mkdir()
    env = {**os.environ, scratch.SCRATCH_ENV: str(root), "PYTHONPATH": os.getcwd()}
    code = ("from manifests import scratch\n"
            "for i in range(3):\n"
            "    with scratch.scratch_dir('a'):\n"
            "        with scratch.scratch_dir('b'): pass\n"
            "scratch.preflight(0)\n")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert list(root.iterdir()) == []


def test_the_default_scratch_folder_must_be_this_users_own(tmp_path, monkeypatch):
    monkeypatch.delenv(scratch.SCRATCH_ENV, raising=False)
    monkeypatch.setattr(scratch.tempfile, "gettempdir", lambda: str(tmp_path))
    planted = tmp_path / "elsewhere"
    planted.mkdir()
    (tmp_path / f"curate-scratch-{os.getuid()}").symlink_to(planted)
    with pytest.raises(EnvironmentFault, match="CURATE_SCRATCH"):
        with scratch.scratch_path(tmp_path / "out" / "clip.mp4"):
            pass
    assert list(planted.iterdir()) == [] and not (tmp_path / "out" / "clip.mp4").exists()
