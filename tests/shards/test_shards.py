"""Cutting clips, writing WebDataset shards, reading them back in a fresh process, verifying."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import wave
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from testkit import avmedia
from testkit.avmedia import brightness
from curate.ops.cut import CutError, cut_clip, output_size
from decoding.media import probe
from shards.verify import format_report, verify_shards
from shards.writer import (Sample, key_from_name, make_sample, name_from_key, parse_name,
                           prompt_from_class, write_shards)

FPS = 25


def make_av(path, duration, size=(160, 120), fps=FPS, burst=None, sr=16000):
    return avmedia.make_av(path, duration, fps, size=size, burst=burst, sr=sr, one_keyframe=True)


def frame_means(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.to_ndarray(format="rgb24").mean()) for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return make_av(tmp_path_factory.mktemp("src") / "src.mp4", 2.4, size=(320, 240))


# ------------------------------------------------------------------ cut

def test_cut_is_frame_accurate(src, tmp_path):
    start, end = 0.8, 2.0  # source frames 20 .. 49
    info = cut_clip(src, tmp_path / "c.mp4", start, end)
    assert abs(info["duration"] - (end - start)) <= 1.0 / FPS
    means = frame_means(tmp_path / "c.mp4")
    assert len(means) == 30
    assert abs(means[0] - brightness(20)) < 1.6   # neighbours differ by 4 grey levels
    assert abs(means[-1] - brightness(49)) < 1.6
    assert info["has_audio"] and info["bytes"] == (tmp_path / "c.mp4").stat().st_size
    assert (tmp_path / "c.mp4").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["c.mp4"]  # no temp file left


def test_cut_between_frames_is_within_one_frame(src, tmp_path):
    # 1.23 s lies inside frame 30 (1.20..1.24); ffmpeg's accurate seek starts at the first
    # frame at or after the cut time, frame 31: at most one frame late
    info = cut_clip(src, tmp_path / "c.mp4", 1.23, 1.83)
    first = frame_means(tmp_path / "c.mp4")[0]
    assert min(abs(first - brightness(30)), abs(first - brightness(31))) < 1.6
    assert abs(info["duration"] - 0.6) <= 1.0 / FPS


def test_cut_caps_short_side_without_upscaling(src, tmp_path):
    assert cut_clip(src, tmp_path / "a.mp4", 0, 1, max_short_side=120)[("width")] == 160
    info = probe(tmp_path / "a.mp4")
    assert (info["width"], info["height"]) == (160, 120)
    info = cut_clip(src, tmp_path / "b.mp4", 0, 1, max_short_side=480)
    assert (info["width"], info["height"]) == (320, 240)
    assert output_size(240, 320, 120) == (120, 160)   # portrait: width is the short side
    assert output_size(641, 361, None) == (640, 360)  # yuv420p needs even sizes


def test_cut_errors_are_cut_errors_and_leave_nothing(src, tmp_path):
    with pytest.raises(CutError, match="after the source's end"):
        cut_clip(src, tmp_path / "out" / "late.mp4", 5.0, 6.0)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(CutError, match="probe"):
        cut_clip(bad, tmp_path / "out" / "c.mp4", 0, 1)
    with pytest.raises(CutError, match="does not exist"):
        cut_clip(tmp_path / "missing.mp4", tmp_path / "c.mp4", 0, 1)
    with pytest.raises(CutError, match="interval"):
        cut_clip(bad, tmp_path / "c.mp4", 2, 1)
    assert not (tmp_path / "c.mp4").exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cut_failing_ffmpeg_raises_with_stderr_tail(src, tmp_path, monkeypatch):
    import curate.ops.cut as cut
    real = cut.ffmpeg_command
    # an encoder option ffmpeg rejects: the error must carry ffmpeg's own message
    monkeypatch.setattr(cut, "ffmpeg_command",
                        lambda *a: real(*a)[:-1] + ["-crf", "notanumber", real(*a)[-1]])
    with pytest.raises(CutError, match="exited with") as e:
        cut_clip(src, tmp_path / "c.mp4", 0, 1)
    assert "crf" in str(e.value).lower() or "notanumber" in str(e.value)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ names and keys

@pytest.mark.parametrize("name", [
    "dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0",
    "dog_bow-wow/Ab-d_fGh-jK_000000_000010_0.0_3.25",
    "playing_violin__fiddle/-_aB_cD-eFg_000120_000130_10.0_12.125",
])
def test_key_round_trip(name):
    key = key_from_name(name)
    assert "." not in key and "/" not in key
    assert name_from_key(key) == name
    assert name_from_key(key, class_names=[parse_name(name).class_name, "dog"]) == name


def test_key_round_trip_of_non_youtube_ids_needs_the_class_list():
    # a 12-character id after a class with '-': only the class list makes the split certain
    name = "dog_bow-wow/-_aB_cD-eF_g_000120_000130_10.0_12.125"
    key = key_from_name(name)
    assert name_from_key(key, class_names=["dog_bow-wow", "dog_bow"]) == name
    with pytest.raises(ValueError):
        name_from_key(key, class_names=["frog"])


def test_key_example_and_bad_names():
    assert key_from_name("dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0") == \
        "dog_barking-AbCdEfGhIjK_000030_000040_2p5_6p0"
    for bad in ["dog/../etc_000030_000040_2.5_6.0", "dog/AbC_30_40_2.5_6.0",
                "AbCdEfGhIjK_000030_000040_2.5_6.0", "dog/Ab.cd_000030_000040_2.5_6.0", ""]:
        with pytest.raises(ValueError):
            key_from_name(bad)
    assert prompt_from_class("playing_violin__fiddle") == "playing violin fiddle"


# ------------------------------------------------------------------ writing + reading back

CLASSES = ["dog_barking", "dog_bow-wow", "frog_croaking"]


def _samples(clip: Path, n: int, split: str = "train") -> list[Sample]:
    out = []
    for i in range(n):
        cls = CLASSES[i % 3]
        name = f"{cls}/Yt{i:03d}-_abcd_{i:06d}_{i + 10:06d}_{i % 4}.4_{i % 4 + 2}.0"
        sel = {"name": name, "key": key_from_name(name), "class_name": cls, "split": split,
               "start": i % 4 + 0.4, "end": i % 4 + 2.0, "source_id": f"Yt{i:03d}-_abcd_{i:06d}_{i + 10:06d}",
               "clip_id": f"c{i}", "rank_score": 0.1 * i}
        source = {"ytid": f"Yt{i:03d}-_abcd", "start": float(i), "end": float(i + 10),
                  "url": f"http://127.0.0.1/{i}", "label": cls.replace("_", " ")}
        clip_row = {"n_windows": i + 1, "pixel_diff": 0.05 + i / 100, "clip_diff": None,
                    "sync_a2v": 0.5}
        out.append(make_sample(sel, clip, CLASSES.index(cls), source, clip_row, duration=1.6))
    return out


@pytest.fixture()
def clip(src, tmp_path) -> Path:
    cut_clip(src, tmp_path / "clip.mp4", 0.4, 2.0)
    return tmp_path / "clip.mp4"


READER = r"""
import io, json, sys
import av, webdataset as wds
out = {}
ds = wds.WebDataset(sys.argv[1:], shardshuffle=False)
for s in ds:
    with av.open(io.BytesIO(s["mp4"])) as c:
        n = sum(1 for _ in c.decode(video=0))
    out[s["__key__"]] = {"json": json.loads(s["json"]), "cls": s["cls"].decode(),
                         "txt": s["txt"].decode(), "frames": n, "url": s["__url__"]}
print(json.dumps(out))
"""


def test_fresh_process_reads_shards_with_plain_webdataset(clip, tmp_path):
    samples = _samples(clip, 7)
    rows = write_shards(tmp_path / "out", samples, "train", max_count=3)
    shards = sorted((tmp_path / "out" / "shards").glob("*.tar"))
    assert [p.name for p in shards] == [f"train-{n:06d}.tar" for n in range(3)]
    res = subprocess.run([sys.executable, "-c", READER, *map(str, shards)], capture_output=True,
                         text=True, check=True, timeout=60)
    got = json.loads(res.stdout)
    assert sorted(got) == sorted(s.key for s in samples)
    for s in samples:
        g = got[s.key]
        assert g["json"] == s.meta  # everything written comes back, None scores included
        assert g["json"]["scores"]["clip_diff"] is None and g["json"]["url"].startswith("http")
        assert int(g["cls"]) == s.class_index and g["txt"] == s.text
        assert g["frames"] == 40  # 1.6 s at 25 fps
    assert {r["key"] for r in rows} == {s.key for s in samples}


def test_index_stats_and_manifest_rows_match_the_tar(clip, tmp_path):
    samples = _samples(clip, 4)
    rows = write_shards(tmp_path / "out", samples, "test", max_count=3)
    d = tmp_path / "out" / "shards"
    blob = (d / "test-000000.tar").read_bytes()
    index = pq.read_table(d / "test-000000.parquet").to_pylist()
    assert len(index) == 3 * 4
    import hashlib
    for r in index:  # offsets point at each member's data
        assert hashlib.sha256(blob[r["offset"]:r["offset"] + r["size"]]).hexdigest() == r["sha256"]
    for r in rows:  # each sample's byte range is its own valid tar stream
        data = (d / r["shard"]).read_bytes()[r["offset"]:r["offset"] + r["size"]]
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        import io
        with tarfile.open(fileobj=io.BytesIO(data + b"\0" * 1024)) as t:
            assert t.getnames() == [f"{r['key']}.{e}" for e in ("mp4", "json", "cls", "txt")]
    stats = json.loads((d / "test-000000.stats.json").read_text())
    assert stats["count"] == 3 and stats["bytes"] == len(blob)
    assert sum(stats["per_class"].values()) == 3 and stats["total_seconds"] == pytest.approx(4.8)
    with tarfile.open(d / "test-000000.tar") as t:
        assert {m.mtime for m in t.getmembers()} == {0}


def test_write_is_deterministic_and_limits_bytes(clip, tmp_path):
    samples = _samples(clip, 5)
    write_shards(tmp_path / "a", samples, "train")
    write_shards(tmp_path / "b", list(reversed(samples)), "train")
    a = (tmp_path / "a" / "shards" / "train-000000.tar").read_bytes()
    assert a == (tmp_path / "b" / "shards" / "train-000000.tar").read_bytes()
    size = clip.stat().st_size
    write_shards(tmp_path / "c", samples, "train", max_bytes=int(2.5 * size) + 10 * 1024)
    assert len(list((tmp_path / "c" / "shards").glob("*.tar"))) == 3  # 2 + 2 + 1
    # a later, smaller run removes the stale higher-numbered shards of that split
    write_shards(tmp_path / "c", samples[:2], "train")
    assert sorted(p.name for p in (tmp_path / "c" / "shards").iterdir()) == [
        "train-000000.parquet", "train-000000.stats.json", "train-000000.tar"]


def test_invalid_samples_are_rejected_before_writing(clip, tmp_path):
    good = _samples(clip, 2)
    dotted = Sample(key="dog.barking", mp4=clip, meta={}, class_index=0, text="dog")
    with pytest.raises(ValueError, match="dot"):
        write_shards(tmp_path / "o", good + [dotted], "train")
    with pytest.raises(ValueError, match="duplicate"):
        write_shards(tmp_path / "o", good + [good[0]], "train")
    nan = Sample(key="k1", mp4=clip, meta={"s": float("nan")}, class_index=0, text="x")
    with pytest.raises(ValueError, match="JSON"):
        write_shards(tmp_path / "o", [nan], "train")
    missing = Sample(key="k2", mp4=tmp_path / "nope.mp4", meta={}, class_index=0, text="x")
    with pytest.raises(ValueError, match="does not exist"):
        write_shards(tmp_path / "o", [missing], "train")
    assert not (tmp_path / "o" / "shards").exists() or not any((tmp_path / "o" / "shards").iterdir())


# ------------------------------------------------------------------ verify

@pytest.fixture()
def written(clip, tmp_path) -> Path:
    write_shards(tmp_path / "out", _samples(clip, 6), "train", max_count=3)
    return tmp_path / "out" / "shards"


def test_verify_passes_intact_shards(written):
    report = verify_shards(written)
    assert report["ok"], format_report(report)
    assert report["summary"] == {"shards": 2, "ok": 2, "bad": 0, "samples": 6, "problems": 0}


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("ext", ["mp4", "json", "txt"])
def test_verify_flags_one_flipped_byte_in_any_member(written, ext):
    index = pq.read_table(written / "train-000001.parquet").to_pylist()
    member = next(r for r in index if r["member"].endswith("." + ext))
    _flip(written / "train-000001.tar", member["offset"] + member["size"] // 2)
    report = verify_shards(written)
    assert not report["ok"]
    assert report["shards"]["train-000000"]["ok"]
    problems = report["shards"]["train-000001"]["problems"]
    assert any("sha256 mismatch" in p and member["member"] in p for p in problems), problems


def test_verify_flags_a_flipped_header_or_padding_byte(written):
    index = pq.read_table(written / "train-000000.parquet").to_pylist()
    _flip(written / "train-000000.tar", index[1]["header_offset"] + 3)  # inside a member name
    problems = verify_shards(written)["shards"]["train-000000"]["problems"]
    assert problems and any("missing" in p or "unreadable" in p for p in problems)


def test_verify_flags_truncated_tar(written):
    tar = written / "train-000000.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    report = verify_shards(written)
    problems = report["shards"]["train-000000"]["problems"]
    assert not report["ok"] and report["summary"]["bad"] == 1
    assert any("truncated" in p for p in problems), problems
    # cut exactly after the last member: every member is intact, the size check still fails
    index = pq.read_table(written / "train-000000.parquet").to_pylist()
    last = max(r["offset"] + -(-r["size"] // 512) * 512 for r in index)
    tar.write_bytes(data[:last])
    problems = verify_shards(written)["shards"]["train-000000"]["problems"]
    assert problems == [f"tar is {last} bytes, stats say {len(data)} (truncated or appended)"]


def test_verify_flags_missing_files(written):
    (written / "train-000001.tar").unlink()
    (written / "train-000000.parquet").unlink()
    report = verify_shards(written)
    assert report["shards"]["train-000001"]["problems"] == ["tar missing"]
    assert "index missing" in report["shards"]["train-000000"]["problems"]
    assert report["summary"]["bad"] == 2 and not report["ok"]
    text = format_report(report)
    assert "tar missing" in text and "2 bad" in text


def test_verify_flags_extra_member_and_empty_folder(written, tmp_path):
    tar = written / "train-000000.tar"
    import io
    with tarfile.open(tar, "a") as t:
        ti = tarfile.TarInfo("intruder.txt")
        ti.size = 3
        t.addfile(ti, io.BytesIO(b"abc"))
    problems = verify_shards(written)["shards"]["train-000000"]["problems"]
    assert any("members not in index" in p and "intruder.txt" in p for p in problems)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not verify_shards(empty)["ok"]
    assert not verify_shards(tmp_path / "nowhere")["ok"]
