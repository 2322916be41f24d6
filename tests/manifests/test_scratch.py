"""Scratch space outside the output (manifests.scratch): finished files enter the output in
one rename (or a copy and a rename across file systems), failed ones never do, and the
scratch folders of ended processes are cleared while running ones are kept."""
from __future__ import annotations

import errno
import os
import subprocess

import pytest

from manifests import scratch
from manifests.atomic import set_write_guard


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
    assert list((root / f"p{os.getpid()}").iterdir()) == []


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
    assert list((root / f"p{os.getpid()}").iterdir()) == []


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


def test_stale_scratch_folders_of_ended_processes_are_removed(root):
    p = subprocess.Popen(["true"])
    p.wait()
    dead = root / f"p{p.pid}"
    (dead / ".clip.abc").mkdir(parents=True)
    (dead / ".clip.abc" / "clip.mp4").write_bytes(b"left by a killed worker")
    mine = root / f"p{os.getpid()}"
    (mine / ".x").mkdir(parents=True)
    other = root / "not-a-process-folder"
    other.mkdir()
    assert scratch.remove_stale() == 1
    assert not dead.exists() and mine.exists() and other.exists()
    assert scratch.remove_stale(root / "missing") == 0


def test_the_default_scratch_folder_must_be_this_users_own(tmp_path, monkeypatch):
    monkeypatch.delenv(scratch.SCRATCH_ENV, raising=False)
    monkeypatch.setattr(scratch.tempfile, "gettempdir", lambda: str(tmp_path))
    planted = tmp_path / "elsewhere"
    planted.mkdir()
    (tmp_path / f"curate-scratch-{os.getuid()}").symlink_to(planted)
    with pytest.raises(PermissionError, match="CURATE_SCRATCH"):
        with scratch.scratch_path(tmp_path / "out" / "clip.mp4"):
            pass
    assert list(planted.iterdir()) == [] and not (tmp_path / "out" / "clip.mp4").exists()
