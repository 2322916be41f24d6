"""A disk that fills during a stage stops it (issue 23): the write's ENOSPC is the machine's
fault, not the source's; nothing is recorded failed, nothing silently re-encoded, and items an
older version recorded failed for such a cause are redone by a plain rerun."""
from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.build import build
from curate.execution.local import LocalExecutor
from curate.ops.fetch import cache, errors, source
from manifests import scratch
from manifests.faults import EnvironmentFault
from testkit.avmedia import served_sources_csv


@pytest.fixture(scope="module")
def served(served_copies):
    return served_copies


def _build(tmp_path: Path, served) -> list[dict]:
    srv, ids = served
    cfg = tmp_path / "recipe.json"
    cfg.write_text(json.dumps({"base": "demo", "stages": ["sources", "download"]}))
    out = tmp_path / "out"
    build("custom", out, LocalExecutor(), sources=served_sources_csv(tmp_path / "s.csv", srv, ids),
          config=cfg, echo=lambda s: None)
    return pq.read_table(out / "manifests" / "downloads.parquet").to_pylist()


def _failed_records(out: Path) -> list[dict]:
    rows = []
    for p in sorted((out / "work" / "download").glob("part-*.jsonl")):
        for line in p.read_text().splitlines():
            rec = json.loads(line.rpartition("\t")[0])
            rows += [r for r in rec["out"]["downloads"] if r["status"] == "failed"]
    return rows


def test_a_scratch_disk_that_fills_mid_download_stops_the_stage(tmp_path, served, monkeypatch):
    small = tmp_path / "small"
    small.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the output-disk "
                    "case below raises ENOSPC itself")
    try:
        monkeypatch.setenv(scratch.SCRATCH_ENV, str(small))
        monkeypatch.setattr(scratch, "MIN_FREE_BYTES", 0)     # past the check before the stage
        filler = small / "filler"
        filler.write_bytes(b"\0" * (scratch.free_bytes(small) - 24 * 1024))
        with pytest.raises(EnvironmentFault, match=rf"scratch folder {small} .*CURATE_SCRATCH"):
            _build(tmp_path, served)
        assert _failed_records(tmp_path / "out") == []
        filler.unlink()
        rows = _build(tmp_path, served)        # room again: a plain rerun fetches all
        assert [(d["status"], d["stream_copy"]) for d in rows] == [("ok", True)] * 3
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_an_output_disk_that_fills_at_the_commit_stops_the_stage(tmp_path, served, monkeypatch):
    monkeypatch.setenv(scratch.SCRATCH_ENV, str(tmp_path / "scratch"))
    real = cache.commit_file

    def full(src, dst, *a, **k):
        raise scratch.write_fault(dst, os.strerror(errno.ENOSPC)) from OSError(
            errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
    monkeypatch.setattr(cache, "commit_file", full)
    with pytest.raises(EnvironmentFault, match=r"cannot write .*out/media/raw/.*No space left.*--out"):
        _build(tmp_path, served)
    assert _failed_records(tmp_path / "out") == []
    monkeypatch.setattr(cache, "commit_file", real)
    assert [d["status"] for d in _build(tmp_path, served)] == ["ok"] * 3


def test_sources_failed_earlier_for_a_full_disk_are_redone_without_retry_failed(tmp_path, served,
                                                                                 monkeypatch):
    """Records an older version wrote (every source ``corrupt`` for ENOSPC in ffmpeg)."""
    monkeypatch.setenv(scratch.SCRATCH_ENV, str(tmp_path / "scratch"))
    real = source._attempt

    def old_behaviour(plan, target, opts):
        raise errors.Failure("corrupt", "ffmpeg: Error writing trailer: No space left on device")
    monkeypatch.setattr(source, "_attempt", old_behaviour)
    assert [d["reason"] for d in _build(tmp_path, served)] == ["corrupt"] * 3
    monkeypatch.setattr(source, "_attempt", real)
    assert [d["status"] for d in _build(tmp_path, served)] == ["ok"] * 3


def _faulty_factory():
    def fn(item):
        if item["key"] == "b":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/scratch/x")
        return {"t": [{"k": item["key"], "status": "ok"}]}
    return fn


@pytest.mark.parametrize("stateful", [False, True])
def test_a_fault_in_a_ray_worker_stops_the_stage_and_records_nothing_failed(tmp_path, stateful):
    from curate.execution.checkpoints import run_stage
    from curate.execution.ray import RayExecutor
    from curate.execution.spec import StageSpec

    spec = StageSpec("faulty", _faulty_factory,
                     lambda it, msg: {"t": [{"k": it["key"], "status": "failed", "error": msg}]},
                     stateful=stateful)
    ex = RayExecutor(workers=1)
    try:
        with pytest.raises(EnvironmentFault, match="No space left on device writing /scratch/x"):
            run_stage(tmp_path, spec, [{"key": k} for k in "abc"], ex, progress=False)
    finally:
        ex.shutdown()
    recs = [line for p in (tmp_path / "work" / "faulty").glob("part-*") for line in p.read_text().splitlines()]
    assert all('"failed"' not in r for r in recs)


@pytest.mark.parametrize("error,fault", [
    ("corrupt: ffmpeg: Error writing trailer: No space left on device", True),
    ("OSError: [Errno 30] Read-only file system: '/scratch/p77'", True),
    ("PermissionError: [Errno 13] Permission denied: '/scratch/p77'", True),
    ("PermissionError: scratch folder /tmp/curate-scratch-0 is a link or another user's folder: "
     "remove it, or set CURATE_SCRATCH to a folder of your own", True),
    ("FileNotFoundError: [Errno 2] No such file or directory: 'ffmpeg'", True),
    ("HTTP Error 404: Not Found", False),
    ("local file not found: /data/p12.mp4", False),
    ("corrupt: ffmpeg: moov atom not found", False),
])
def test_what_older_versions_recorded_for_a_fault_of_the_machine_is_told_apart(error, fault):
    from manifests.faults import FAULT_TEXT
    assert bool(FAULT_TEXT.search(error)) is fault
