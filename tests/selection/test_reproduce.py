"""Exact reproduction of an AVSync15 list on generated media named like the release."""
from __future__ import annotations

import subprocess
from pathlib import Path

from curate.selection.exact_lists import reproduce_list
from manifests.schemas import read_rows, write_manifest
from manifests.names import format_clip_name


def make_mp4(path: Path, seconds: float) -> None:
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc=size=64x48:rate=8:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", str(path)],
        check=True, timeout=60)


# lines shaped like the released list: ytids with '-' and '_', times like 2.5 / 6.0 / 10.0
GOOD = [
    "dog_barking/AbC-d_eF12_000030_000040_2.5_6.0",
    "playing_violin__fiddle/_x9-Yz_Q0wE_000000_000010_0.0_10.0",
    "hammering/Zz_9__zz-aa_000120_000130_1.25_3.75",
]
MISSING = "lions_roaring/NoSuchVid00_000010_000020_1.0_4.0"
TOO_LONG = "frog_croaking/ShortVid_01_000005_000015_4.0_9.5"   # media lasts 6 s
OUTSIDE = "frog_croaking/ShortVid_01_000005_000015_4.0_12.0"   # past the 10-s segment
BAD = "chicken_crowing/not-a-valid-name"


def media(tmp_path: Path) -> Path:
    raw = tmp_path / "media" / "raw"
    raw.mkdir(parents=True)
    for sid in ("AbC-d_eF12_000030_000040", "_x9-Yz_Q0wE_000000_000010", "Zz_9__zz-aa_000120_000130"):
        make_mp4(raw / f"{sid}.mp4", 10.0)
    make_mp4(raw / "ShortVid_01_000005_000015.mp4", 6.0)
    return raw


def test_reproduce_exact_names_from_a_list_file(tmp_path: Path) -> None:
    raw = media(tmp_path)
    lst = tmp_path / "test.txt"
    lst.write_text("\n".join(GOOD + [MISSING, TOO_LONG, OUTSIDE, BAD, GOOD[0], ""]) + "\n")
    rows = reproduce_list(lst, media_dir=raw)
    assert [r["name"] for r in rows] == GOOD + [MISSING, TOO_LONG, OUTSIDE, BAD, GOOD[0]]
    ok = rows[:3]
    assert all(r["status"] == "ok" and r["error"] is None and r["split"] == "test" for r in ok)
    assert [(r["start"], r["end"]) for r in ok] == [(2.5, 6.0), (0.0, 10.0), (1.25, 3.75)]
    assert [r["source_id"] for r in ok] == ["AbC-d_eF12_000030_000040", "_x9-Yz_Q0wE_000000_000010",
                                            "Zz_9__zz-aa_000120_000130"]
    assert [r["class_name"] for r in ok] == ["dog_barking", "playing_violin__fiddle", "hammering"]
    assert ok[0]["key"] == "dog_barking-AbC-d_eF12_000030_000040_2p5_6p0"
    # the name rebuilt from the row's fields is the list line, character for character
    for r in ok:
        ytid = r["source_id"].rsplit("_", 2)[0]
        s, e = (int(x) for x in r["source_id"].rsplit("_", 2)[1:])
        assert format_clip_name(r["class_name"], ytid, s, e, r["start"], r["end"]) == r["name"]
    st = {r["name"]: (r["status"], r["error"]) for r in rows[3:7]}
    assert st[MISSING][0] == "failed" and "media missing" in st[MISSING][1]
    assert st[TOO_LONG][0] == "rejected" and "media lasts 6" in st[TOO_LONG][1]
    assert st[OUTSIDE][0] == "rejected" and "not inside the 10s segment" in st[OUTSIDE][1]
    assert st[BAD][0] == "rejected" and "bad name" in st[BAD][1]
    assert rows[7]["status"] == "rejected" and "duplicate" in rows[7]["error"] and rows[7]["key"] is None
    write_manifest(tmp_path, "selected", rows)
    assert len(read_rows(tmp_path, "selected")) == 8


def test_reproduce_from_downloads_rows_reports_failed_sources() -> None:
    downloads = [
        {"source_id": "AbC-d_eF12_000030_000040", "status": "ok", "path": "x.mp4", "duration": 10.0},
        {"source_id": "NoSuchVid00_000010_000020", "status": "failed", "reason": "unavailable",
         "error": "Video unavailable"},
    ]
    sources = [{"source_id": d["source_id"]} for d in downloads]
    rows = reproduce_list([GOOD[0], MISSING, GOOD[2]], downloads, sources=sources, split="train")
    assert [r["status"] for r in rows] == ["ok", "failed", "failed"]
    assert rows[1]["error"] == "reproduce: download failed: unavailable Video unavailable"
    assert rows[2]["error"] == "reproduce: source not in the sources table"
    assert rows[0]["split"] == "train"


# ---------------------------------------------------------------- list forms (issue 9, item 6)

def test_release_lines_with_mp4_give_the_same_clips_as_without(tmp_path: Path) -> None:
    raw = media(tmp_path)
    plain = reproduce_list(GOOD, media_dir=raw, split="train")
    with_mp4 = reproduce_list([g + ".mp4" for g in GOOD], media_dir=raw, split="train")
    assert all(r["status"] == "ok" for r in with_mp4), [r["error"] for r in with_mp4]
    assert with_mp4 == plain                       # names without .mp4, same keys and times
    assert [r["name"] for r in with_mp4] == GOOD


def test_csv_form_gives_the_same_clips_and_a_clip_per_split(tmp_path: Path) -> None:
    raw = media(tmp_path)
    csv = tmp_path / "avsync15.csv"
    csv.write_text(
        "vid,label,split\n"
        "AbC-d_eF12_000030_000040_2.5_6.0,dog barking,train\n"            # spoken label
        '_x9-Yz_Q0wE_000000_000010_0.0_10.0,"playing violin, fiddle",test\n'
        "hammering/Zz_9__zz-aa_000120_000130_1.25_3.75.mp4,hammering,train\n"   # class in vid
        "AbC-d_eF12_000030_000040_2.5_6.0,dog_barking,test\n"            # same clip, other split
        "AbC-d_eF12_000030_000040_2.5_6.0,dog barking,train\n"           # same clip, same split
        "AbC-d_eF12_000030_000040_7.0_8.5,dog barking,test\n"            # 1.5-s clip
        "dog_barking/Zz_9__zz-aa_000120_000130_1.0_4.0,hammering,train\n"   # class != label
        "Zz_9__zz-aa_000120_000130_1.0_4.0,hammering\n")                 # missing column
    rows = reproduce_list(csv, media_dir=raw)
    assert len(rows) == 8                                                 # the header is no row
    txt = {r["name"]: r for r in reproduce_list(GOOD, media_dir=raw)}
    for r in rows[:3]:
        assert r["status"] == "ok", r["error"]
        assert {**r, "split": None} == {**txt[r["name"]], "split": None}
    assert [r["split"] for r in rows[:4]] == ["train", "test", "train", "test"]
    assert rows[3]["status"] == "ok" and rows[3]["key"] == rows[0]["key"]   # both splits
    assert rows[4]["status"] == "rejected" and "duplicate" in rows[4]["error"]
    assert rows[5]["status"] == "ok" and rows[5]["end"] - rows[5]["start"] == 1.5
    assert rows[6]["status"] == "rejected" and "label" in rows[6]["error"]
    assert rows[7]["status"] == "rejected" and "columns" in rows[7]["error"]


def test_same_clip_in_train_and_test_lists_comes_out_in_both(tmp_path: Path) -> None:
    raw = media(tmp_path)
    (tmp_path / "train.txt").write_text("\n".join(GOOD) + "\n")
    (tmp_path / "test.txt").write_text(GOOD[0] + ".mp4\n")
    rows = reproduce_list(tmp_path / "train.txt", media_dir=raw) + \
        reproduce_list(tmp_path / "test.txt", media_dir=raw)
    assert [(r["name"], r["split"], r["status"]) for r in rows] == \
        [(g, "train", "ok") for g in GOOD] + [(GOOD[0], "test", "ok")]


def test_sources_reader_downloads_a_segment_listed_in_both_splits_once(tmp_path: Path) -> None:
    from manifests.source_lists import read_avsync_list
    csv = tmp_path / "list.csv"
    csv.write_text("vid,label,split\nAbC_000030_000040_2.5_6.0,dog barking,train\n"
                   "AbC_000030_000040_2.5_6.0,dog barking,test\n"
                   "AbC_000030_000040_0.0_1.5,dog barking,test\n"
                   "AbC_000030_000040_4.0_7.0,cat purring,test\n")       # class contradicts
    rows = read_avsync_list(csv)
    assert [(r["source_id"], r["status"]) for r in rows] == \
        [("AbC_000030_000040", "ok"), ("AbC_000030_000040", "rejected")]
    assert rows[0]["split"] == "train" and "class_name" in rows[1]["error"]


def test_one_name_grammar_for_sources_reproduction_and_shards() -> None:
    import shards.writer as writer
    from manifests import names, source_lists as sources
    from shards.writer import key_from_name, parse_name
    assert not hasattr(writer, "NAME_RE")                   # no second definition
    assert sources.ClipName is names.ClipName and writer.ClipName is names.ClipName
    for n in GOOD:
        c = parse_name(n + ".mp4")
        assert c == sources.parse_clip_name(n) == names.parse_clip_name(n)
        assert c.name == n and key_from_name(n + ".mp4") == key_from_name(n)
    # times kept as written for the key (2.50 is not 2.5 in a file name)
    assert key_from_name("c/AbC_000000_000010_2.50_6.0") == "c-AbC_000000_000010_2p50_6p0"
    for bad in ("AbC_000000_000010_2.5_6.0", "c/AbC_00000_000010_2.5_6.0", "c/../x_000000_000010_1_2"):
        try:
            parse_name(bad)
        except ValueError as e:
            assert "not a clip name" in str(e)
        else:
            raise AssertionError(bad)


def test_unique_cut_items_cuts_a_clip_of_two_splits_once() -> None:
    import pytest
    from curate.selection.exact_lists import unique_cut_items
    a = {"key": "k1", "src": "s.mp4", "dst": "k1.mp4", "start": 2.5, "end": 6.0}
    b = {"key": "k2", "src": "s.mp4", "dst": "k2.mp4", "start": 7.0, "end": 9.0}
    assert unique_cut_items([a, b, dict(a)]) == [a, b]
    with pytest.raises(ValueError, match="k1"):
        unique_cut_items([a, {**a, "end": 7.0}])
