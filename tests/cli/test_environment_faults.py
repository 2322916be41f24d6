"""Faults of the machine are not faults of the data (issue 23): an unusable or full scratch
folder, a missing tool, a disk that fills during a write stop the stage at once with one line
naming the folder or tool and what to set, exit non-zero, and record no item failed; the next
run (without --retry-failed) downloads them. Real yt-dlp against the loopback server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from testkit.avmedia import served_sources_csv

REPO = Path(__file__).resolve().parents[2]
ROOT = os.geteuid() == 0


def _cli(*args, env=None, drop=(), timeout=300):
    e = {k: v for k, v in os.environ.items() if k not in drop}
    e.update({"COLUMNS": "200", "PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=str(REPO), timeout=timeout, env=e)


@pytest.fixture(scope="module")
def served(served_copies):
    return served_copies


def _build(tmp_path, served, env=None, drop=()):
    srv, ids = served
    src = served_sources_csv(tmp_path / "sources.csv", srv, ids)
    cfg = tmp_path / "recipe.json"
    cfg.write_text(json.dumps({"base": "demo", "stages": ["sources", "download"]}))
    return _cli("build", "custom", "--config", cfg, "--sources", src, "--out", tmp_path / "out",
                "--executor", "local", env=env, drop=drop)


def _failed_records(out: Path) -> list[dict]:
    rows = []
    for p in sorted((out / "work" / "download").glob("part-*.jsonl")):
        for line in p.read_text().splitlines():
            rec = json.loads(line.rpartition("\t")[0] or line)
            rows += [r for r in rec["out"]["downloads"] if r["status"] == "failed"]
    return rows


@contextmanager
def _mount_tmpfs(path: Path, opts: str):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextmanager
def _bad_scratch(kind: str, tmp_path: Path):
    """(env, vars to drop, the folder the message must name) of one unusable scratch."""
    uid = os.getuid()
    if kind == "default_link":
        t = tmp_path / "tmp"
        t.mkdir()
        (tmp_path / "planted").mkdir()
        (t / f"curate-scratch-{uid}").symlink_to(tmp_path / "planted")
        yield {"TMPDIR": str(t)}, ("CURATE_SCRATCH",), t / f"curate-scratch-{uid}"
    elif kind == "default_foreign":
        if not ROOT:
            pytest.skip("giving a folder to another user needs root")
        t = tmp_path / "tmp"
        (t / f"curate-scratch-{uid}").mkdir(parents=True)
        os.chown(t / f"curate-scratch-{uid}", 65534, 65534)
        yield {"TMPDIR": str(t)}, ("CURATE_SCRATCH",), t / f"curate-scratch-{uid}"
    elif kind == "env_read_only":
        ro = tmp_path / "ro"
        if ROOT:      # root writes through a 0555 folder: a read-only file system
            with _mount_tmpfs(ro, "ro,size=1m"):
                yield {"CURATE_SCRATCH": str(ro)}, (), ro
        else:
            ro.mkdir()
            ro.chmod(0o555)
            yield {"CURATE_SCRATCH": str(ro)}, (), ro
            ro.chmod(0o755)
    elif kind == "env_a_file":
        f = tmp_path / "scratch-file"
        f.write_text("not a folder")
        yield {"CURATE_SCRATCH": str(f)}, (), f
    elif kind == "env_uncreatable":
        f = tmp_path / "a-file"
        f.write_text("x")
        yield {"CURATE_SCRATCH": str(f / "scratch")}, (), f / "scratch"
    elif kind == "env_full":
        with _mount_tmpfs(tmp_path / "small", "size=400k") as small:
            yield {"CURATE_SCRATCH": str(small)}, (), small


@pytest.mark.parametrize("kind", ["default_link", "default_foreign", "env_read_only", "env_a_file",
                                  "env_uncreatable", "env_full"])
def test_an_unusable_scratch_stops_the_build_and_fails_no_source(tmp_path, served, kind):
    with _bad_scratch(kind, tmp_path) as (env, drop, folder):
        r = _build(tmp_path, served, env=env, drop=drop)
    assert r.returncode != 0, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr, r.stderr
    assert err[-1].startswith("error: scratch folder ") and str(folder) in err[-1], err[-1]
    assert "CURATE_SCRATCH" in err[-1]
    out = tmp_path / "out"
    assert not (out / "manifests" / "downloads.parquet").exists() and _failed_records(out) == []
    # the next run, plain (no --retry-failed), downloads every source
    r = _build(tmp_path, served, env={"CURATE_SCRATCH": str(tmp_path / "good")})
    assert r.returncode == 0, r.stdout + r.stderr
    import pyarrow.parquet as pq
    rows = pq.read_table(out / "manifests" / "downloads.parquet").to_pylist()
    assert [d["status"] for d in rows] == ["ok"] * 3
    assert list((tmp_path / "good").iterdir()) == []      # nothing left in scratch


def test_a_missing_ffmpeg_stops_the_build_naming_path(tmp_path, served):
    bare = tmp_path / "bin"
    bare.mkdir()
    r = _build(tmp_path, served, env={"PATH": str(bare), "CURATE_SCRATCH": str(tmp_path / "s")})
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ffmpeg not found on PATH") and "PATH" in last
    assert _failed_records(tmp_path / "out") == []


def test_an_output_on_a_full_disk_stops_before_any_stage_naming_out(tmp_path, served):
    srv, ids = served
    src = served_sources_csv(tmp_path / "sources.csv", srv, ids)
    cfg = tmp_path / "recipe.json"
    cfg.write_text(json.dumps({"base": "demo", "stages": ["sources", "download"]}))
    with _mount_tmpfs(tmp_path / "small", "size=400k") as small:
        r = _cli("build", "custom", "--config", cfg, "--sources", src, "--out", small / "out",
                 "--executor", "local", env={"CURATE_SCRATCH": str(tmp_path / "s")})
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: the output folder {small / 'out'} has") and "--out" in last
        assert "== sources" not in r.stdout and not (small / "out" / "work").exists()
