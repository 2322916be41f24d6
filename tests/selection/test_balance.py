"""Ranking, per-class balancing, splits, shortfall, manual-review refill."""
from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from curate.selection.balance import rank_score
from tests.selection.selecting import select_rows
from manifests.names import split_source_id
from manifests.names import clip_id_for
from curate.selection.merge import fixed_clips
from curate.config.recipes import get_recipe
from manifests.schemas import ALL_SCORES, read_rows, write_manifest


def clip(cls: str, ytid: str, start: float, end: float, a2v: float | None, v2a: float | None,
         ia: float | None, split: str = "train", seg: int = 30) -> dict:
    src = f"{ytid}_{seg:06d}_{seg + 10:06d}"
    row = {c: None for c in ALL_SCORES}
    row.update(clip_id=clip_id_for(src, start, end), source_id=src, shot_id=f"{src}_shot000",
               class_name=cls, split=split, start=start, end=end, n_windows=3,
               sync_a2v=a2v, sync_v2a=v2a, imagebind_ia=ia, status="ok", error=None)
    return row


def pool(cls: str, n: int, rng: random.Random, split: str = "train") -> list[dict]:
    """n clips of n different videos with distinct random scores."""
    return [clip(cls, f"{cls[:3]}vid{i:04d}", 0.5, 4.0, rng.random(), rng.random(),
                 rng.random() * 0.5, split) for i in range(n)]


AVSYNC = get_recipe("avsync15")


def ok_rows(rows: list[dict], cls: str | None = None) -> list[dict]:
    return [r for r in rows if r["status"] == "ok" and (cls is None or r["class_name"] == cls)]


def test_rank_score_formula_and_nulls() -> None:
    assert rank_score({"sync_a2v": 0.4, "sync_v2a": 0.6, "imagebind_ia": 0.3}) == pytest.approx(0.8)
    assert rank_score({"sync_a2v": 0.4, "sync_v2a": None, "imagebind_ia": 0.3}) is None
    assert rank_score({"sync_a2v": 0.4, "sync_v2a": float("nan"), "imagebind_ia": 0.3}) is None


def test_avsync15_keeps_top_100_per_class_split_90_10(tmp_path) -> None:
    rng = random.Random(1)
    clips = pool("dog_barking", 130, rng) + pool("hammering", 100, rng)
    rows, summary = select_rows(clips, AVSYNC, seed=0)
    assert len(rows) == len(clips)                       # every clip has a row
    for cls in ("dog_barking", "hammering"):
        sel = ok_rows(rows, cls)
        assert len(sel) == 100
        assert Counter(r["split"] for r in sel) == {"train": 90, "test": 10}
        assert summary["per_class"][cls]["train"] == 90 and summary["per_class"][cls]["test"] == 10
    dog = [r for r in rows if r["class_name"] == "dog_barking"]
    worst_kept = min(r["rank_score"] for r in dog if r["status"] == "ok")
    skipped = [r for r in dog if r["status"] == "skipped"]
    assert len(skipped) == 30 and all(r["rank_score"] < worst_kept for r in skipped)
    assert all("beyond per_class 100" in r["error"] for r in skipped)
    assert summary["shortfall"] == {}
    r0 = ok_rows(rows)[0]
    assert r0["name"] == f"{r0['class_name']}/{split_source_id(r0['source_id'])[0]}_000030_000040_0.5_4.0"
    assert "." not in r0["key"] and "/" not in r0["key"]
    write_manifest(tmp_path, "selected", rows)           # rows fit the SELECTED schema
    assert len(read_rows(tmp_path, "selected")) == len(rows)


def test_selection_is_deterministic_for_a_seed() -> None:
    clips = pool("dog_barking", 150, random.Random(2))
    a, _ = select_rows(clips, AVSYNC, seed=7)
    b, _ = select_rows(list(reversed(clips)), AVSYNC, seed=7)
    c, _ = select_rows(clips, AVSYNC, seed=8)
    key = lambda rows: sorted((r["name"], r["status"], r["split"]) for r in rows)  # noqa: E731
    assert key(a) == key(b)
    assert key(a) != key(c)                              # the seed moves the test split
    assert {r["name"] for r in ok_rows(a)} == {r["name"] for r in ok_rows(c)}  # ranking does not


def test_shortfall_is_reported_not_hidden() -> None:
    rng = random.Random(3)
    clips = pool("dog_barking", 100, rng) + pool("frog_croaking", 45, rng)
    rows, summary = select_rows(clips, AVSYNC, seed=0, classes=["dog_barking", "frog_croaking",
                                                                  "lions_roaring"])
    assert summary["shortfall"] == {"frog_croaking": 55, "lions_roaring": 100}
    assert summary["per_class"]["frog_croaking"]["selected"] == 45
    assert Counter(r["split"] for r in ok_rows(rows, "frog_croaking")) == {"train": 40, "test": 5}
    assert any("frog_croaking (-55)" in w for w in summary["warnings"])


def test_at_most_one_clip_per_source_segment() -> None:
    rng = random.Random(4)
    clips = pool("hammering", 5, rng)
    twin = dict(clips[0], start=5.0, end=9.0, clip_id=clip_id_for(clips[0]["source_id"], 5.0, 9.0),
                sync_a2v=0.0, sync_v2a=0.0, imagebind_ia=0.0)
    rows, _ = select_rows(clips + [twin], AVSYNC, seed=0)
    by_name = {r["clip_id"]: r for r in rows}
    assert by_name[twin["clip_id"]]["status"] == "skipped"
    assert "max_per_source" in by_name[twin["clip_id"]]["error"]
    assert len(ok_rows(rows)) == 5


def test_null_scores_rank_last_and_names_round_to_a_decimal() -> None:
    clips = [clip("cap_gun_shooting", "vid1", 1.0, 3.5, None, 0.9, 0.9),
             clip("cap_gun_shooting", "vid2", 2.53, 5.47, 0.2, 0.2, 0.1)]
    rows, _ = select_rows(clips, {"select": {"per_class": 1, "test_per_class": 0}}, seed=0)
    picked = ok_rows(rows)[0]
    assert picked["source_id"].startswith("vid2")        # a scored clip beats an unscored one
    assert picked["name"].endswith("_2.5_5.5") and (picked["start"], picked["end"]) == (2.5, 5.5)


def test_manual_rejections_are_refilled_from_the_ranking() -> None:
    clips = pool("playing_cello", 110, random.Random(5))
    rows, _ = select_rows(clips, AVSYNC, seed=0)
    ranked = sorted(rows, key=lambda r: -r["rank_score"])
    best, first_out = ranked[0], ranked[100]
    assert best["status"] == "ok" and first_out["status"] == "skipped"
    rows2, summary = select_rows(clips, AVSYNC, seed=0, decisions={best["name"]: "reject"})
    status = {r["name"]: (r["status"], r["error"]) for r in rows2}
    assert status[best["name"]] == ("rejected", "review: rejected by reviewer")
    assert status[first_out["name"]][0] == "ok"
    assert len(ok_rows(rows2)) == 100 and summary["per_class"]["playing_cello"]["review_rejected"] == 1
    # a reviewer "keep" outranks the automatic ranking
    worst = ranked[-1]
    rows3, _ = select_rows(clips, AVSYNC, seed=0, decisions={worst["name"]: "keep"})
    assert {r["name"]: r["status"] for r in rows3}[worst["name"]] == "ok"


def test_vggss_keeps_all_clips_and_the_source_split() -> None:
    rng = random.Random(6)
    clips = pool("owl_hooting", 30, rng, "train") + pool("owl_hooting", 3, rng, "test")[:3]
    for i, c in enumerate(clips[30:]):       # distinct videos for the test part
        c["source_id"] = f"tst{i}_000000_000010"
        c["clip_id"] = clip_id_for(c["source_id"], c["start"], c["end"])
    rows, summary = select_rows(clips, get_recipe("vggss"), seed=0)
    assert len(ok_rows(rows)) == 33
    assert Counter(r["split"] for r in ok_rows(rows)) == {"train": 30, "test": 3}
    assert summary["shortfall"] == {}


def landscape_clips(videos_per_class: dict[str, int]) -> list[dict]:
    downloads, sources = [], []
    for cls, n in videos_per_class.items():
        for i in range(n):
            sid = f"{cls[:4]}{i:03d}_000000_000100"
            downloads.append({"source_id": sid, "status": "ok", "duration": 100.0,
                              "width": 2560, "height": 1440})
            sources.append({"source_id": sid, "class_name": cls, "split": None})
    return fixed_clips(downloads, 10.0, sources=sources, min_resolution=(1280, 720))


def test_landscape_balanced_test_split_by_whole_videos() -> None:
    clips = landscape_clips({"waterfall_burbling": 12, "volcano_eruption": 6, "raining": 20})
    rows, summary = select_rows(clips, get_recipe("landscape"), seed=0)
    # no balancing, no gating: 380 clips, of which 12 held out (below)
    assert len(rows) == 380 and len(ok_rows(rows)) == 368
    # default: floor(0.1 * smallest class (60 clips)) = 6 test clips in every class
    tests = Counter(r["class_name"] for r in ok_rows(rows) if r["split"] == "test")
    assert set(tests.values()) == {6} and len(tests) == 3
    # the 6 test clips of a class come from one video; its other 4 clips are held out
    held = [r for r in rows if r["status"] == "skipped"]
    assert len(held) == 12 and all("held out of train" in r["error"] for r in held)
    split_of = defaultdict(set)
    for r in ok_rows(rows):
        split_of[r["source_id"]].add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())    # no video in both splits


def test_balanced_test_with_a_given_number_and_a_too_small_class() -> None:
    rng = random.Random(8)
    clips = pool("dog_barking", 40, rng) + pool("hammering", 12, rng)
    params = {"select": {"per_class": None, "test_per_class": 20, "balanced_test": True}}
    rows, summary = select_rows(clips, params, seed=1)
    tests = Counter(r["class_name"] for r in ok_rows(rows) if r["split"] == "test")
    assert tests == {"dog_barking": 12, "hammering": 12}
    assert any("using 12" in w for w in summary["warnings"])
    params["select"]["test_per_class"] = 5
    rows, _ = select_rows(clips, params, seed=1)
    assert Counter(r["class_name"] for r in ok_rows(rows) if r["split"] == "test") == \
        {"dog_barking": 5, "hammering": 5}


def test_upstream_failures_are_carried() -> None:
    rng = random.Random(9)
    clips = pool("dog_barking", 3, rng)
    clips[0] = dict(clips[0], status="rejected", error="merge: clip length 1.50s < min_len 2.00s")
    clips[1] = dict(clips[1], source_id="not a source id")
    rows, _ = select_rows(clips, AVSYNC, seed=0)
    assert [r["status"] for r in rows] == ["rejected", "failed", "ok"]
    assert "min_len" in rows[0]["error"] and "cannot name clip" in rows[1]["error"]
