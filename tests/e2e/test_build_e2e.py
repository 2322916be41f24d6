"""End to end through the real `curate` console script on a local Ray: generated media served
over loopback, real yt-dlp, shots, windows, scoring, selection, shards, stats, and a rerun that
skips finished work. Decisions are checked against the truth `curate synth` recorded."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curate.demo.loopback import LoopbackServer
from curate.demo.synth import synthesize
from manifests.schemas import ALL_SCORES, read_rows

CURATE = [sys.executable, "-m", "curate.cli"]


def _curate(*args, check=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([*CURATE, *map(str, args)], capture_output=True, text=True, env=env, timeout=900)
    if check and p.returncode != 0:
        raise AssertionError(f"curate {' '.join(map(str, args))} failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    truth = synthesize(root, n_videos=8, seed=3)
    return root, truth


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    root, truth = corpus
    out = tmp_path_factory.mktemp("run")
    cfg = out.parent / "cfg.json"
    # the demo recipe without its in-run sync training: every model is random, so only the
    # cheap filters gate and the selection still ends in clips
    cfg.write_text(json.dumps({"base": "demo", "stages": ["sources", "download", "split", "score", "select", "shard"],
                               "select": {"per_class": 2, "test_per_class": 1}}))
    with LoopbackServer(root / "videos") as server:
        src = out.parent / "sources.csv"
        lines = ["id,url,start,end,label,split"]
        for v in truth["videos"]:
            lines.append(f"{v['id']},{server.url(v['id'] + '.mp4')},0,10,{v['label']},{v['split']}")
        lines.append("bad id!,http://127.0.0.1:1/x.mp4,0,10,siren,train")     # rejected, recorded
        (root / "videos" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
        lines.append(f"corrupt,{server.url('corrupt.mp4')},0,10,siren,train")  # fails, recorded
        src.write_text("\n".join(lines) + "\n")
        first = _curate("build", "custom", "--config", cfg, "--sources", src, "--out", out,
                        "--workers", "2", "--allow-random-weights")
        n_first = server.count()
        work_first = _snapshot(out)
        again = _curate("build", "custom", "--config", cfg, "--sources", src, "--out", out,
                        "--workers", "2", "--allow-random-weights")
        n_again = server.count() - n_first
    return out, truth, first, again, n_first, n_again, work_first


def _snapshot(out):
    """Every checkpoint part, manifest and shard file with its mtime."""
    files = [*(out / "work").rglob("part-*.jsonl"), *(out / "manifests").glob("*.parquet"),
             *(out / "shards").glob("*")]
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in files}


def test_manifests_for_every_stage(built):
    out, truth, first, *_ = built
    for table in ("sources", "downloads", "shots", "windows", "decisions", "clips", "selected", "shards"):
        assert (out / "manifests" / f"{table}.parquet").exists(), table
    sources = read_rows(out, "sources")
    assert len(sources) == 10
    bad = [s for s in sources if s["status"] == "rejected"]
    assert len(bad) == 1 and "bad id!" in bad[0]["error"]
    downloads = {d["source_id"].split("_")[0]: d for d in read_rows(out, "downloads")}
    corrupt = downloads.pop("corrupt")       # a corrupt video is recorded and the build goes on
    assert corrupt["status"] == "failed" and corrupt["reason"] == "corrupt" and corrupt["error"]
    assert len(downloads) == 8 and all(d["status"] == "ok" for d in downloads.values())
    assert all(abs(d["duration"] - 10.0) < 0.1 for d in downloads.values())


def test_rerun_skips_finished_work(built):
    out, truth, first, again, n_first, n_again, work_first = built
    assert n_first >= 9
    assert n_again == 0          # every download cached: no request reached the server
    assert "== download" in again.stdout
    for stage in ("download", "split", "score"):
        assert list((out / "work" / stage).glob("part-*.jsonl")), stage
    # the rerun wrote no new checkpoint and rewrote no manifest or shard
    assert _snapshot(out) == work_first


def test_filter_decisions_match_recorded_truth(built):
    out, truth, *_ = built
    windows = read_rows(out, "windows")
    by_source: dict[str, list[dict]] = {}
    for w in windows:
        by_source.setdefault(w["source_id"].split("_")[0], []).append(w)
    th = {"pixel_min": 0.01, "amp_min": 0.03}
    static = [v for v in truth["videos"] if v["static"]]
    silent = [v for v in truth["videos"] if v["silent"]]
    assert static and silent, "the corpus must contain both kinds"
    for v in static:
        ws = by_source[v["id"]]
        assert ws and all(w["pixel_diff"] < th["pixel_min"] for w in ws), v["id"]
    for v in silent:
        ws = by_source[v["id"]]
        assert ws and all(w["amplitude"] < th["amp_min"] for w in ws if w["amplitude"] is not None), v["id"]
        assert all(w["amplitude"] is not None or "rejected by pixel_diff" in (w["amplitude_note"] or "")
                   for w in ws)
    moving = [v for v in truth["videos"] if not v["static"] and not v["silent"]]
    kept_sources = {c["source_id"].split("_")[0] for c in read_rows(out, "clips") if c["status"] == "ok"}
    assert kept_sources and kept_sources <= {v["id"] for v in moving}


def test_stats_text_and_json(built):
    out, *_ = built
    text = _curate("stats", out).stdout
    assert "funnel:" in text and "after pixel_diff" in text and "per class:" in text
    assert "score-only" in text      # random models are flagged
    st = json.loads(_curate("stats", out, "--json").stdout)
    counts = {f["stage"]: f["count"] for f in st["funnel"]}
    assert counts["sources"] == 10 and counts["downloaded"] == 8
    assert counts["windows"] == len(read_rows(out, "windows"))
    assert counts["sharded"] == len(read_rows(out, "shards")) > 0
    assert any("sources rejected" in k for k in st["failures"])
    assert st["failures"].get("download: corrupt") == 1
    html = out / "report.html"
    _curate("stats", out, "--html", html)
    text = html.read_text()
    assert text.count('class="hist"') == len(ALL_SCORES)   # one per score column
    # what was kept, as pictures: one card per selected clip, each with its frame strip
    kept = [r for r in read_rows(out, "selected") if r["status"] == "ok"]
    assert text.count('<section class="strip"') == len({r["class_name"] for r in kept})
    for r in kept:
        assert f'<div class="card" data-name="{r["name"]}"><img class="frames"' in text, r["name"]
    assert '<svg class="chart funnel"' in text and "<pre>" not in text
    _open_in_chromium(html, kept)


def _open_in_chromium(html: Path, kept: list[dict]) -> None:
    """The real run's report as a browser shows it: no block of JSON, the health sentence,
    every kept clip's three-frame picture decoded."""
    from selenium.webdriver.common.by import By
    from tests.browser import chrome, visible_json_blocks
    driver = chrome(html.parent)
    try:
        driver.get(html.as_uri())
        assert visible_json_blocks(driver) == []
        assert "download requests" in driver.find_element(By.ID, "health").text
        for r in kept:
            img = driver.find_element(By.CSS_SELECTOR, f'.card[data-name="{r["name"]}"] img.frames')
            assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
    finally:
        driver.quit()


def test_select_with_looser_threshold_reports_windows_to_score(built):
    out, *_ = built
    windows = read_rows(out, "windows")
    skipped = [w for w in windows if w["pixel_diff"] is not None and w["pixel_diff"] < 0.01]
    assert skipped
    p = _curate("select", out, "--set", "pixel_diff.min=0.0")
    assert f"{len(skipped)} windows were never scored" in p.stdout
    p = _curate("select", out, "--set", "pixel_diff.min=0.01")
    assert "never scored" not in p.stdout
    p = _curate("select", out, "--set", "nosuch.min=1", check=False)
    assert p.returncode != 0 and "nosuch" in (p.stderr + p.stdout)


def test_verify_passes_on_the_build(built):
    out, *_ = built
    p = _curate("verify", out)
    assert p.returncode == 0 and "0 bad" in p.stdout
