"""`curate doctor`: the rows of this machine (ffmpeg present, maybe no GPU), each essential
taken away in turn (PATH, yt-dlp's own dependency lookup, the cache), exit codes and --json;
`curate build` refusing a missing essential with that row's message."""
from __future__ import annotations

import json
import os
import shutil
import sysconfig
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_HOME", str(tmp_path / "home"))
    for var in ("CURATE_OFFLINE", "HF_HUB_OFFLINE"):     # --offline sets them: restored after
        monkeypatch.setenv(var, "0")


def _doctor(*args: str) -> tuple[int, dict]:
    res = CliRunner().invoke(app, ["doctor", *args, "--json"])
    return res.exit_code, json.loads(res.output)


def _row(report: dict, check: str) -> dict:
    return next(r for r in report["rows"] if r["check"] == check)


def _path_without(tmp_path: Path, *tools: str) -> str:
    """A PATH of links to every tool of the current PATH except ``tools``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for d in os.environ["PATH"].split(os.pathsep):
        for p in Path(d).glob("*") if Path(d).is_dir() else ():
            if p.name not in tools and not (bin_dir / p.name).exists() and os.access(p, os.X_OK):
                (bin_dir / p.name).symlink_to(p)
    return str(bin_dir)


def test_this_machine_can_run_the_demo():
    code, rep = _doctor("demo")
    assert code == 0 and rep["ok"] is True
    for check in ("ffmpeg", "ffprobe", "libx264", "yt-dlp-ejs", "JS runtime", "ray"):
        assert _row(rep, check)["status"] == "ok", _row(rep, check)
    assert "deno" in _row(rep, "JS runtime")["detail"]
    import torch
    if not torch.cuda.is_available():
        assert _row(rep, "torch")["status"] == "warning" and not _row(rep, "torch")["essential"]


def test_paper_recipe_lists_missing_weights_with_their_fix():
    code, rep = _doctor("avsync15")
    assert code == 1 and rep["ok"] is False
    ib = _row(rep, "weights imagebind-huge")
    assert (ib["status"], ib["essential"], ib["fix"]) == (
        "missing", True, "curate models pull imagebind-huge, or pass --imagebind-checkpoint FILE")
    sync = _row(rep, "weights avsync-classifier")
    assert sync["status"] == "missing" and "drive.google.com" in sync["fix"]
    # the same recipe with its weights named by options can run
    text = CliRunner().invoke(app, ["doctor", "avsync15"]).output
    assert "fix: curate models pull imagebind-huge" in text and text.rstrip().endswith(
        "cannot run: fix the missing essentials above")


def test_cached_weights_are_ok(tmp_path):
    from curate.config.weights import cache_path, get_weight
    w = get_weight("imagebind-huge")
    cache_path(w).parent.mkdir(parents=True)
    cache_path(w).write_bytes(b"x" * 10)
    assert _row(_doctor("avsync15")[1], "weights imagebind-huge")["status"] == "warning"  # unrecorded
    assert CliRunner().invoke(app, ["models", "pull", "imagebind-huge", "--offline"]).exit_code == 0
    row = _row(_doctor("avsync15")[1], "weights imagebind-huge")
    assert row["status"] == "ok" and "10 bytes" in row["detail"] and "CC BY-NC" in row["detail"]


def test_without_ffmpeg_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _path_without(tmp_path, "ffmpeg", "ffprobe"))
    assert shutil.which("ffmpeg") is None
    code, rep = _doctor("demo")
    assert code == 1
    assert _row(rep, "ffmpeg")["status"] == "missing" and "install ffmpeg" in _row(rep, "ffmpeg")["fix"]
    # build refuses with that row's message, before any work
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["build", "demo", "--out", str(out), "--executor", "local"])
    assert res.exit_code == 2
    assert "error: ffmpeg not found on PATH" in res.output and "fix: install ffmpeg" in res.output
    assert not (out / "synth").exists()


def test_without_a_js_runtime(tmp_path, monkeypatch):
    import curate.ops.ytopts as ytopts
    monkeypatch.setattr(ytopts, "shipped_js_runtime", lambda: None)
    monkeypatch.setenv("PATH", _path_without(tmp_path, "deno"))
    real = sysconfig.get_path     # yt-dlp also looks next to the running Python

    def no_scripts(name, *a, **k):
        return str(tmp_path / "empty") if name == "scripts" else real(name, *a, **k)
    monkeypatch.setattr(sysconfig, "get_path", no_scripts)
    code, rep = _doctor("demo")
    assert code == 0                                      # the demo needs no YouTube
    js = _row(rep, "JS runtime")
    assert js["status"] == "missing" and not js["essential"] and "deno" in js["fix"]
    code, rep = _doctor("avsync15")
    assert _row(rep, "JS runtime")["essential"] and _row(rep, "JS runtime")["status"] == "missing"


def test_without_yt_dlp_ejs(monkeypatch):
    import yt_dlp.dependencies
    monkeypatch.setattr(yt_dlp.dependencies, "yt_dlp_ejs", None)
    code, rep = _doctor("landscape")
    assert code == 1
    row = _row(rep, "yt-dlp-ejs")
    assert row["status"] == "missing" and row["essential"] and "yt-dlp[default]" in row["fix"]


def test_cookies_and_cluster_rows(tmp_path):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("# Netscape HTTP Cookie File\n.youtube.com\tTRUE\t/\tTRUE\t0\tSID\tx\n")
    bad.write_text("SID=x; HSID=y\n")
    code, rep = _doctor("demo", "--cookies", str(good))
    assert code == 0 and _row(rep, "cookies")["status"] == "ok"
    code, rep = _doctor("demo", "--cookies", str(bad))
    assert code == 1 and "not a Netscape cookies.txt" in _row(rep, "cookies")["detail"]
    code, rep = _doctor("demo", "--address", "127.0.0.1:9")        # nothing listens there
    assert code == 1 and "not reachable" in _row(rep, "ray")["detail"]
