"""Stages on the streaming engine: a changed source row redoes exactly what depends on it,
a finished rerun does no work and rewrites nothing, the decode -> score path gives the same
scores as scoring a decoded grid directly, temp files of a killed run are cleared, and a
killed build leaves no worker writing into its output."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.config.models import build_scorers, gating, resolve_models
from curate.config.run_state import new_run
from curate.config.thresholds import thresholds
from curate.build import stage_value
from curate.stagekit.window_table import base_windows
from curate.build import remove_stale_temps
from curate.config.recipes import get_recipe
from curate.execution.local import LocalExecutor
from curate.demo.synth import synthesize
from manifests.schemas import read_rows

STAGES = ("download", "split", "score")


class Recording(LocalExecutor):
    """Serial executor that records which items each stage ran."""

    def __init__(self):
        super().__init__()
        self.ran: dict[str, list[str]] = {}

    def run(self, spec, items):
        for it, o in super().run(spec, items):
            self.ran.setdefault(spec.name, []).append(it["key"])
            yield it, o


def _recipe():
    r = get_recipe("demo")
    r["stages"] = ["sources", "download", "split", "score", "select"]
    return r


def _run_all(out, src, ex):
    run = new_run(out, _recipe(), {"allow_random_weights": True})
    stage_value("sources", out, run, sources=src)
    stage_value("download", out, run, ex)
    stage_value("split", out, run, ex)
    stage_value("score", out, run, ex)
    return run


def _mtimes(out):
    files = [*(Path(out) / "manifests").glob("*.parquet"), *(Path(out) / "work").rglob("*.jsonl"),
             Path(out) / "run.json"]
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    synthesize(root, n_videos=3, seed=5)
    return root


def _write_sources(src, rows) -> None:
    with open(src, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_changed_label_and_split_redo_exactly_their_rows(corpus, tmp_path):
    src = tmp_path / "sources.csv"
    rows = list(csv.DictReader(open(corpus / "sources.csv")))
    for r in rows:
        r["path"] = str(corpus / r["path"])
    _write_sources(src, rows)
    out = tmp_path / "out"
    ex = Recording()
    _run_all(out, src, ex)
    before = {w["window_id"]: w for w in read_rows(out, "windows")}
    with_windows = sorted({w["source_id"] for w in before.values()})
    assert len(with_windows) >= 2
    assert {k: len(v) for k, v in ex.ran.items()} == {"download": 3, "split": 3, "score": len(with_windows)}
    assert before and all(w["pixel_diff"] is not None or w["pixel_diff_note"] for w in before.values())

    # a finished rerun: no executor work, no manifest / checkpoint / run.json rewritten
    snap = _mtimes(out)
    ex = Recording()
    _run_all(out, src, ex)
    assert ex.started == 0 and ex.ran == {}
    assert _mtimes(out) == snap

    # relabel source 0, move source 1 to another split
    ia, ib = [i for i, r in enumerate(rows) if any(s.startswith(r["id"] + "_") for s in with_windows)][:2]
    a, b = rows[ia]["id"], rows[ib]["id"]
    rows[ia]["label"] = "relabelled thing"
    rows[ib]["split"] = "test" if rows[ib]["split"] != "test" else "train"
    _write_sources(src, rows)
    ex = Recording()
    _run_all(out, src, ex)
    sid = {s["source_id"].split("_")[0]: s["source_id"] for s in read_rows(out, "sources")}
    assert "download" not in ex.ran and "split" not in ex.ran
    assert ex.ran["score"] == [sid[a]]           # the class text is a scoring input: only A
    after = {w["window_id"]: w for w in read_rows(out, "windows")}
    assert set(after) == set(before)
    for wid, w in after.items():
        if w["source_id"] == sid[a]:
            assert w["class_name"] == "relabelled_thing"
        elif w["source_id"] == sid[b]:
            assert w["split"] == rows[ib]["split"]
            assert {k: v for k, v in w.items() if k != "split"} == \
                {k: v for k, v in before[wid].items() if k != "split"}   # scores reused
        else:
            assert w == before[wid]


def test_decode_score_path_matches_scoring_the_grid_directly(corpus, tmp_path):
    """Ray: decode as CPU tasks, the grid through the object store, scoring actors with
    batches of segments; compared with score_segment on a grid decoded here."""
    import torch
    from curate.execution.ray import RayExecutor
    from curate.ops.scoring import deterministic_torch, score_segment
    from decoding.media import decode_grid
    from manifests.source_lists import display_name

    out = tmp_path / "out"
    run = new_run(out, _recipe(), {"allow_random_weights": True})
    src = tmp_path / "sources.csv"
    text = (corpus / "sources.csv").read_text().replace("videos/", f"{corpus}/videos/")
    src.write_text(text)
    stage_value("sources", out, run, sources=src)
    stage_value("download", out, run, LocalExecutor())
    stage_value("split", out, run, LocalExecutor())
    ex = RayExecutor(workers=1)
    try:
        stage_value("score", out, run, ex)
    finally:
        ex.shutdown()
    new = read_rows(out, "windows")
    # the stage's torch settings; on one thread or four (a 1-CPU Ray worker has one, a
    # local run one per core) the scores are the same bits (scoring.MIN_SCORE_THREADS)
    torch.set_num_threads(1 if torch.get_num_threads() > 1 else 4)
    deterministic_torch()
    gate, _ = gating(run)
    th = thresholds(run)
    scorers = build_scorers(resolve_models(run), run["recipe"]["models"], "cpu")
    paths = {d["source_id"]: d["path"] for d in read_rows(out, "downloads")}
    base = base_windows(out, run).to_pylist()
    old = []
    for sid in dict.fromkeys(w["source_id"] for w in base):
        ws = [w for w in base if w["source_id"] == sid]
        old += score_segment(decode_grid(paths[sid]), ws, scorers, th,
                             display_name(ws[0]["class_name"]), cascade=True, gate=set(gate))
    assert len(old) == len(new) > 0
    assert sum(w["clip_diff"] is not None for w in new) > 0
    assert {w["window_id"]: w for w in old} == {w["window_id"]: w for w in new}


def test_stale_temps_of_a_killed_run_are_removed(tmp_path):
    out = tmp_path
    keep = [out / "manifests" / "windows.parquet", out / "media" / "raw" / "a.mp4",
            out / "shards" / "train-000000.tar"]
    junk = [out / "manifests" / ".windows.parquet.x1y2.tmp", out / "media" / "clips" / ".k.mp4.abc.tmp",
            out / "shards" / ".train-000000.tar.123.tmp", out / ".run.json.zz.tmp"]
    for p in keep + junk:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    part = out / "media" / "raw" / ".a.abc.part"
    part.mkdir()
    (part / "segment.mp4").write_bytes(b"x")
    assert remove_stale_temps(out) == len(junk) + 1
    assert all(p.exists() for p in keep) and not any(p.exists() for p in junk) and not part.exists()


def _files(out):
    return {str(p): p.stat().st_size for p in Path(out).rglob("*") if p.is_file()}


def test_killed_build_leaves_no_worker_writing(tmp_path):
    """SIGKILL of the process group of `curate build demo` mid-download: within a second the
    Ray workers are gone (driver watchdog), and no file appears or grows afterwards."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "curate.cli", "build", "demo", "--out", str(out),
                          "--workers", "2", "--download-workers", "4"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                         start_new_session=True)
    raw = out / "media" / "raw"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and p.poll() is None:
            if raw.is_dir() and any(raw.iterdir()):
                break
            time.sleep(0.05)
        assert p.poll() is None, "the build ended before downloading"
        assert raw.is_dir() and any(raw.iterdir()), "no download started"
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    time.sleep(1.5)                      # watchdog period 0.2 s; a worker ends well within this
    snap = _files(out)
    time.sleep(4.0)
    assert _files(out) == snap
    done = [f for f in snap if f.endswith(".mp4") and "/media/raw/" in f]
    assert len(done) < 32                # it was killed mid-download
