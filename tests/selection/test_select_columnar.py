"""Columnar select (thresholds, needs-scoring, funnel, merge, balance, the whole stage) equals the
row-dict implementation, which stays the oracle, on random manifests with ties, nulls, notes,
failed rows and windows the cascade skipped."""
from __future__ import annotations

import copy
import json
import random
import shutil
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.config.run_state import load_run
from curate.selection.merge import merge_table, merge_windows
from tests.selection.oracle import needs_scoring_by_filter, select_windows
from curate.selection.rules import needs_scoring_table, select_windows_table
from curate.config.thresholds import parse_overrides
from curate.build import stage_value
from filters import registry
from manifests import schemas
from manifests.schemas import ALL_SCORES, to_table, write_manifest

SKIP = registry.SKIP_REJECTED


def random_run(seed: int, n_sources: int = 60) -> dict[str, list[dict]]:
    """Sources, downloads, shots and windows of a plausible run, with every awkward case."""
    rng = random.Random(seed)
    classes = ["dog_barking", "lions_roaring", "hammering", "frog_croaking"]
    sources, downloads, shots, windows = [], [], [], []
    for i in range(n_sources):
        sid = f"yt{i % 45:03d}_x_{i * 10:06d}_{i * 10 + 10:06d}"     # some ytids repeat
        cls = rng.choice(classes) if rng.random() > 0.03 else None
        split = rng.choice(["train", "train", "test", None])
        st = "ok" if rng.random() > 0.05 else "rejected"
        sources.append({"source_id": sid, "ytid": sid.rsplit("_", 2)[0], "start": float(i * 10),
                        "end": float(i * 10 + 10), "label": cls, "class_name": cls, "split": split,
                        "status": st, "error": None if st == "ok" else "bad label: x"})
        if st != "ok":
            continue
        dst = "ok" if rng.random() > 0.1 else "failed"
        downloads.append({"source_id": sid, "path": f"/m/{sid}.mp4", "status": dst,
                          "reason": "ok" if dst == "ok" else "http_error",
                          "error": None if dst == "ok" else "HTTP Error 404: gone",
                          "duration": 10.0, "width": 640, "height": 360})
        if dst != "ok":
            continue
        cuts = sorted({0.0, 10.0, *[round(rng.uniform(1, 9) * 2) / 2 for _ in range(rng.randint(0, 2))]})
        for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
            shot_id = f"{sid}_shot{k:03d}"
            shots.append({"shot_id": shot_id, "source_id": sid, "shot_index": k, "start": a,
                          "end": b, "status": "ok", "error": None})
            t = a
            while t + 3.0 <= b + 1e-9:
                windows.append(_window(rng, sid, shot_id, cls, split, t))
                t += 0.5
    # awkward rows: a window without shot id, one whose shot is missing, an exact duplicate
    # interval (tie) in one shot, one sticking out of its shot, a 'skipped' status row
    if windows:
        w = copy.deepcopy(windows[0])
        windows.append({**w, "window_id": w["window_id"] + "dup"})
        windows.append({**_window(rng, w["source_id"], None, w["class_name"], w["split"], 7.0),
                        "window_id": w["source_id"] + "_noshot"})
        windows.append({**_window(rng, w["source_id"], "ghost_shot", w["class_name"], w["split"], 1.0),
                        "window_id": w["source_id"] + "_ghost"})
        windows.append({**_window(rng, w["source_id"], w["shot_id"], w["class_name"], w["split"], 9.0),
                        "window_id": w["source_id"] + "_out", "end": 12.0})
        windows.append({**_window(rng, w["source_id"], w["shot_id"], w["class_name"], w["split"], 2.0),
                        "window_id": w["source_id"] + "_st", "status": "skipped"})
    return {"sources": sources, "downloads": downloads, "shots": shots, "windows": windows}


def _window(rng: random.Random, sid: str, shot_id: str | None, cls, split, t: float) -> dict:
    r = {"window_id": f"{sid}_{int(round(t * 1000)):06d}", "source_id": sid, "shot_id": shot_id,
         "class_name": cls, "split": split, "start": t, "end": t + 3.0, "status": "ok", "error": None}
    # coarse values so thresholds are hit exactly (inclusive bounds) and means tie
    r.update({"pixel_diff": rng.choice([0.005, 0.01, 0.05, 0.08, 0.15, 0.2]),
              "amplitude": rng.choice([0.0, 0.03, 0.1, 0.5]),
              "clip_diff": rng.choice([0.1, 0.17, 0.3, 0.55, 0.6]),
              "imagebind_ia": rng.choice([0.1, 0.15, 0.3]), "imagebind_it": rng.choice([0.2, 0.22, 0.4]),
              "sync_a2v": rng.choice([0.2, 0.341, 0.5, 0.9]), "sync_v2a": rng.choice([0.3, 0.341, 0.7])})
    # the audio content scores (issue 26), from a generator of their own so that the values
    # above stay what they were
    a = random.Random(f"{sid}/{t}")
    r.update({"speech": a.choice([0.0, 0.2, 0.5, 0.9]), "speech_run_s": a.choice([0.0, 0.5, 2.9]),
              "silence": a.choice([0.0, 0.5, 0.8, 1.0]), "bandwidth_hz": a.choice([4000.0, 7900.0, 21000.0]),
              "clipping": a.choice([0.0, 0.01, 0.2]), "fake_stereo": a.choice([0.0, 1.0])})
    r.update({f"{n}_note": None for n in registry.ORDER})
    u = rng.random()
    if u < 0.05:
        r.update({c: None for c in ALL_SCORES}, status="failed", error="score: RuntimeError: x")
    elif u < 0.35:                                   # the cascade stopped at some filter
        stop = rng.choice(registry.ORDER[:-1])
        for name in registry.ORDER[registry.ORDER.index(stop) + 1:]:
            r.update({c: None for c in registry.columns(name)})
            r[f"{name}_note"] = SKIP + stop
    elif u < 0.4:
        r.update(sync_a2v=None, sync_v2a=None, sync_note="error: decode failed")
    elif u < 0.45:
        r["clip_diff"] = float("nan")
    return r


def _threshold_sets():
    base = registry.default_thresholds()
    return [base, parse_overrides(["pixel_diff.min=0.001", "clip_diff.max=0.65", "sync.a2v_min=0.1"]),
            parse_overrides(["amplitude.min=0.0", "imagebind.ia_min=0.0", "imagebind.it_min=0.0"])]


GATES = [None, {"pixel_diff", "amplitude", "sync"}, {"clip_diff", "imagebind"}]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decisions_funnel_and_needs_scoring_equal_the_row_functions(seed):
    run = random_run(seed)
    rows = run["windows"]
    tbl = to_table(rows, schemas.WINDOWS)
    for th in _threshold_sets():
        for gate in GATES:
            dec_rows, fun_rows = select_windows(rows, th, gate=gate)
            dec_tbl, fun_tbl, keep = select_windows_table(tbl, th, gate=gate)
            assert dec_tbl.to_pylist() == dec_rows
            assert fun_tbl == fun_rows
            assert keep.tolist() == [d["keep"] for d in dec_rows]
            assert needs_scoring_table(tbl, th, gate) == needs_scoring_by_filter(rows, th, gate)
    assert any(v for v in needs_scoring_by_filter(rows, _threshold_sets()[1]).values())


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("min_len", [2.0, 3.5])
def test_merge_table_equals_merge_windows(seed, min_len):
    run = random_run(seed)
    rows, shots = run["windows"], run["shots"]
    th = _threshold_sets()[1]
    dec_rows, _ = select_windows(rows, th)
    old = merge_windows(rows, dec_rows, shots, min_len=min_len)
    _, _, keep = select_windows_table(to_table(rows, schemas.WINDOWS), th)
    new = merge_table(to_table(rows, schemas.WINDOWS), keep, to_table(shots, schemas.SHOTS), min_len)
    assert new.schema == schemas.CLIPS
    assert new.to_pylist() == old          # exact, float means included
    assert any(c["n_windows"] > 1 for c in old)
    # a lone 3-s window is shorter than 3.5 s: rejected rows are compared too
    assert any(c["status"] == "rejected" for c in old) or min_len < 3.0
    # without a shots table neither checks bounds
    assert merge_table(to_table(rows, schemas.WINDOWS), keep, None, min_len).to_pylist() == \
        merge_windows(rows, dec_rows, None, min_len=min_len)


def test_merge_table_of_no_kept_window_is_empty():
    rows = random_run(0, n_sources=5)["windows"]
    import numpy as np
    out = merge_table(to_table(rows, schemas.WINDOWS), np.zeros(len(rows), dtype=bool))
    assert out.num_rows == 0 and out.schema == schemas.CLIPS


def _write_run(out: Path, run: dict, recipe: dict) -> None:
    for name in ("sources", "downloads", "shots", "windows"):
        write_manifest(out, name, run[name])
    (out / "run.json").write_text(json.dumps({"recipe": recipe, "options": {"allow_random_weights": False,
                                  "clip_checkpoint": "c.pt", "imagebind_checkpoint": "i.pth",
                                  "sync_checkpoint": "s.pt"}}))


def _tables(out: Path) -> dict[str, list[dict]]:
    return {t: pq.read_table(out / "manifests" / f"{t}.parquet").to_pylist()
            for t in ("decisions", "clips", "selected") if (out / "manifests" / f"{t}.parquet").exists()}


@pytest.mark.parametrize("select_params,classes", [
    ({"per_class": 3, "test_per_class": 1, "balanced_test": False, "seed": 0}, None),
    ({"per_class": 5, "balanced_test": True, "test_fraction": 0.4, "seed": 7}, None),
    ({"per_class": None, "seed": 1}, None),
    ({"per_class": 2, "test_per_class": 1, "seed": 0}, "avsync15"),
])
def test_select_stage_against_the_row_oracle(tmp_path, select_params, classes):
    """The select stage (columnar) writes the decisions and reports the funnel that the
    row-dict oracle makes of the same windows; a second run changes nothing."""
    from curate.config.models import gating
    from curate.config.recipes import get_recipe
    from curate.config.run_state import cascade_order
    from curate.config.thresholds import thresholds
    from manifests.schemas import read_rows

    recipe = get_recipe("avsync15")
    recipe["select"] = select_params
    recipe["classes"] = classes
    a = tmp_path / "run"
    _write_run(a, random_run(5, n_sources=120), recipe)
    overrides = ["clip_diff.max=0.6"]
    summary = stage_value("select", a, load_run(a), overrides=overrides)
    run = load_run(a)
    gate, _ = gating(run)
    dec_rows, fun_rows = select_windows(read_rows(a, "windows"), thresholds(run, overrides),
                                        gate=set(gate), order=cascade_order(run))
    assert read_rows(a, "decisions") == dec_rows
    assert summary["funnel"] == fun_rows
    before = _tables(a)
    assert stage_value("select", a, load_run(a), overrides=overrides) == summary
    assert _tables(a) == before
    assert json.loads((a / "run.json").read_text())["selection_overrides"] == overrides
    assert any(s["status"] == "ok" for s in before["selected"])


def test_select_stage_with_review_decisions(tmp_path):
    from curate.config.recipes import get_recipe

    recipe = get_recipe("avsync15")
    recipe["select"] = {"per_class": 3, "test_per_class": 1, "seed": 0}
    recipe["classes"] = None
    a, b = tmp_path / "old", tmp_path / "new"
    _write_run(a, random_run(6, n_sources=120), recipe)
    shutil.copytree(a, b)
    stage_value("select", a, load_run(a))
    ok = [s["name"] for s in _tables(a)["selected"] if s["status"] == "ok"]
    review = tmp_path / "review.json"
    review.write_text(json.dumps({ok[0]: "reject", ok[1]: "keep"}))
    old = stage_value("select", a, load_run(a), decisions_file=review)
    new = stage_value("select", b, load_run(b), decisions_file=review)
    assert new == old and _tables(b) == _tables(a)
    assert any(s["error"] == "review: rejected by reviewer" for s in _tables(b)["selected"])


def _random_clips(seed: int, n: int = 400) -> list[dict]:
    """CLIPS rows with ties, null scores, upstream failures, unnameable and duplicate clips."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        sid = f"v{rng.randint(0, n // 3):04d}-{'_x' if i % 7 == 0 else ''}_{rng.choice([0, 30]):06d}_{rng.choice([10, 40]):06d}"
        start = rng.choice([0.0, 0.5, 1.0, 2.5, 3.04, 3.06])
        c = {"clip_id": f"{sid}_{i:06d}", "source_id": sid, "shot_id": None,
             "class_name": rng.choice(["dog_barking", "hammering", "frog_croaking"]),
             "split": rng.choice(["train", "test"]), "start": start, "end": start + rng.choice([3.0, 4.5, 6.0]),
             "n_windows": 1, **{s: rng.choice([0.2, 0.5, 0.8]) for s in ALL_SCORES},
             "status": "ok", "error": None}
        u = rng.random()
        if u < 0.05:
            c.update(status="rejected", error="merge: clip length 1.00s < min_len 2.00s")
        elif u < 0.1:
            c["sync_a2v"] = None
        elif u < 0.12:
            c["class_name"] = None
        elif u < 0.14:
            c["source_id"] = "bad/id_000000_000010"
        elif u < 0.16:
            c["source_id"] = "v1_0000001_000010"
        elif u < 0.18:
            c["start"] = -1.0
        elif u < 0.2:
            c["imagebind_ia"] = float("nan")
        rows.append(c)
    rows.append({**rows[0], "clip_id": rows[0]["clip_id"] + "b", "start": rows[0]["start"] + 0.01})  # same name
    return rows


@pytest.mark.parametrize("params", [
    {"per_class": 10, "test_per_class": 2, "seed": 0},
    {"per_class": 10, "balanced_test": True, "seed": 3},
    {"per_class": 40, "max_per_source": 2, "test_per_class": 5, "seed": 1},
    {"per_class": None},
    {"per_class": 5, "balanced_test": True, "test_per_class": 50, "seed": 2},
])
def test_select_clips_table_equals_select_clips(params):
    from curate.selection.balance import select_clips_table
    from tests.selection.oracle import select_clips

    clips = _random_clips(zlib.crc32(json.dumps(params, sort_keys=True).encode()) % 1000)
    names = [r["name"] for r in select_clips(clips, params).rows if r["status"] == "ok"]
    review = {names[0]: "reject", names[-1]: "keep", "nosuch/x_000000_000010_0.0_3.0": "keep"}
    for decisions in (None, review):
        for classes in (None, ["dog_barking", "hammering", "frog_croaking", "playing_cello"]):
            old = select_clips(clips, params, decisions=decisions, classes=classes)
            tbl, summary = select_clips_table(to_table(clips, schemas.CLIPS), params,
                                              decisions=decisions, classes=classes)
            assert tbl.to_pylist() == to_table(old.rows, schemas.SELECTED).to_pylist()
            assert summary == old.summary
    statuses = {r["status"] for r in old.rows}
    assert {"ok", "failed", "rejected"} <= statuses


def test_fast_naming_falls_back_when_the_grammar_changes(monkeypatch):
    from curate.selection import balance
    from tests.selection.oracle import select_clips

    clips = _random_clips(9)
    params = {"per_class": 10, "test_per_class": 2}
    old = select_clips(clips, params)
    real = balance._fast_name
    monkeypatch.setattr(balance, "_fast_name",
                        lambda *a: None if real(*a) is None else (real(*a)[0] + "x", *real(*a)[1:]))
    tbl, summary = balance.select_clips_table(to_table(clips, schemas.CLIPS), params)
    assert tbl.to_pylist() == to_table(old.rows, schemas.SELECTED).to_pylist() and summary == old.summary


def test_dictionary_encoded_windows_decide_the_same(tmp_path):
    """The selection reads repeated strings dictionary-encoded (one dictionary per row group)."""
    import pyarrow.parquet as pq
    from manifests.columns import read_windows_table

    rows = random_run(4)["windows"]
    path = schemas.manifest_path(tmp_path, "windows")
    path.parent.mkdir(parents=True)
    pq.write_table(to_table(rows, schemas.WINDOWS), path, row_group_size=97)
    tbl = read_windows_table(tmp_path)
    assert any(str(f.type).startswith("dictionary") for f in tbl.schema)
    th = _threshold_sets()[1]
    dec, fun, keep = select_windows_table(tbl, th)
    dec_rows, fun_rows = select_windows(rows, th)
    assert dec.to_pylist() == dec_rows and fun == fun_rows
    assert needs_scoring_table(tbl, th) == needs_scoring_by_filter(rows, th)
    assert merge_table(tbl, keep).to_pylist() == merge_windows(rows, dec_rows, None)


def test_select_stage_fixed_clips_equals_stage_select(tmp_path):
    from curate.config.recipes import get_recipe

    recipe = get_recipe("landscape")
    assert recipe["clip_mode"] == "fixed"
    data = random_run(8, n_sources=40)
    a, b = tmp_path / "old", tmp_path / "new"
    _write_run(a, data, recipe)
    shutil.copytree(a, b)
    old = stage_value("select", a, load_run(a))
    new = stage_value("select", b, load_run(b))
    assert new == old
    old_t, new_t = _tables(a), _tables(b)
    assert new_t["clips"] == old_t["clips"] and new_t["selected"] == old_t["selected"]
    assert len(new_t["clips"]) > 0
