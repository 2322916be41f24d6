"""A recipe that gates on DeSync (``desync.max``, issue 27) from the start of a build: the
first select cannot know a clip's DeSync, certify measures every merged clip, and the
desync-gate stage decides (before it, such a build rejected every clip as "no certificate"
and shipped nothing). With repair on, a clip the repair will shift back is left to the
repair and ships only repaired; one whose repair the cut refuses is rejected for its DeSync.
The media are the demo's generated videos (their truth: how they were made)."""
from __future__ import annotations

import json
import shutil

import pytest

import curate.demo.offline as offline
from curate.config import recipes
from curate.demo.synth import _write_sources, corpus_specs, render
from curate.execution.local import LocalExecutor
from manifests.schemas import read_rows

MAX_S = 0.2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The demo's 3 shifted videos and 2 in-sync flash videos, with their truth."""
    specs = [s for s in corpus_specs(32, seed=0) if s.kind == "flash_click_shifted"]
    specs += [s for s in corpus_specs(32, seed=0) if s.kind == "flash_click"][:2]
    synth = tmp_path_factory.mktemp("desync") / "synth"
    for spec in specs:
        render(spec, synth / "videos" / f"{spec.id}.mp4")
    (synth / "truth.json").write_text(json.dumps({"seed": 0, "videos": [s.truth() for s in specs]}))
    _write_sources(synth / "sources.csv", specs, None)
    return synth, {s.id: s.audio_offset for s in specs}


def _build(tmp_path, corpus, monkeypatch, repair: bool):
    synth, truth = corpus
    shutil.copytree(synth, tmp_path / "out" / "synth")

    def gated(name, config=None):
        r = recipes.get_recipe(name, config)
        r["desync"]["max"] = MAX_S
        return r
    monkeypatch.setattr(offline, "get_recipe", gated)
    lines: list[str] = []
    offline.build_demo(tmp_path / "out", LocalExecutor(), options={"repair": repair, "workers": 1},
                       echo=lines.append)
    rows = read_rows(tmp_path / "out", "selected")
    by_video = {}
    for r in rows:
        by_video.setdefault(r["source_id"].split("_")[0], []).append(r)
    return "\n".join(lines), rows, by_video, truth


@pytest.mark.slow
def test_desync_max_from_the_first_build_rejects_the_shifted_clips_only(tmp_path, corpus, monkeypatch):
    text, rows, by_video, truth = _build(tmp_path, corpus, monkeypatch, repair=False)
    assert "== desync-gate" in text and "certify: " in text
    shipped = {r["key"] for r in read_rows(tmp_path / "out", "shards")}
    for video, rs in by_video.items():
        for r in rs:
            assert r["desync_s"] is not None, r              # every clip was measured
            if truth[video] == 0 and r["desync_s"] <= MAX_S:
                assert r["status"] == "ok" and r["key"] in shipped, r
            if r["desync_s"] > MAX_S:
                assert r["status"] == "rejected" and "desync" in r["error"] and r["key"] not in shipped
    in_sync = [r for v, rs in by_video.items() if truth[v] == 0 for r in rs]
    assert in_sync and all(r["status"] == "ok" for r in in_sync), in_sync
    assert not any(r["status"] == "ok" for v, rs in by_video.items() if truth[v] != 0 for r in rs)
    # decisions later: `curate select --set desync.max=...` over the stored certificates
    from curate.build import stage_value
    from curate.config.run_state import load_run
    out = tmp_path / "out"
    for value, shifted_ok in (("0.5", True), ("none", True), ("0.2", False)):
        summary = stage_value("select", out, load_run(out), overrides=[f"desync.max={value}"])
        got = read_rows(out, "selected")
        assert summary["desync_max"] == (None if value == "none" else float(value))
        assert all(r["status"] == "ok" for r in got if truth[r["source_id"].split("_")[0]] == 0)
        assert any(r["status"] == "ok" for r in got if truth[r["source_id"].split("_")[0]] != 0) == shifted_ok
    # a bad value is refused and not recorded: the next select runs
    with pytest.raises(ValueError, match="desync.max takes seconds"):
        stage_value("select", out, load_run(out), overrides=["desync.max=abc"])
    assert stage_value("select", out, load_run(out), overrides=["desync.max=0.5"])["desync_max"] == 0.5


@pytest.mark.slow
def test_with_repair_the_gate_leaves_repairable_clips_to_the_repair(tmp_path, corpus, monkeypatch):
    text, rows, by_video, truth = _build(tmp_path, corpus, monkeypatch, repair=True)
    shifted = [r for v, rs in by_video.items() if truth[v] != 0 for r in rs]
    repaired = [r for r in shifted if r["repaired"]]
    assert len(repaired) == 5 and all(r["status"] == "ok" for r in repaired), text
    # the one the cut refuses (its late audio runs past the file's end) ships no more
    rest = [r for r in shifted if not r["repaired"]]
    assert [(r["source_id"].split("_")[0], r["start"]) for r in rest] == [("synth0030", 7.0)]
    assert rest[0]["status"] == "rejected" and rest[0]["error"].startswith("desync 0.40 s > max 0.2, not repaired")
    assert "repair refused" in rest[0]["error"]
    in_sync = [r for v, rs in by_video.items() if truth[v] == 0 for r in rs]
    assert in_sync and all(r["status"] == "ok" and not r["repaired"] for r in in_sync)
    assert f"== verify: OK; {len(repaired)} repaired" in text
    from curate.reports.stats import collect
    repairs = collect(tmp_path / "out")["repairs"]
    assert repairs["repaired (rescore found offset 0)"] == 5
    assert repairs["rejected (desync above max), refused: the shifted audio would run past the source"] == 1
