"""One writer per output (issue 14, finding 3): the lock in ``<out>`` names its holder, a
live holder makes a second writer refuse at once, a dead one is taken over and said so."""
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from curate.execution import lock
from curate.execution.lock import LOCK_NAME, OutputLocked, output_lock


def _holder(pid, host=None, start=None):
    return {"pid": pid, "host": host or socket.gethostname(), "pid_start": start,
            "started": "2026-01-01T00:00:00+00:00", "command": "curate build demo --out x"}


def test_the_lock_names_pid_host_start_and_goes_at_the_end(tmp_path):
    with output_lock(tmp_path, "curate build demo"):
        h = json.loads((tmp_path / LOCK_NAME).read_text())
        assert h["pid"] == os.getpid() and h["host"] == socket.gethostname()
        assert h["started"] and h["command"] == "curate build demo"
        with output_lock(tmp_path, "nested"):          # reentrant in one process
            pass
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_live_holder_makes_a_second_writer_refuse_at_once(tmp_path):
    p = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps(_holder(p.pid, start=lock._proc_start(p.pid))))
        t0 = time.monotonic()
        with pytest.raises(OutputLocked, match=rf"in use by .*pid {p.pid} on {socket.gethostname()}"):
            with output_lock(tmp_path, "second"):
                pass
        assert time.monotonic() - t0 < 2
    finally:
        p.kill()
        p.wait()


def test_a_dead_holder_is_taken_over_and_said_so(tmp_path, caplog):
    p = subprocess.Popen(["true"])
    p.wait()                                            # a pid that is gone
    (tmp_path / LOCK_NAME).write_text(json.dumps(_holder(p.pid)))
    with caplog.at_level(logging.WARNING):
        with output_lock(tmp_path, "new"):
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert any("taking over the lock" in r.getMessage() and f"process {p.pid} is gone" in r.getMessage()
               for r in caplog.records)


def test_a_reused_pid_is_not_the_holder(tmp_path, caplog):
    # our own pid, but a different process start time: the recorded holder is gone
    (tmp_path / LOCK_NAME).write_text(json.dumps(_holder(os.getppid(), start="1")))
    with caplog.at_level(logging.WARNING):
        with output_lock(tmp_path, "new"):
            pass
    assert any("is now another process" in r.getMessage() for r in caplog.records)


def test_another_hosts_lock_is_stale_only_past_the_timeout(tmp_path, caplog):
    path = tmp_path / LOCK_NAME
    path.write_text(json.dumps(_holder(12345, host="other-node")))
    with pytest.raises(OutputLocked, match="other-node"):
        lock.acquire(tmp_path, "x")
    old = time.time() - lock.STALE_AFTER_S - 60
    os.utime(path, (old, old))
    with caplog.at_level(logging.WARNING):
        with output_lock(tmp_path, "new"):
            pass
    assert any("has not refreshed it" in r.getMessage() for r in caplog.records)


def test_a_read_only_output_is_one_clear_error(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        # root writes into a 0555 folder: the read-only file system's refusal, as the OS gives it
        def refuse(path, holder):
            raise PermissionError(13, "Permission denied", str(path))
        monkeypatch.setattr(lock, "_create", refuse)
    ro.chmod(0o555)
    try:
        with pytest.raises(ValueError, match=r"cannot write into the output folder .*ro \(Permission denied\): "
                                             r"choose a writable --out"):
            with output_lock(ro, "x"):
                pass
    finally:
        ro.chmod(0o755)
    # a path below a file cannot be an output folder either
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="cannot create the output folder"):
        with output_lock(f / "out", "x"):
            pass


def test_a_stage_command_refuses_on_a_locked_output(tmp_path):
    """`curate select` (a command that writes) on an output a live build holds."""
    p = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps(_holder(p.pid, start=lock._proc_start(p.pid))))
        (tmp_path / "run.json").write_text(json.dumps({"recipe": {"name": "demo"}, "options": {}}))
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "curate.cli", "select", str(tmp_path)],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "COLUMNS": "200"})
        assert r.returncode == 2, r.stderr
        assert f"pid {p.pid}" in r.stderr and "in use by" in r.stderr
        assert time.monotonic() - t0 < 60
    finally:
        p.kill()
        p.wait()


_BAD_LOCKS = {
    "pid_text": lambda p: p.write_text(json.dumps({**_holder(1), "pid": "abc"})),
    "pid_list": lambda p: p.write_text(json.dumps({**_holder(1), "pid": [1, 2]})),
    "host_number": lambda p: p.write_text(json.dumps({**_holder(1), "host": 7})),
    "garbage": lambda p: p.write_bytes(b"\x00\xffnot a lock{"),
    "empty": lambda p: p.write_bytes(b""),
    "folder": lambda p: p.mkdir(),
}


@pytest.mark.parametrize("kind", sorted(_BAD_LOCKS))
def test_an_invalid_lock_is_named_and_taken_over_once_stale(tmp_path, caplog, kind):
    """Issue 23: a lock that is not a valid one (bad pid, wrong types, a folder, garbage) is
    one clear refusal naming the file while fresh, taken over once stale, nothing left."""
    path = tmp_path / LOCK_NAME
    _BAD_LOCKS[kind](path)
    t0 = time.monotonic()
    with pytest.raises(OutputLocked, match=rf"lock file {path}: it.*taken over once") as e:
        lock.acquire(tmp_path, "x")
    assert "\n" not in str(e.value) and time.monotonic() - t0 < 5
    old = time.time() - lock.INVALID_STALE_S - 5
    os.utime(path, (old, old))
    with caplog.at_level(logging.WARNING):
        with output_lock(tmp_path, "new"):
            assert json.loads(path.read_text())["pid"] == os.getpid()
    assert any("taking over the lock" in r.getMessage() and str(path) in r.getMessage()
               for r in caplog.records)
    assert list(tmp_path.iterdir()) == []          # no .curate.lock.*.stale.tmp left


def test_a_huge_lock_file_is_not_read_whole(tmp_path):
    path = tmp_path / LOCK_NAME
    with open(path, "wb") as f:
        f.truncate(1 << 30)                          # a sparse 1-GB file
    with pytest.raises(OutputLocked, match="bytes"):
        lock.acquire(tmp_path, "x")


def test_a_folder_lock_with_content_is_left_alone(tmp_path):
    path = tmp_path / LOCK_NAME
    path.mkdir()
    (path / "keep").write_text("x")
    old = time.time() - lock.INVALID_STALE_S - 5
    os.utime(path, (old, old))
    with pytest.raises(OutputLocked, match="not empty"):
        lock.acquire(tmp_path, "x")
    assert (path / "keep").read_text() == "x"
