"""Bounded reads of every user input, one line per bad file (issue 23): a device, a folder, a
50-MB field, garbage run.json / manifests / config end within seconds with one line naming the
file (a traceback only with -v); a field over the limit rejects its row, not the file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from manifests.schemas import write_manifest
from manifests.source_lists import read_generic

REPO = Path(__file__).resolve().parents[2]


def _cli(*args, timeout=120):
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], capture_output=True,
                       text=True, cwd=str(REPO), timeout=timeout,
                       env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)})
    r.seconds = time.monotonic() - t0
    return r


def _one_line_error(r, *names: str) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    last = lines[-1]
    assert last.startswith("error: ") and len(last) < 600, last
    for n in names:
        assert n in last, last
    return last


def test_sources_dev_zero_ends_at_once_with_one_line(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"base": "demo", "stages": ["sources"]}))
    r = _cli("build", "custom", "--config", cfg, "--sources", "/dev/zero", "--out", tmp_path / "o",
             "--executor", "local")
    _one_line_error(r, "/dev/zero", "not a regular file")
    assert r.seconds < 60        # python start-up on a loaded machine; it read nothing


@pytest.mark.parametrize("bad", ["/dev/zero", "folder"])
def test_stats_against_a_device_or_a_folder_is_one_line(tmp_path, bad):
    target = "/dev/zero" if bad == "/dev/zero" else str(tmp_path)
    r = _cli("stats", tmp_path, "--against", target)
    _one_line_error(r, target)
    assert r.seconds < 60


def test_a_50_mb_field_rejects_that_row_only(tmp_path):
    src = tmp_path / "sources.csv"
    with open(src, "w") as f:
        f.write("id,url,start,end,label,split\n")
        f.write("ok1,http://127.0.0.1:9/a.mp4,0,3,dog,train\n")
        f.write("big,http://127.0.0.1:9/" + "x" * 50_000_000 + ".mp4,0,3,dog,train\n")
        f.write("ok2,http://127.0.0.1:9/b.mp4,0,3,cat,train\n")
    t0 = time.monotonic()
    rows = read_generic(src)
    assert time.monotonic() - t0 < 20
    assert [r["status"] for r in rows] == ["ok", "rejected", "ok"]
    assert rows[1]["error"].startswith("sources.csv:3: unreadable CSV record (field larger than")
    assert len(rows[1]["error"]) < 200 and rows[1]["url"] is None


def _garbage_run(tmp_path: Path, what: str) -> Path:
    from curate.config.recipes import get_recipe
    from curate.config.run_state import new_run
    out = tmp_path / "run"
    (out / "manifests").mkdir(parents=True)
    new_run(out, get_recipe("demo"), {})
    if what == "run.json":
        (out / "run.json").write_bytes(b"\x00garbage{")
    else:
        (out / "manifests" / f"{what}.parquet").write_bytes(b"not parquet at all")
    return out


@pytest.mark.parametrize("command,what", [("stats", "run.json"), ("stats", "downloads"),
                                          ("select", "windows"), ("select", "run.json")])
def test_a_garbage_run_file_or_manifest_is_one_line_naming_it(tmp_path, command, what):
    out = _garbage_run(tmp_path, what)
    if command == "select" and what == "windows":
        write_manifest(out, "sources", [])
    r = _cli(command, out)
    name = "run.json" if what == "run.json" else f"{what}.parquet"
    _one_line_error(r, str(out), name)
    r = _cli("-v", command, out)                # -v: the traceback too
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_a_garbage_recipe_config_is_one_line(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(b"\xff\xfe garbage")
    r = _cli("build", "custom", "--config", cfg, "--out", tmp_path / "o", "--executor", "local")
    _one_line_error(r, str(cfg), "--config")


def test_export_folder_to_a_regular_file_is_one_line(tmp_path):
    dest = tmp_path / "a-file"
    dest.write_text("x")
    (tmp_path / "run" / "manifests").mkdir(parents=True)
    r = _cli("export-folder", tmp_path / "run", dest)
    _one_line_error(r, str(dest), "is a file")


def _run_with_one_selected_clip(out: Path) -> str:
    name = "dog/abcdefghijk_000000_000010_1.0_3.0"
    key = "dog-abcdefghijk_000000_000010_1p0_3p0"
    write_manifest(out, "selected", [{"key": key, "name": name, "source_id": "abcdefghijk_000000_000010",
                                      "class_name": "dog", "split": "train", "status": "ok"}])
    write_manifest(out, "shards", [{"key": key, "split": "train", "shard": "train-000000.tar",
                                    "offset": 0, "size": 1, "sha256": "0"}])
    write_manifest(out, "ledger", [{"source_id": sid, "availability": "ok", "current": True}
                                   for sid in ("abcdefghijk_000000_000010", "bcdefghijkl_000000_000010")])
    return name


@pytest.mark.parametrize("list_name", ["train.txt", "mine.txt", "AVSync15-train-subset.txt"])
def test_stats_against_reasons_are_right_for_lists_of_any_name(tmp_path, list_name):
    from curate.reports.ledger import against
    out = tmp_path / "run"
    name = _run_with_one_selected_clip(out)
    lst = tmp_path / list_name
    lst.write_text(f"{name}\ncat/bcdefghijkl_000000_000010_0.0_2.0\n")
    rep = against(out, [lst])
    assert rep["reproduced"] == 1, rep
    assert [(r["name"], r["why"]) for r in rep["missing_lines"]] == \
        [("cat/bcdefghijkl_000000_000010_0.0_2.0", "not_selected")]


def test_stats_against_a_100k_character_line_prints_one_short_line(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("dog/" + "x" * 100_000 + "\n")
    (tmp_path / "run").mkdir()
    r = _cli("stats", tmp_path / "run", "--against", lst)
    assert r.returncode == 0, r.stderr
    assert max(len(ln) for ln in r.stdout.splitlines()) < 400
    assert "100004 characters" in r.stdout
