"""Issue 23: a build killed with SIGKILL leaves no process of its local Ray behind (the
raylet's agents used to wait minutes on the dead GCS; ``curate.execution.reaper`` ends them)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from curate.execution import reaper

_DRIVER = """
import time
from curate.execution.ray import RayExecutor
from curate.execution.spec import StageSpec

def factory():
    def fn(item):
        time.sleep(120)
        return {"t": [{"k": item["key"]}]}
    return fn

ex = RayExecutor(workers=2)
for _ in ex.run(StageSpec("sleepy", factory, lambda it, m: {"t": []}), [{"key": "a"}, {"key": "b"}]):
    pass
"""


def _descendants(root: int) -> dict[int, str]:
    """pid -> start time of every process below ``root``."""
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := reaper._stat(int(d))) is not None:
            table[int(d)] = st
    out, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, start) in table.items():
            if ppid == parent:
                out[pid] = start
                todo.append(pid)
    return out


def _alive(procs: dict[int, str]) -> list[str]:
    return [reaper._cmdline(p)[:60] for p, start in procs.items()
            if (st := reaper._stat(p)) is not None and st[1] == start]


@pytest.mark.slow
def test_no_ray_process_20_s_after_a_kill_9_of_the_driver():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    drv = subprocess.Popen([sys.executable, "-c", _DRIVER], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        procs: dict[int, str] = {}
        while time.monotonic() < deadline:
            procs = _descendants(drv.pid)
            titles = [reaper._cmdline(p) for p in procs]
            if sum(t.startswith("ray::_task_body") for t in titles) >= 2 and \
                    any(t.startswith("ray::DashboardAgent") for t in titles):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the local Ray did not start its tasks: {titles}")
        time.sleep(2)                             # the reaper's first look
        procs = _descendants(drv.pid)
        assert len(_alive(procs)) >= 5            # gcs, raylet, agents, workers, ...
        os.kill(drv.pid, signal.SIGKILL)
        drv.wait()
        time.sleep(20)
        assert _alive(procs) == []
    finally:
        if drv.poll() is None:
            drv.kill()
            drv.wait()


def test_the_reaper_kills_only_what_it_noted_with_the_same_start(tmp_path):
    p = subprocess.Popen(["sleep", "60"])
    q = subprocess.Popen(["sleep", "60"])
    try:
        start = reaper._stat(p.pid)[1]
        assert reaper.kill_all({p.pid: start, q.pid: "1"}) == 1     # q: a reused pid
        assert p.wait(timeout=10) == -signal.SIGKILL and q.poll() is None
    finally:
        q.kill()
        q.wait()


_TREE = "import subprocess, sys, time; subprocess.Popen(['ray::' + sys.argv[1], '60'], " \
        "executable='sleep'); time.sleep(60)"


def test_the_reaper_notes_only_its_own_session(tmp_path):
    """The processes of another Ray session below the same driver (a Ray it started before
    or after: tests, a library caller) are never noted, however they are titled: killing
    another session's agent would take that session's raylet, and its driver, down."""
    import shutil
    sleep = shutil.which("sleep")
    tree = _TREE.replace("'sleep'", repr(sleep))
    mine = subprocess.Popen([sys.executable, "-c", tree, "Mine", "--log_dir=/tmp/ray/session_mine/logs"])
    other = subprocess.Popen([sys.executable, "-c", tree, "Other", "--log_dir=/tmp/ray/session_other/logs"])
    stray = subprocess.Popen(["ray::Stray", "60"], executable=sleep)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_descendants(os.getpid())) < 5:
            time.sleep(0.1)
        titles = sorted(reaper._cmdline(p).split()[0] for p in reaper.ray_processes(os.getpid(), "session_mine"))
        assert titles == [sys.executable, "ray::Mine"]
        # without a session name (a Ray that does not tell it): the driver's ray:: processes
        titles = sorted(reaper._cmdline(p).split()[0] for p in reaper.ray_processes(os.getpid(), ""))
        assert titles == ["ray::Mine", "ray::Other", "ray::Stray"]
    finally:
        for p in (mine, other, stray):
            for child in _descendants(p.pid):
                os.kill(child, signal.SIGKILL)
            p.kill()
            p.wait()
