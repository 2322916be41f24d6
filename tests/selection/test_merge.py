"""Merging kept windows into clips, and fixed 10-s clips (Landscape)."""
from __future__ import annotations

import pytest

from manifests.names import clip_id_for
from curate.selection.merge import fixed_clips, merge_windows
from manifests.schemas import ALL_SCORES, read_rows, write_manifest

SRC = "AbC-d_eF12_000030_000040"


def win(start: float, end: float, shot: int = 0, src: str = SRC, **scores: float) -> dict:
    row = {"window_id": f"{src}_{int(start * 1000):06d}", "source_id": src,
           "shot_id": f"{src}_shot{shot:03d}", "class_name": "dog_barking", "split": "train",
           "start": start, "end": end, "status": "ok", "error": None}
    row.update({c: None for c in ALL_SCORES})
    row.update({"pixel_diff": 0.05, "amplitude": 0.5, "sync_a2v": 0.5, "sync_v2a": 0.5})
    row.update(scores)
    return row


def shot(k: int, start: float, end: float, src: str = SRC) -> dict:
    return {"shot_id": f"{src}_shot{k:03d}", "source_id": src, "shot_index": k,
            "start": start, "end": end, "status": "ok", "error": None}


def keep_all(ws: list[dict], drop: tuple[str, ...] = ()) -> list[dict]:
    return [{"window_id": w["window_id"], "keep": w["window_id"] not in drop,
             "reason": "sync" if w["window_id"] in drop else None} for w in ws]


def spans(rows: list[dict]) -> list[tuple[float, float, int]]:
    return [(r["start"], r["end"], r["n_windows"]) for r in rows]


def test_overlapping_windows_merge_into_one_clip_with_mean_scores() -> None:
    ws = [win(0.0, 3.0, sync_a2v=0.4), win(0.5, 3.5, sync_a2v=0.6), win(1.0, 4.0, sync_a2v=0.8)]
    rows = merge_windows(ws, keep_all(ws), [shot(0, 0.0, 10.0)])
    assert spans(rows) == [(0.0, 4.0, 3)]
    r = rows[0]
    assert r["sync_a2v"] == pytest.approx(0.6)
    assert r["clip_id"] == clip_id_for(SRC, 0.0, 4.0) == f"{SRC}_000000_004000"
    assert r["status"] == "ok" and r["error"] is None
    assert r["imagebind_ia"] is None            # never scored -> null, not a made-up number


def test_touching_windows_merge_and_gaps_split() -> None:
    ws = [win(0.0, 3.0), win(3.0, 6.0), win(6.5, 9.5)]
    rows = merge_windows(ws, keep_all(ws), [shot(0, 0.0, 10.0)])
    assert spans(rows) == [(0.0, 6.0, 2), (6.5, 9.5, 1)]


def test_dropped_window_breaks_the_run_and_shots_never_merge() -> None:
    ws = [win(0.0, 3.0), win(0.5, 3.5), win(4.0, 7.0), win(7.0, 10.0, shot=1)]
    rows = merge_windows(ws, keep_all(ws, drop=(ws[1]["window_id"],)),
                         [shot(0, 0.0, 7.0), shot(1, 7.0, 10.0)])
    assert spans(rows) == [(0.0, 3.0, 1), (4.0, 7.0, 1), (7.0, 10.0, 1)]
    assert rows[2]["shot_id"].endswith("shot001")


def test_short_clip_is_rejected_but_kept_as_row(tmp_path) -> None:
    # a 1.5-s shot gives a trimmed 1.5-s window; the clip is reported, not dropped
    ws = [win(0.0, 1.5), win(2.0, 5.0, shot=1)]
    rows = merge_windows(ws, keep_all(ws), [shot(0, 0.0, 1.5), shot(1, 1.5, 10.0)], min_len=2.0)
    assert [r["status"] for r in rows] == ["rejected", "ok"]
    assert "min_len" in rows[0]["error"] and rows[0]["end"] == 1.5
    write_manifest(tmp_path, "clips", rows)          # rows fit the CLIPS schema
    assert len(read_rows(tmp_path, "clips")) == 2


def test_undecided_and_failed_windows_are_not_kept() -> None:
    ws = [win(0.0, 3.0), win(4.0, 7.0), win(7.0, 10.0)]
    ws[2]["status"] = "failed"
    decisions = keep_all(ws)[:1] + keep_all(ws)[2:]    # no decision for the second
    rows = merge_windows(ws, decisions, None)
    assert spans(rows) == [(0.0, 3.0, 1)]


def test_clip_outside_its_shot_is_clamped() -> None:
    ws = [win(0.0, 3.0), win(0.5, 3.5)]
    rows = merge_windows(ws, keep_all(ws), [shot(0, 0.0, 3.2)])
    assert spans(rows) == [(0.0, 3.2, 2)]


def test_fixed_clips_from_downloads_sources_and_shots() -> None:
    downloads = [
        {"source_id": "vidA_000000_000100", "status": "ok", "duration": 35.2, "width": 2560, "height": 1440},
        {"source_id": "vidB_000000_000100", "status": "ok", "duration": 7.0, "width": 1920, "height": 1080},
        {"source_id": "vidC_000000_000100", "status": "ok", "duration": 60.0, "width": 640, "height": 360},
        {"source_id": "vidD_000000_000100", "status": "failed", "duration": None},
    ]
    sources = [{"source_id": d["source_id"], "class_name": "raining", "split": None} for d in downloads]
    rows = fixed_clips(downloads, 10.0, sources=sources, min_resolution=(1280, 720))
    ok = [r for r in rows if r["status"] == "ok"]
    assert [(r["start"], r["end"]) for r in ok] == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    assert all(r["class_name"] == "raining" and r["source_id"] == "vidA_000000_000100" for r in ok)
    rej = {r["source_id"]: r["error"] for r in rows if r["status"] == "rejected"}
    assert "shorter than one 10.0s clip" in rej["vidB_000000_000100"]
    assert "640x360 below 1280x720" in rej["vidC_000000_000100"]
    assert "vidD_000000_000100" not in {r["source_id"] for r in rows}   # failure lives in downloads
    # sources rows: [0, end - start]; shots rows: clips inside each shot
    assert len(fixed_clips([{"source_id": "x_000010_000050", "start": 10.0, "end": 50.0,
                             "class_name": "fire"}])) == 4
    sh = fixed_clips([shot(0, 1.0, 22.0, "y_000000_000030")], 10.0)
    assert [(r["start"], r["end"]) for r in sh] == [(1.0, 11.0), (11.0, 21.0)]
