"""`curate stats` read columnar: the same figures as counting rows, an unfinished run said so,
failures grouped by reason (not by file), and the synth truth table (kind x filter)."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from curate.config.models import gating
from curate.config.run_state import load_run
from curate.config.thresholds import thresholds
from curate.build import stage_value
from tests.selection.oracle import select_windows
from curate.reports.reasons import reason_category
from curate.reports.stats import collect, format_text, write_report
from filters import registry
from manifests import schemas
from manifests.schemas import read_rows, write_manifest
from tests.selection.test_select_columnar import _write_run, random_run

CURATE = [sys.executable, "-c", "from curate.cli import app; app()"]


def _recipe(select=None):
    from curate.config.recipes import get_recipe
    r = get_recipe("avsync15")
    r["classes"] = None
    r["select"] = select or {"per_class": 3, "test_per_class": 1, "seed": 0}
    return r


@pytest.fixture()
def selected_run(tmp_path):
    out = tmp_path / "run"
    _write_run(out, random_run(11, n_sources=150), _recipe())
    stage_value("select", out, load_run(out))
    return out


def test_figures_equal_counting_rows(selected_run):
    out = selected_run
    st = collect(out)
    src, dl = read_rows(out, "sources"), read_rows(out, "downloads")
    shots, win = read_rows(out, "shots"), read_rows(out, "windows")
    clips, sel = read_rows(out, "clips"), read_rows(out, "selected")
    run = load_run(out)
    th = thresholds(run, run.get("selection_overrides"))
    gate, _ = gating(run)
    _, fun = select_windows(win, th, gate=set(gate))
    ok = lambda rows: [r for r in rows if r["status"] == "ok"]  # noqa: E731
    counts = {f["stage"]: f["count"] for f in st["funnel"]}
    assert counts["sources"] == len(src) and counts["sources accepted"] == len(ok(src))
    assert counts["downloaded"] == len(ok(dl)) and counts["shots"] == len(ok(shots))
    assert counts["windows"] == len(win) and counts["windows kept"] == fun["kept"]
    for step in fun["funnel"][1:]:
        assert counts[f"after {step['filter']}"] == step["remaining"]
    assert counts["merged clips"] == len(ok(clips)) and counts["selected"] == len(ok(sel))
    cls_of = {s["source_id"]: s["class_name"] for s in src}
    expect: dict[str, Counter] = {}
    for key, rows in (("sources", [(r["class_name"]) for r in ok(src)]),
                      ("downloaded", [cls_of.get(d["source_id"]) for d in ok(dl)]),
                      ("windows", [w["class_name"] for w in win]),
                      ("clips", [c["class_name"] for c in ok(clips)])):
        for c in rows:
            expect.setdefault(str(c), Counter())[key] += 1
    for s in ok(sel):
        expect.setdefault(str(s["class_name"]), Counter())[f"selected_{s['split']}"] += 1
    assert st["per_class"] == {k: dict(v) for k, v in sorted(expect.items())}
    assert st["hours_downloaded"] == sum(d["duration"] or 0 for d in ok(dl)) / 3600
    assert st["hours_selected"] == sum(s["end"] - s["start"] for s in ok(sel)) / 3600
    # failed windows grouped by the reason of their error, not their id or file
    assert st["failures"]["score: RuntimeError"] == sum(w["status"] == "failed" for w in win)
    assert st["failures"]["download: http_error"] == sum(d["status"] == "failed" for d in dl)
    assert st["skipped"]["select: rank N beyond per_class N"] > 0
    assert "rejected" in st and "truth" not in st
    # the shard stage has not run: the run says it is unfinished
    assert not st["finished"] and any(u.startswith("shard: not run yet") for u in st["unfinished"])
    text = format_text(st)
    assert "run unfinished:" in text and "shard: not run yet (no shards manifest)" in text


def test_unfinished_run_names_stages_and_pending_items(tmp_path):
    out = tmp_path / "run"
    data = random_run(12, n_sources=40)
    ok_sources = [s["source_id"] for s in data["sources"] if s["status"] == "ok"]
    data["downloads"] = data["downloads"][:-3]                  # 3 sources not downloaded yet
    downloaded = {d["source_id"] for d in data["downloads"] if d["status"] == "ok"}
    data["shots"] = [s for s in data["shots"] if s["source_id"] in downloaded]
    data["windows"] = [w for w in data["windows"] if w["source_id"] in downloaded]
    unscored = 0
    for w in data["windows"][::4]:                               # never reached by scoring
        if w["status"] == "ok":
            w.update({c: None for c in schemas.ALL_SCORES}, **{c: None for c in schemas.NOTE_COLUMNS})
            unscored += 1
    for name in ("sources", "downloads", "shots", "windows"):
        write_manifest(out, name, data[name])
    (out / "run.json").write_text(json.dumps({"recipe": _recipe(), "options": {"allow_random_weights": True}}))
    st = collect(out)
    missing_dl = len(ok_sources) - len({d["source_id"] for d in data["downloads"]})
    assert missing_dl == 3
    assert st["finished"] is False
    assert st["unfinished"] == [
        "select: not run yet (no clips, selected manifest)",
        "shard: not run yet (no shards manifest)",
        f"download: {missing_dl} accepted sources have no downloads row yet",
        f"score: {unscored} of {len(data['windows'])} windows are not scored yet",
    ]
    # split pending: a downloaded source without shots
    shots = [s for s in data["shots"] if s["source_id"] != min(downloaded)]
    write_manifest(out, "shots", shots)
    assert "split: 1 downloaded sources have no shots row yet" in collect(out)["unfinished"]


def test_finished_run_is_not_flagged(tmp_path):
    out = tmp_path / "run"
    _write_run(out, random_run(13, n_sources=30), _recipe())
    stage_value("select", out, load_run(out))
    sel = [s for s in read_rows(out, "selected") if s["status"] == "ok"]
    write_manifest(out, "shards", [{"key": s["key"], "split": s["split"], "shard": "train-000000.tar",
                                    "offset": 0, "size": 1, "sha256": "x"} for s in sel])
    st = collect(out)
    assert st["finished"] and st["unfinished"] == [] and "run unfinished" not in format_text(st)
    write_manifest(out, "shards", [{"key": s["key"], "split": s["split"], "shard": "t.tar",
                                    "offset": 0, "size": 1, "sha256": "x"} for s in sel[1:]])
    assert collect(out)["unfinished"] == ["shard: 1 selected clips are in no shard yet"]


def test_reasons_group_by_cause_not_by_file():
    assert reason_category("score: /m/a.mp4: moov atom not found") == \
        reason_category("score: /m/b.mp4: moov atom not found") == "moov atom not found"
    assert reason_category("ERROR: [youtube] abc: Video unavailable") == "Video unavailable"
    assert reason_category("merge: clip length 1.50s < min_len 2.00s") == \
        reason_category("merge: clip length 0.50s < min_len 2.00s")
    assert reason_category("HTTP Error 404: Not Found") == "HTTP Error 404"
    assert reason_category("select: max_per_source 1 reached for x_000000_000010") == \
        "max_per_source N reached for <id>"
    assert reason_category(None) == "unknown"


def test_failures_by_reason_in_a_run(tmp_path):
    out = tmp_path / "run"
    data = random_run(14, n_sources=20)
    for i, d in enumerate(data["downloads"][:4]):
        d.update(status="failed", reason="error", path=None,
                 error=f"/media/raw/{d['source_id']}.mp4: Invalid data found when processing input")
    for name in ("sources", "downloads", "shots", "windows"):
        write_manifest(out, name, data[name])
    st = collect(out)
    assert st["failures"]["download: Invalid data found when processing input"] == 4
    assert not any(".mp4" in k for k in st["failures"])


def test_shots_too_short_for_a_window_are_skipped_not_failures(tmp_path):
    out = tmp_path / "run"
    data = random_run(15, n_sources=10)
    data["shots"][0].update(status="skipped", error="too_short: 2.7 s < 3 s window")
    data["shots"][1].update(status="failed", error="split: cannot decode x.mp4")
    for name in ("sources", "downloads", "shots", "windows"):
        write_manifest(out, name, data[name])
    st = collect(out)
    assert st["skipped"]["split: too_short"] == 1
    assert not any("too_short" in k for k in st["failures"])
    assert sum(n for k, n in st["failures"].items() if k.startswith("split")) == 1


def _truth_run(out: Path, in_sync_ok: int, shifted_ok: int) -> dict:
    """4 sources (in-sync flash, shifted flash, static, silent) x 4 windows with known scores."""
    (out / "synth").mkdir(parents=True)
    kinds = {"synth0000": "flash_click", "synth0001": "flash_click_shifted",
             "synth0002": "static_tone", "synth0003": "silent_motion"}
    (out / "synth" / "truth.json").write_text(json.dumps(
        {"videos": [{"id": k, "kind": v} for k, v in kinds.items()]}))
    sources, windows = [], []
    for vid, kind in kinds.items():
        sid = f"{vid}_000000_000010"
        sources.append({"source_id": sid, "ytid": vid, "class_name": "c", "split": "train", "status": "ok"})
        for j in range(4):
            w = {"window_id": f"{sid}_{j * 500:06d}", "source_id": sid, "shot_id": f"{sid}_shot000",
                 "class_name": "c", "split": "train", "start": j * 0.5, "end": j * 0.5 + 3,
                 "status": "ok", "pixel_diff": 0.05, "amplitude": 0.5, "clip_diff": 0.3,
                 "imagebind_ia": 0.3, "imagebind_it": 0.3, "sync_a2v": 0.9, "sync_v2a": 0.9,
                 "silence": 0.1, "bandwidth_hz": 16000.0, "clipping": 0.0, "fake_stereo": 0.0,
                 "speech": 0.0, "speech_run_s": 0.0}
            if kind == "static_tone":
                w["pixel_diff"] = 0.001
                w.update({c: None for c in ("amplitude", "clip_diff", "imagebind_ia", "imagebind_it",
                                            "sync_a2v", "sync_v2a", "silence", "bandwidth_hz",
                                            "clipping", "fake_stereo", "speech", "speech_run_s")})
                w.update({f"{f}_note": registry.SKIP_REJECTED + "pixel_diff"
                          for f in ("amplitude", "clip_diff", "imagebind", "sync", "audio_quality",
                                    "speech")})
            if kind == "silent_motion":
                w["amplitude"], w["silence"] = 0.0, 1.0     # recorded: audio_quality does not gate
            if kind == "flash_click" and j >= in_sync_ok:
                w["sync_a2v"] = 0.2
            if kind == "flash_click_shifted" and j >= shifted_ok:
                w["sync_v2a"] = 0.1
            windows.append(w)
    write_manifest(out, "sources", sources)
    write_manifest(out, "windows", windows)
    (out / "run.json").write_text(json.dumps({"recipe": _recipe(), "options": {
        "clip_checkpoint": "c", "imagebind_checkpoint": "i", "sync_checkpoint": "s"}}))
    return kinds


def test_truth_table_per_kind_and_filter(tmp_path):
    out = tmp_path / "run"
    _truth_run(out, in_sync_ok=3, shifted_ok=1)
    st = collect(out)
    t = st["truth"]
    assert t["filters"] == list(registry.FILTERS)   # the windows schema's column order
    assert t["file"] == str(out / "synth" / "truth.json")
    assert t["kinds"]["flash_click"] == {"windows": 4, "pixel_diff": 4, "amplitude": 4, "clip_diff": 4,
                                         "imagebind": 4, "sync": 3, "audio_quality": 4, "speech": 4,
                                         "kept": 3}
    assert t["kinds"]["flash_click_shifted"]["sync"] == 1 and t["kinds"]["flash_click_shifted"]["kept"] == 1
    assert t["kinds"]["static_tone"] == {"windows": 4, "pixel_diff": 0, "amplitude": 0, "clip_diff": 0,
                                         "imagebind": 0, "sync": 0, "audio_quality": 0, "speech": 0,
                                         "kept": 0}
    assert t["kinds"]["silent_motion"]["amplitude"] == 0 and t["kinds"]["silent_motion"]["pixel_diff"] == 4
    assert t["kinds"]["silent_motion"]["audio_quality"] == 0     # > 80% silent
    assert sorted(t["kinds"]) == ["flash_click", "flash_click_shifted", "silent_motion", "static_tone"]
    text = format_text(st)
    assert "by truth kind" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("flash_click "))
    assert line.split()[1:] == ["4", "4", "4", "4", "4", "3", "4", "4", "3"]
    html = write_report(out, tmp_path / "r.html", st).read_text()
    assert "by truth kind" in html and "flash_click_shifted" in html


def test_no_truth_table_without_truth(tmp_path):
    out = tmp_path / "run"
    _truth_run(out, 4, 0)
    (out / "synth" / "truth.json").unlink()
    assert "truth" not in collect(out)


def test_cli_stats_json_and_text(tmp_path):
    out = tmp_path / "run"
    _truth_run(out, 2, 2)
    p = subprocess.run([*CURATE, "stats", str(out), "--json"], capture_output=True, text=True, check=True)
    st = json.loads(p.stdout)
    assert st["truth"]["kinds"]["flash_click"]["sync"] == 2 and st["finished"] is False
    p = subprocess.run([*CURATE, "stats", str(out)], capture_output=True, text=True, check=True)
    assert "run unfinished:" in p.stdout and "download: not run yet" in p.stdout


def test_truth_table_counts_sources_outside_the_truth_as_unknown(tmp_path):
    out = tmp_path / "run"
    _truth_run(out, 4, 4)
    win = read_rows(out, "windows")
    extra = [{**w, "window_id": "other_" + w["window_id"], "source_id": "other_000000_000010"}
             for w in win[:3]]
    write_manifest(out, "windows", win + extra)
    kinds = collect(out)["truth"]["kinds"]
    assert kinds["unknown"]["windows"] == 3 and kinds["flash_click"]["kept"] == 4
