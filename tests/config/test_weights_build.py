"""Builds take weights from the cache when no option names them, record file, size and
sha256 in run.json, and refuse a cached file that changed since it was pulled."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from curate.cli import app
from curate.config.models import resolve_models
from curate.config.weights import cache_path, get_weight
from sync_classifier.model import SyncClassifier, save_released, tiny_config


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CURATE_HOME", str(tmp_path / "home"))
    for var in ("CURATE_OFFLINE", "HF_HUB_OFFLINE"):     # --offline sets them: restored after
        monkeypatch.setenv(var, "0")
    return tmp_path / "home"


def _folder_sha256(root: Path) -> str:
    """The folder's digest, computed here: relative name, NUL, bytes, for each file in order."""
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _cache_the_classifier() -> Path:
    """A tiny classifier in the released layout where the manual step puts the paper's."""
    torch.manual_seed(0)
    save_released(cache_path(get_weight("avsync-classifier")) / "modules", SyncClassifier(tiny_config()))
    res = CliRunner().invoke(app, ["models", "pull", "avsync-classifier"])
    assert res.exit_code == 0, res.output
    return cache_path(get_weight("avsync-classifier"))


def _sources(tmp_path: Path) -> tuple[Path, Path]:
    from curate.demo.synth import make_event_video
    make_event_video(tmp_path / "v.mp4", duration=6.0, event_times=[1.0, 2.5, 4.0], seed=1)
    src = tmp_path / "sources.csv"
    src.write_text("id,path,start,end,label,split\nvid1,v.mp4,0,6,dog,train\n")
    cfg = tmp_path / "recipe.json"
    cfg.write_text(json.dumps({"filters": ["pixel_diff", "amplitude", "sync"], "gate": [],
                               "stages": ["sources", "download", "split", "score"]}))
    return src, cfg


def test_missing_weights_name_the_pull(home):
    recipe = {"name": "x", "filters": ["imagebind", "sync"], "models": {}}
    with pytest.raises(ValueError, match=r"curate models pull imagebind-huge, or pass --imagebind-checkpoint"):
        resolve_models({"recipe": recipe, "options": {}})
    recipe["filters"] = ["sync"]
    with pytest.raises(ValueError, match=r"drive\.google\.com.*or pass --sync-checkpoint"):
        resolve_models({"recipe": recipe, "options": {}})


@pytest.mark.slow
def test_build_without_weight_options_uses_and_records_the_cache(home, tmp_path, no_network):
    """Offline, with every connection refused: the build reads the cache and nothing else."""
    folder = _cache_the_classifier()
    src, cfg = _sources(tmp_path)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["build", "custom", "--config", str(cfg), "--sources", str(src),
                                   "--out", str(out), "--executor", "local", "--workers", "1",
                                   "--offline"])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert "sync_checkpoint" not in run["options"]
    rec = run["weights"]["sync"]
    assert rec["file"] == str(folder) and rec["source"] == "cache: avsync-classifier"
    assert rec["sha256"] == _folder_sha256(folder)
    assert rec["size"] == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert rec["licence"].startswith("MIT")
    import pyarrow.parquet as pq
    scores = pq.read_table(out / "manifests" / "windows.parquet").column("sync_a2v").to_pylist()
    assert scores and all(s is not None for s in scores)


def test_changed_cached_file_is_refused_naming_it(home, tmp_path):
    folder = _cache_the_classifier()
    head = next((folder / "modules" / "head").glob("*.bin"))
    data = bytearray(head.read_bytes())
    data[-1] ^= 1
    head.write_bytes(bytes(data))
    src, cfg = _sources(tmp_path)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["build", "custom", "--config", str(cfg), "--sources", str(src),
                                   "--out", str(out), "--executor", "local"])
    assert res.exit_code == 2, res.output
    assert f"{folder} changed since it was pulled" in res.output
    assert "curate models pull avsync-classifier" in res.output
    assert not (out / "manifests" / "downloads.parquet").exists()
