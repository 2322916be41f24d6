"""Exact reproduction of an AVSync15 list on generated media named like the release."""
from __future__ import annotations

import subprocess
from pathlib import Path

from curate.reproduce import reproduce_list
from manifests.schemas import read_rows, write_manifest
from manifests.sources import format_avsync_name


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
        assert format_avsync_name(r["class_name"], ytid, s, e, r["start"], r["end"]) == r["name"]
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
