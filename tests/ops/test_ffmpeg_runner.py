"""The one ffmpeg runner: ffmpeg ends with the process that started it (a killed build's
worker leaves no ffmpeg writing under --out), and its errors stay what callers expect."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from manifests.faults import EnvironmentFault

from curate.ops.ffmpeg import FfmpegError, _death_signal_prefix, run_ffmpeg

RUNNER = """
import sys
from curate.ops.ffmpeg import run_ffmpeg
run_ffmpeg(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
            "testsrc2=size=64x64:rate=25:duration=60", "-f", "null", "-"], timeout=120)
"""


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[-1].split()[1] == str(pid):
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not _death_signal_prefix(), reason="util-linux setpriv --pdeathsig missing")
def test_ffmpeg_dies_with_the_process_that_started_it():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen([sys.executable, "-c", RUNNER], env=env)
    try:
        deadline = time.monotonic() + 30
        kids: list[int] = []
        while not kids and time.monotonic() < deadline:
            time.sleep(0.1)
            kids = _children(parent.pid)
        assert kids, "ffmpeg did not start"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while any(map(_alive, kids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, kids)), "ffmpeg outlived the process that started it"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_errors_are_unchanged():
    with pytest.raises(FfmpegError) as e:
        run_ffmpeg(["ffmpeg", "-hide_banner", "-i", "/nonexistent/input.mp4", "-f", "null", "-"], 30)
    assert e.value.returncode not in (None, 0) and "nonexistent" in e.value.stderr
    # a missing program is the machine's fault, never an item's (issue 23)
    with pytest.raises(EnvironmentFault, match="not found on PATH"):
        run_ffmpeg(["ffmpeg-that-is-not-installed", "-version"], 30)
