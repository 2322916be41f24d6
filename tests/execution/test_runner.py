"""The checkpointed stage runner: resume, skip finished work, record failures."""
import functools
import json

import pytest

from curate.config.recipes import get_recipe, recipe_names
from curate.execution.local import LocalExecutor
from curate.execution.spec import StageSpec
from curate.execution.checkpoints import read_records, run_stage


def _square_factory(calls):
    def fn(item):
        calls.append(item["key"])
        if item["x"] == 3:
            raise ValueError("bad input 3")
        return {"downloads": [{"source_id": item["key"], "status": "ok", "duration": item["x"] ** 2}]}
    return fn


def _err(item, error):
    return {"downloads": [{"source_id": item["key"], "status": "failed", "error": error}]}


def _items(n):
    return [{"key": f"s{i}", "x": i} for i in range(n)]


def test_failure_is_recorded_and_others_survive(tmp_path):
    calls = []
    spec = StageSpec("t", functools.partial(_square_factory, calls), _err)
    res = run_stage(tmp_path, spec, _items(6), LocalExecutor(), progress=False)
    rows = {r["source_id"]: r for r in res.outputs["downloads"]}
    assert len(rows) == 6
    assert rows["s3"]["status"] == "failed" and "bad input 3" in rows["s3"]["error"]
    assert rows["s5"]["duration"] == 25


def test_rerun_skips_finished_work(tmp_path):
    calls = []
    spec = StageSpec("t", functools.partial(_square_factory, calls), _err)
    run_stage(tmp_path, spec, _items(5), LocalExecutor(), progress=False)
    assert len(calls) == 5
    res = run_stage(tmp_path, spec, _items(7), LocalExecutor(), progress=False)
    assert calls[5:] == ["s5", "s6"]           # only the new items ran
    assert res.ran == 2 and res.skipped == 5
    assert len(res.outputs["downloads"]) == 7


def test_killed_stage_redoes_only_the_unrecorded_items(tmp_path):
    calls = []
    spec = StageSpec("t", functools.partial(_square_factory, calls), _err)

    class Killed(Exception):
        pass

    class DyingExecutor(LocalExecutor):
        def run(self, spec, items):
            for it, o in super().run(spec, items):
                if it["key"] == "s4":
                    raise Killed()
                yield it, o

    with pytest.raises(Killed):
        run_stage(tmp_path, spec, _items(6), DyingExecutor(), flush_items=2, progress=False)
    parts = sorted((tmp_path / "work" / "t").glob("part-*.jsonl"))
    assert [[r["key"] for r in read_records(p)] for p in parts] == \
        [["s0", "s1"], ["s2", "s3"]]
    calls.clear()
    res = run_stage(tmp_path, spec, _items(6), LocalExecutor(), progress=False)
    assert calls == ["s4", "s5"]
    assert len(res.outputs["downloads"]) == 6


def test_recipes_are_complete_data(tmp_path):
    for name in recipe_names():
        if name == "custom":
            continue
        r = get_recipe(name)
        assert r["windows"] == {"length": 3.0, "stride": 0.5}
        assert set(r["gate"]) <= set(r["filters"])
    assert get_recipe("avsync15")["select"]["per_class"] == 100
    assert get_recipe("landscape")["download"]["min_width"] == 1280
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"base": "avsync15", "windows": {"stride": 1.0}}))
    r = get_recipe("custom", cfg)
    assert r["windows"] == {"length": 3.0, "stride": 1.0} and r["classes"] == "avsync15"
    cfg.write_text(json.dumps({"windw": 1}))
    with pytest.raises(ValueError, match="unknown recipe keys"):
        get_recipe("custom", cfg)
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("nope")


def test_build_without_weights_fails_early_naming_the_option(tmp_path):
    import subprocess
    import sys
    src = tmp_path / "vggsound.csv"
    src.write_text('AbCdEfGhIjK,30,"dog barking",train\n')
    p = subprocess.run([sys.executable, "-m", "curate.cli", "build", "avsync15", "--sources", str(src),
                        "--out", str(tmp_path / "out"), "--executor", "local"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert "--imagebind-checkpoint" in p.stderr
    assert not (tmp_path / "out" / "manifests").exists()     # nothing was downloaded first


def test_redo_runs_finished_items_again_and_replaces_their_rows(tmp_path):
    calls = []
    spec = StageSpec("t", functools.partial(_square_factory, calls), _err)
    run_stage(tmp_path, spec, _items(4), LocalExecutor(), progress=False)
    calls.clear()
    res = run_stage(tmp_path, spec, _items(4), LocalExecutor(), progress=False, redo={"s1"})
    assert calls == ["s1"]
    assert len(res.outputs["downloads"]) == 4


def test_download_retry_failed_retries_only_transient_failures(tmp_path):
    from curate.config.run_state import new_run
    from curate.build import stage_value
    from curate.demo.loopback import LoopbackServer
    from curate.demo.synth import make_event_video

    media = tmp_path / "m"
    media.mkdir()
    make_event_video(media / "a.mp4", duration=3.0, event_times=[1.0], seed=0)
    out = tmp_path / "out"
    with LoopbackServer(media, stall={"a.mp4"}, stall_seconds=3.0) as server:
        src = tmp_path / "s.csv"
        src.write_text("id,url,start,end,label,split\n"
                       f"a,{server.url('a.mp4')},0,3,x,train\n"
                       f"gone,{server.url('gone.mp4')},0,3,x,train\n")
        recipe = get_recipe("demo")
        recipe["download"].update(retries=0, socket_timeout=1.0)
        run = new_run(out, recipe, {})
        stage_value("sources", out, run, sources=src)
        rows = {r["source_id"][:4]: r for r in stage_value("download", out, run, LocalExecutor())}
        assert rows["a_00"]["reason"] == "timeout" and rows["gone"]["reason"] == "http_error"
        server.stall.clear()
        n = server.count()
        rows = {r["source_id"][:4]: r for r in stage_value("download", out, run, LocalExecutor())}
        assert server.count() == n and rows["a_00"]["status"] == "failed"      # plain rerun: finished work
        rows = {r["source_id"][:4]: r for r in
                stage_value("download", out, run, LocalExecutor(), retry_failed=True)}
        assert rows["a_00"]["status"] == "ok"
        assert rows["gone"]["status"] == "failed"
        assert server.count("gone.mp4") == 1          # a 404 is final: never asked again


def test_checkpoint_index_reads_key_and_fingerprint_without_the_outputs(tmp_path):
    import json

    from curate.execution.checkpoints import Checkpoint, _head

    ck = Checkpoint(tmp_path, "s")
    recs = [{"key": 'odd "key" \\ 1', "fp": "f1", "out": {"t": [{"x": 1}]}},
            {"key": "k2", "fp": "f2", "out": {"t": []}, "node": "abc"}]
    ck.write_part(recs)
    ck.write_part([{"key": "k2", "fp": "f3", "out": {}}])
    assert ck.index() == {'odd "key" \\ 1': ("f1", 0, 0), "k2": ("f3", 1, 0)}
    line = json.dumps(recs[1])
    assert _head(line) == {"key": "k2", "fp": "f2"}
    # a line in another key order is parsed whole, not misread
    assert _head(json.dumps({"fp": "f", "key": "k", "out": {}})) is None
