"""The streaming engine: resume after partial completion, fingerprints, worker death,
per-item timeout, CPU limits, a finished stage starting no work."""
import functools
import json
import os
import signal
import time

import pytest

from curate.execution.ray import available_cpus, cgroup_cpu_limit
from curate.execution.checkpoints import Checkpoint, run_stage
from curate.execution.local import LocalExecutor
from curate.execution.spec import StageSpec


def _factory(calls_file=None, sleep_key=None, kill_key=None, sleep_s=30.0, loads_file=None,
             load_s=0.0):
    time.sleep(load_s)              # a model's load
    if loads_file:
        with open(loads_file, "a") as f:
            f.write("load\n")

    def fn(item, *payload):
        if calls_file:
            with open(calls_file, "a") as f:
                f.write(item["key"] + "\n")
        if item["key"] == kill_key:
            os.kill(os.getpid(), signal.SIGKILL)
        if item["key"] == sleep_key:
            time.sleep(sleep_s)
        if item["x"] == 3:
            raise ValueError("bad input 3")
        return {"downloads": [{"source_id": item["key"], "status": "ok", "duration": float(item["x"])}]}
    return fn


def _err(item, error):
    return {"downloads": [{"source_id": item["key"], "status": "failed", "reason": error.split(" ")[0],
                           "error": error}]}


def _items(n, **extra):
    return [{"key": f"s{i}", "x": i, **extra} for i in range(n)]


def _calls(path):
    return path.read_text().split() if path.exists() else []


def test_resume_after_partial_completion_reruns_only_unfinished(tmp_path):
    calls = tmp_path / "calls"
    spec = StageSpec("t", functools.partial(_factory, str(calls)), _err)

    class Killed(Exception):
        pass

    class Dying(LocalExecutor):
        def run(self, spec, items):
            for it, o in super().run(spec, items):
                if it["key"] == "s5":
                    raise Killed()
                yield it, o

    with pytest.raises(Killed):
        run_stage(tmp_path, spec, _items(8), Dying(), progress=False, flush_items=2)
    done = set(Checkpoint(tmp_path, "t").index())
    assert done == {"s0", "s1", "s2", "s3", "s4"}     # records up to the kill, not a chunk
    calls.unlink()
    ex = LocalExecutor()
    res = run_stage(tmp_path, spec, _items(8), ex, progress=False)
    assert _calls(calls) == ["s5", "s6", "s7"]
    assert res.ran == 3 and res.skipped == 5
    rows = {r["source_id"]: r for r in res.outputs["downloads"]}
    assert len(rows) == 8 and rows["s3"]["status"] == "failed" and "bad input 3" in rows["s3"]["error"]
    assert not res.failures                          # s3 failed in the first run, not this one
    # a finished stage: no executor work at all
    calls.unlink()
    ex2 = LocalExecutor()
    res = run_stage(tmp_path, spec, _items(8), ex2, progress=False)
    assert ex2.started == 0 and res.ran == 0 and not calls.exists()


def test_fingerprint_change_redoes_exactly_the_affected_items(tmp_path):
    calls = tmp_path / "calls"
    items = _items(5)
    spec = StageSpec("t", functools.partial(_factory, str(calls)), _err, params={"p": 1})
    run_stage(tmp_path, spec, items, LocalExecutor(), progress=False)
    calls.unlink()
    items[2] = {**items[2], "label": "relabelled"}          # one item's input changed
    res = run_stage(tmp_path, spec, items, LocalExecutor(), progress=False)
    assert _calls(calls) == ["s2"] and res.ran == 1
    assert len(res.outputs["downloads"]) == 5
    calls.unlink()
    spec2 = StageSpec("t", functools.partial(_factory, str(calls)), _err, params={"p": 2})
    res = run_stage(tmp_path, spec2, items, LocalExecutor(), progress=False)
    assert sorted(_calls(calls)) == [f"s{i}" for i in range(5)]   # a recipe parameter: all


def test_declared_inputs_limit_the_fingerprint(tmp_path):
    calls = tmp_path / "calls"
    spec = StageSpec("t", functools.partial(_factory, str(calls)), _err)
    items = [{"key": f"s{i}", "x": i, "inputs": {"x": i}, "label": "a"} for i in range(3)]
    run_stage(tmp_path, spec, items, LocalExecutor(), progress=False)
    calls.unlink()
    items = [{**it, "label": "b"} for it in items]     # not an input of this stage
    res = run_stage(tmp_path, spec, items, LocalExecutor(), progress=False)
    assert res.ran == 0 and not calls.exists()


# ----------------------------------------------------------------------------- CPU limits

def test_cgroup_cpu_parsing(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2) == 1.5
    assert available_cpus(v2, affinity=set(range(8))) == 2
    assert available_cpus(v2, affinity={0}) == 1
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(v2) is None
    assert available_cpus(v2, affinity=set(range(6))) == 6
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("400000")
    (v1 / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_limit(v1) == 4.0
    assert available_cpus(v1, affinity=set(range(16))) == 4
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1")
    assert cgroup_cpu_limit(v1) is None
    assert cgroup_cpu_limit(tmp_path / "none") is None


# ----------------------------------------------------------------------------- Ray

@pytest.fixture(scope="module")
def ray_ex():
    import sys

    import ray.cloudpickle
    from curate.execution.ray import RayExecutor
    # the item functions live in this test module, which Ray workers cannot import
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ex = RayExecutor(workers=4)
    yield ex
    ex.shutdown()


@pytest.mark.parametrize("stateful", [False, True])
def test_worker_killed_by_signal_is_a_recorded_failure_after_bounded_tries(tmp_path, ray_ex, stateful):
    calls = tmp_path / "calls"
    spec = StageSpec("k", functools.partial(_factory, str(calls), kill_key="s1"), _err,
                     stateful=stateful, max_tries=2)
    res = run_stage(tmp_path, spec, _items(4), ray_ex, progress=False)
    rows = {r["source_id"]: r for r in res.outputs["downloads"]}
    assert rows["s1"]["status"] == "failed"
    assert "worker died" in rows["s1"]["error"] and "after 2 tries" in rows["s1"]["error"]
    assert _calls(calls).count("s1") == 2                     # bounded: exactly max_tries
    assert all(rows[k]["status"] == "ok" for k in ("s0", "s2"))
    assert rows["s3"]["status"] == "failed" and "bad input 3" in rows["s3"]["error"]
    assert res.failures["worker"] == 1


@pytest.mark.parametrize("stateful", [False, True])
def test_per_item_timeout_ends_a_hung_item_without_holding_others(tmp_path, ray_ex, stateful):
    spec = StageSpec("h", functools.partial(_factory, sleep_key="s0", sleep_s=300), _err,
                     stateful=stateful, timeout_s=10.0, concurrency=2)
    t0 = time.monotonic()
    res = run_stage(tmp_path, spec, _items(6), ray_ex, progress=False)
    wall = time.monotonic() - t0
    rows = {r["source_id"]: r for r in res.outputs["downloads"]}
    assert rows["s0"]["status"] == "failed" and rows["s0"]["error"].startswith("timeout")
    assert all(rows[f"s{i}"]["status"] == "ok" for i in (1, 2, 4, 5)), [(k, r["error"]) for k, r in rows.items()]
    assert wall < 120          # not the 300 s the item would sleep


def test_an_actors_slow_start_is_not_its_items_time(tmp_path, ray_ex):
    """The timeout clock of an actor call runs from when the actor is built: a model load
    longer than the item timeout (a loaded machine, a large checkpoint) fails no item."""
    spec = StageSpec("slow", functools.partial(_factory, load_s=6.0), _err, stateful=True,
                     timeout_s=3.0, concurrency=2)
    res = run_stage(tmp_path, spec, _items(4), ray_ex, progress=False)
    rows = {r["source_id"]: r for r in res.outputs["downloads"]}
    assert [rows[f"s{i}"]["status"] for i in (0, 1, 2)] == ["ok"] * 3, \
        [(k, r["error"]) for k, r in rows.items()]


def test_stateful_stage_loads_once_per_actor_and_streams(tmp_path, ray_ex):
    loads = tmp_path / "loads"
    spec = StageSpec("m", functools.partial(_factory, loads_file=str(loads)), _err, stateful=True,
                     concurrency=2, batch_size=3)
    res = run_stage(tmp_path, spec, [{"key": f"s{i}", "x": 10 + i} for i in range(40)], ray_ex,
                    progress=False, flush_items=8)
    assert len(res.outputs["downloads"]) == 40
    assert len(_calls(loads)) == 2                                # two actors, two loads
    assert len(Checkpoint(tmp_path, "m").parts()) >= 5            # records flushed as they came
    started = ray_ex.started
    run_stage(tmp_path, spec, [{"key": f"s{i}", "x": 10 + i} for i in range(40)], ray_ex, progress=False)
    assert ray_ex.started == started                              # finished: no Ray work
    assert len(_calls(loads)) == 2


def _gated_factory():
    from curate.stagekit.gated import gated

    def fn(item, gate):
        permit = gate.acquire()
        t = time.time()
        gate.report(permit, "ok")
        return {"downloads": [{"source_id": item["key"], "status": "ok", "duration": t}]}
    return gated(fn)


def test_one_health_actor_spaces_requests_of_all_workers(ray_ex, tmp_path):
    """A rate is one token bucket (inside the one shared health actor) over every worker:
    the k-th request goes k/4 s after the first, whoever asks."""
    from curate.execution.shared import Shared
    from curate.stagekit.gated import health_shared
    states: list = []
    [(name, control)] = health_shared(None, 4.0).items()
    shared = {name: Shared(control.make, lambda st, final: states.append(st))}
    spec = StageSpec("g", _gated_factory, _err, concurrency=4, shared=shared)
    t_start = time.time()
    res = run_stage(tmp_path, spec, _items(8), ray_ex, progress=False)
    times = sorted(r["duration"] for r in res.outputs["downloads"])
    # the k-th request is never before its slot k/4 s after the first slot (a late worker
    # can only be later), so 8 requests of 4 workers take at least 7/4 s, not two bursts
    assert all(t >= t_start + k / 4 - 0.02 for k, t in enumerate(times)), \
        [round(t - t_start, 3) for t in times]
    assert states and states[-1]["counts"]["requests"] == 8 and states[-1]["state"] == "open"


# ----------------------------------------------------------------------------- issue 14

def _broken_factory():
    raise ValueError("head/diffusion_pytorch_model.bin does not fit the sync classifier "
                     "(--sync-checkpoint): missing keys: fc.0.weight")


@pytest.mark.parametrize("stateful", [False, True])
def test_a_worker_that_cannot_start_stops_the_stage_with_its_text(tmp_path, ray_ex, stateful):
    """An exception in the stage function's construction (a model that does not load) is
    reported with its text at once: no item is recorded as 'worker died', none retried."""
    from curate.execution.spec import WorkerSetupError
    spec = StageSpec("t", _broken_factory, _err, stateful=stateful, max_tries=2)
    t0 = time.monotonic()
    with pytest.raises(WorkerSetupError, match=r"--sync-checkpoint.*missing keys: fc.0.weight"):
        run_stage(tmp_path, spec, _items(6), ray_ex, progress=False)
    assert time.monotonic() - t0 < 60
    assert Checkpoint(tmp_path, "t").index() == {}         # nothing recorded as failed


def test_a_local_ray_announces_loopback(ray_ex):
    import ray
    ray_ex._ensure_ray()
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}


def test_ray_start_is_retried_then_a_clear_error():
    from curate.execution.ray import start_ray
    tries, waits = [], []

    def flaky(**kw):
        tries.append(kw)
        if len(tries) < 3:
            raise Exception("The current node timed out during startup. This could happen because "
                            "some of the raylet failed to startup or the GCS has become overloaded.")
    start_ray(flaky, {"address": "local"}, sleep=waits.append)
    assert len(tries) == 3 and waits == [5.0, 20.0]           # waited longer before each new try

    def dead(**kw):
        raise Exception("GCS has become overloaded")
    with pytest.raises(ValueError, match=r"could not start a local Ray after 3 tries .*overloaded.*--workers"):
        start_ray(dead, {"address": "local"}, sleep=lambda s: None)
    with pytest.raises(ValueError, match=r"--address 10.0.0.1:6379"):
        start_ray(dead, {"address": "10.0.0.1:6379"}, sleep=lambda s: None)
