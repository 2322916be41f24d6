"""AVSyncD folder export: videos/<class>/<name>.mp4, train.txt, test.txt, class_mapping.json."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from curate.reports.export import export_folder
from shards.writer import key_from_name, name_from_key, parse_name

NAMES = [
    ("dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0", "train"),
    ("dog_barking/Zz-_0123456_000100_000110_0.0_3.25", "test"),
    ("dog_bow-wow/Qq_Ww-EeRrT_000000_000010_4.0_7.0", "train"),
    ("playing_violin__fiddle/a1b2c3d4e5f_000010_000020_1.5_4.5", "train"),
]


def _rows_and_clips(tmp_path: Path) -> tuple[list[dict], dict[str, Path]]:
    rows, clips = [], {}
    for i, (name, split) in enumerate(NAMES):
        key = key_from_name(name)
        p = tmp_path / "clips" / f"{key}.mp4"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"clip {i}".encode() * 50)  # content identifies the clip
        clips[key] = p
        rows.append({"key": key, "name": name, "class_name": name.split("/")[0], "split": split,
                     "status": "ok", "error": None})
    # a rejected row never reaches the dataset (and has no clip file)
    rows.append({"key": "frog-XXXXXXXXXXX_000000_000010_0p0_3p0",
                 "name": "frog/XXXXXXXXXXX_000000_000010_0.0_3.0", "class_name": "frog",
                 "split": "train", "status": "rejected", "error": "select: over class quota"})
    return rows, clips


def test_export_writes_avsyncd_layout(tmp_path):
    rows, clips = _rows_and_clips(tmp_path)
    dest = tmp_path / "AVSync15"
    export_folder(rows, clips, dest)
    train = (dest / "train.txt").read_text().splitlines()
    test = (dest / "test.txt").read_text().splitlines()
    assert train == sorted(f"{n}.mp4" for n, s in NAMES if s == "train")
    assert test == ["dog_barking/Zz-_0123456_000100_000110_0.0_3.25.mp4"]
    for i, (name, _) in enumerate(NAMES):
        f = dest / "videos" / f"{name}.mp4"  # what AVSyncD opens: join(data_root, line)
        assert f.read_bytes() == f"clip {i}".encode() * 50
    # every line round-trips: line -> name -> key -> name, and the class is the folder
    for line in train + test:
        name = line[: -len(".mp4")]
        assert name_from_key(key_from_name(name)) == name
        assert line.split("/")[0] == parse_name(name).class_name
    mapping = json.loads((dest / "class_mapping.json").read_text())
    assert mapping == {"dog_barking": "dog barking", "dog_bow-wow": "dog bow-wow",
                       "playing_violin__fiddle": "playing violin fiddle"}
    assert not (dest / "videos" / "frog").exists()
    assert sorted(p.name for p in dest.iterdir()) == ["class_mapping.json", "test.txt",
                                                       "train.txt", "videos"]


def test_export_is_rerunnable_and_can_hard_link(tmp_path):
    rows, clips = _rows_and_clips(tmp_path)
    dest = tmp_path / "out"
    export_folder(rows, clips, dest, link=True)
    f = dest / "videos" / f"{NAMES[0][0]}.mp4"
    assert os.path.samefile(f, clips[key_from_name(NAMES[0][0])])
    export_folder(rows, clips, dest, link=True)  # again: same result, no error
    assert len((dest / "train.txt").read_text().splitlines()) == 3
    assert not list(dest.rglob("*.tmp"))


def test_export_rejects_bad_input_before_writing(tmp_path):
    rows, clips = _rows_and_clips(tmp_path)
    dest = tmp_path / "out"
    missing = dict(clips)
    missing.pop(key_from_name(NAMES[1][0]))
    with pytest.raises(ValueError, match="no clip file"):
        export_folder(rows, missing, dest)
    evil = rows[:1] + [{**rows[1], "name": "../../etc/AbCdEfGhIjK_000030_000040_2.5_6.0"}]
    with pytest.raises(ValueError, match="not a clip name"):
        export_folder(evil, clips, dest)
    with pytest.raises(ValueError, match="train/test"):
        export_folder([{**rows[0], "split": "val"}], clips, dest)
    assert not dest.exists()


def test_export_run_exports_the_sharded_clips_of_a_run(tmp_path):
    from curate.reports.export import export_run
    from manifests.schemas import write_manifest
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="curate shard"):
        export_run(out, tmp_path / "dest")
    rows, _ = _rows_and_clips(tmp_path)
    clip_dir = out / "media" / "clips"
    clip_dir.mkdir(parents=True)
    sharded = [r for r in rows if r["status"] == "ok"][:3]  # the 4th was not cut
    for r in sharded:
        (clip_dir / f"{r['key']}.mp4").write_bytes(r["name"].encode())
    write_manifest(out, "selected", [{k: r[k] for k in ("key", "name", "class_name", "split",
                                                         "status", "error")} for r in rows])
    write_manifest(out, "shards", [{"key": r["key"], "split": r["split"], "shard": "x.tar",
                                    "offset": 0, "size": 1, "sha256": "0"} for r in sharded])
    res = export_run(out, tmp_path / "dest")
    assert res.n_clips == 3 and res.layout == "class"
    # not real mp4s: listed as unreadable, the export goes on
    assert len(res.sync_dropped) == 3 and all("unreadable" in w["reasons"][0]
                                              for w in res.sync_dropped)
    assert "--text-encodings-only" in res.text_encodings
    lines = ((tmp_path / "dest" / "train.txt").read_text().splitlines()
             + (tmp_path / "dest" / "test.txt").read_text().splitlines())
    assert sorted(lines) == sorted(f"{r['name']}.mp4" for r in sharded)
    for r in sharded:
        assert (tmp_path / "dest" / "videos" / f"{r['name']}.mp4").read_bytes() == r["name"].encode()


def test_export_lists_the_clips_the_released_sync_trainer_would_silently_replace(tmp_path):
    """avsync/data.py needs av_duration >= 2 + 20 * 0.2 = 6 s and fps >= 12."""
    from testkit import avmedia
    from curate.reports.export import REPORT_FILE, export_run
    from tests.fake_run import fake_run
    long = avmedia.make_clip(tmp_path / "long.mp4", 6.5, "12")
    short = avmedia.make_clip(tmp_path / "short.mp4", 3.0, "12")
    slow = avmedia.make_clip(tmp_path / "slow.mp4", 6.5, "10")
    tiny = avmedia.make_clip(tmp_path / "tiny.mp4", 1.5, "12")
    # frames in bursts: average ~9 fps, guessed rate 30 (what torchvision reports): kept
    burst = avmedia.make_burst_clip(tmp_path / "burst.mp4", duration=7.2)
    clips = [("siren/synth0005_000000_000010_0.0_7.2", "test", burst),
             ("drum_beat/synth0001_000000_000010_0.0_6.5", "train", long),
             ("drum_beat/synth0002_000000_000010_0.5_3.5", "train", short),
             ("siren/synth0003_000000_000010_1.0_7.5", "test", slow),
             ("siren/synth0004_000000_000010_2.0_3.5", "train", tiny)]
    out = fake_run(tmp_path / "run", "vggss", clips)
    res = export_run(out, tmp_path / "VGGSS")
    dropped = {w["line"]: w for w in res.sync_dropped}
    assert sorted(dropped) == ["drum_beat/synth0002_000000_000010_0.5_3.5.mp4",
                               "siren/synth0003_000000_000010_1.0_7.5.mp4",
                               "siren/synth0004_000000_000010_2.0_3.5.mp4"]
    w = dropped["drum_beat/synth0002_000000_000010_0.5_3.5.mp4"]
    assert w["split"] == "train" and abs(w["av_duration"] - 3.0) < 0.05
    assert any("< 6 s" in r for r in w["reasons"])
    assert any("video_fps 10.00 < 12" in r
               for r in dropped["siren/synth0003_000000_000010_1.0_7.5.mp4"]["reasons"])
    assert [g["line"] for g in res.gen_short] == ["siren/synth0004_000000_000010_2.0_3.5.mp4"]
    report = json.loads((tmp_path / "VGGSS" / REPORT_FILE).read_text())
    assert report["sync_min_duration_s"] == 6.0
    assert [w["line"] for w in report["sync_dropped"]] == [w["line"] for w in res.sync_dropped]
    assert report["text_encoder"] is None and "--text-encodings-only" in report["text_encodings"]
