"""``verify_run``: a run's shards checked against its selected/shards manifests (issue 10 item 4)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from curate.ops.cut import cut_clip
from manifests.schemas import write_manifest
from shards.verify import format_report, verify_path, verify_run
from shards.writer import Sample, write_shards
from testkit.avmedia import make_av

N = 9  # clips due; max_count 2 -> 5 train shards


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    src = make_av(d / "src.mp4", 2.0, 12)
    return Path(cut_clip(src, d / "clip.mp4", 0.0, 1.5)["path"])


def _key(i: int) -> str:
    return f"cls-vid{i:08d}_000000_000010_0p0_1p5"


@pytest.fixture
def run(clip, tmp_path) -> Path:
    """A complete run: N selected ok clips (+1 failed, +1 skipped) in 5 shards."""
    out = tmp_path / "run"
    samples = [Sample(key=_key(i), mp4=clip, meta={"i": i}, class_index=0, text="cls",
                      class_name="cls", duration=1.5) for i in range(N)]
    rows = write_shards(out, samples, "train", max_count=2)
    selected = [{"key": _key(i), "status": "ok"} for i in range(N)]
    selected += [{"key": _key(90), "status": "failed", "error": "cut: ffmpeg"},
                 {"key": _key(91), "status": "skipped"}]
    write_manifest(out, "selected", selected)
    write_manifest(out, "shards", rows)
    return out


def test_complete_run_passes(run):
    rep = verify_run(run)
    assert rep["ok"], format_report(rep)
    assert rep["summary"]["due"] == N and rep["summary"]["shards"] == 5
    assert verify_path(run)["ok"]


def test_missing_shard_set_fails(run):
    for p in (run / "shards").glob("train-000002.*"):
        p.unlink()
    rep = verify_run(run)
    assert not rep["ok"]
    text = format_report(rep)
    assert "selected clips in no shard" not in text   # still listed in the manifest...
    assert "train-000002: " in text and "tar missing" in text and "index missing" in text


def test_run_killed_while_writing_tars_fails(run):
    """Only the first 2 of 5 tars written, no shards manifest yet (it is written last)."""
    (run / "manifests" / "shards.parquet").unlink()
    for n in (2, 3, 4):
        for p in (run / "shards").glob(f"train-00000{n}.*"):
            p.unlink()
    (run / "shards" / ".train-000002.tar.abc123.tmp").write_bytes(b"half")
    rep = verify_run(run)
    assert not rep["ok"]
    text = format_report(rep)
    assert "shards.parquet missing" in text
    assert "temporary files" in text and ".train-000002.tar.abc123.tmp" in text
    # the plain index check alone would have passed the 2 remaining shards
    assert all(r["ok"] for r in rep["shards"].values())


def test_truncated_tar_fails(run):
    tar = run / "shards" / "train-000001.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    rep = verify_run(run)
    assert not rep["ok"]
    assert "truncated" in format_report(rep)


def test_flipped_payload_byte_fails(run):
    tar = run / "shards" / "train-000000.tar"
    data = bytearray(tar.read_bytes())
    data[1024] ^= 0xFF        # inside the first sample's mp4 data
    tar.write_bytes(bytes(data))
    rep = verify_run(run)
    assert not rep["ok"]
    assert "sample payload sha256 differs" in format_report(rep)


def test_extra_file_fails(run):
    shutil.copy(run / "shards" / "train-000000.tar", run / "shards" / "train-000007.tar")
    (run / "shards" / "notes.txt").write_text("x")
    rep = verify_run(run)
    assert not rep["ok"]
    text = format_report(rep)
    assert "files in shards/ not in the shards manifest" in text
    assert "notes.txt" in text and "train-000007.tar" in text


def test_temp_file_fails(run):
    (run / "media" / "clips").mkdir(parents=True)
    (run / "media" / "clips" / ".k.mp4.x1y2.tmp").write_bytes(b"")
    rep = verify_run(run)
    assert not rep["ok"] and "media/clips/.k.mp4.x1y2.tmp" in format_report(rep)


def test_selected_clip_missing_from_manifest_and_duplicates_fail(run):
    import pyarrow.parquet as pq
    rows = pq.read_table(run / "manifests" / "shards.parquet").to_pylist()
    rows = [r for r in rows if r["key"] != _key(3)] + [r for r in rows if r["key"] == _key(4)]
    write_manifest(run, "shards", rows)
    text = format_report(verify_run(run))
    assert f"selected clips in no shard (1 of {N} due)" in text and _key(3) in text
    assert "clips in more than one shard" in text


def test_bare_shards_folder_still_verifies(run):
    rep = verify_path(run / "shards")
    assert rep["ok"] and "run_problems" not in rep
