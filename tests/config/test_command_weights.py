"""Weights read outside the filters come from the cache too (issue 27): certify's Synchformer
after `curate models pull`, `curate metrics`' models, `curate sync train --init NAME`.
Temp files only: a tiny random Synchformer stands where the pull would put the real one."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from curate.cli import app
from curate.config.models import command_weights
from curate.config.recipes import get_recipe
from curate.config.run_state import new_run
from curate.config.weights import cache_path, get_weight, record_path
from curate.execution.local import LocalExecutor
from curate.build import stage_value
from filters.synchformer_model import Synchformer, SynchformerConfig, save_synchformer
from manifests import schemas
from manifests.schemas import read_rows, write_manifest
from tests.avmedia import make_clip

SID = "src_000000_000006"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CURATE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CURATE_SYNCHFORMER_CKPT", raising=False)
    monkeypatch.delenv("CURATE_SYNC_CKPT", raising=False)
    return tmp_path / "home"


def _pulled(name: str) -> Path:
    """A tiny random Synchformer where `curate models pull NAME` puts the file, with the pull
    record written here (sha256 computed by hashlib, not by the code under test)."""
    path = cache_path(get_weight(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_synchformer(Synchformer(SynchformerConfig(video_dim=32, video_depth=1, video_heads=2, audio_dim=32,
                                                   audio_depth=1, audio_heads=2, dim=32, layers=1, heads=2)), path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    record_path(get_weight(name)).write_text(json.dumps({"name": name, "sha256": sha}))
    return path


def _run(tmp_path: Path, options: dict) -> tuple[Path, dict]:
    out = tmp_path / "out"
    media = make_clip(tmp_path / "src.mp4", 6.0, "25", sr=16000)
    run = new_run(out, get_recipe("demo"), options)
    write_manifest(out, "sources", [{"source_id": SID, "ytid": "src", "start": 0.0, "end": 6.0,
                                     "class_name": "dog", "split": "train", "status": "ok"}])
    write_manifest(out, "downloads", [{"source_id": SID, "path": str(media), "status": "ok",
                                       "duration": 6.0, "seg_start": 0.0, "seg_end": 6.0}])
    write_manifest(out, "clips", [{"clip_id": f"{SID}_0", "source_id": SID, "shot_id": f"{SID}_shot000",
                                   "class_name": "dog", "split": "train", "start": 0.0, "end": 5.5,
                                   "n_windows": 1, "status": "ok", "error": None}])
    return out, run


def test_certify_takes_synchformer_from_the_cache(home, tmp_path):
    out, run = _run(tmp_path, {})
    said: list[str] = []
    assert stage_value("certify", out, run, LocalExecutor(), echo=said.append) == 0     # nothing cached yet
    assert "skipped" in said[0] and "curate models pull synchformer-mmaudio" in said[0]
    _pulled("synchformer-mmaudio")
    assert stage_value("certify", out, run, LocalExecutor()) == 1
    clip = read_rows(out, "clips")[0]
    assert all(clip[c] is not None for c in schemas.CERT_COLUMNS)


def test_a_cached_synchformer_that_changed_is_refused(home, tmp_path):
    path = _pulled("synchformer-audioset")
    with path.open("ab") as f:
        f.write(b"\0")
    out, run = _run(tmp_path, {})
    with pytest.raises(ValueError, match="changed since it was pulled"):
        stage_value("certify", out, run, LocalExecutor())


def test_the_option_wins_and_may_name_a_cached_row(home, tmp_path):
    cached = _pulled("synchformer-mmaudio")
    other = tmp_path / "mine.pt"
    other.write_bytes(cached.read_bytes())
    assert command_weights("synchformer", other, "--synchformer-checkpoint") == str(other)
    assert command_weights("synchformer", None, "--synchformer-checkpoint") == str(cached)
    assert command_weights("synchformer", "synchformer-mmaudio", "--synchformer-checkpoint") == str(cached)
    # a row's name that is not cached says how to get it and which option names a file
    with pytest.raises(ValueError, match=r"--init avid-cma-audioset.*curate models pull avid-cma-audioset.*--init"):
        command_weights("avid-cma", "avid-cma-audioset", "--init")


def test_sync_train_init_by_name_reads_the_cache(home, tmp_path):
    res = CliRunner().invoke(app, ["sync", "train", "--out", str(tmp_path / "ck"), "--init",
                                   "avid-cma-audioset", "--steps", "1", "--small"])
    assert res.exit_code != 0
    assert "curate models pull avid-cma-audioset" in res.output and "--init" in res.output


def test_metrics_without_sync_weights_names_the_option(home, tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "r").mkdir()
    res = CliRunner().invoke(app, ["metrics", "--generated", str(tmp_path / "g"), "--reference", str(tmp_path / "r")])
    assert res.exit_code != 0
    assert "--sync-checkpoint" in res.output and "avsync-classifier" in res.output
