"""Messages that name the cause (issue 14, findings 6, 7, 9): every case gets one line naming
the file, row or option and what to do."""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=str(REPO), timeout=timeout,
                          env={**os.environ, "COLUMNS": "80", **(env or {})})


# ---------------------------------------------------------------- 6: weights checked first

def _released_with_renamed_key(root: Path) -> Path:
    from sync_classifier.model import SyncClassifier, save_released, small_config
    folder = save_released(root / "modules", SyncClassifier(small_config()))
    f = folder / "head" / "diffusion_pytorch_model.bin"
    state = torch.load(f, weights_only=True)
    key = next(iter(state))
    state[key + "_renamed"] = state.pop(key)
    torch.save(state, f)
    return folder


def test_a_renamed_key_fails_the_build_before_any_stage_work(tmp_path):
    folder = _released_with_renamed_key(tmp_path)
    src = tmp_path / "sources.csv"
    src.write_text("id,url,start,end,label,split\nabc,http://127.0.0.1:9/abc.mp4,0,10,dog barking,train\n")
    cfg = tmp_path / "recipe.json"
    cfg.write_text(json.dumps({"base": "demo", "stages": ["sources", "download", "split", "score", "select", "shard"]}))
    out = tmp_path / "out"
    r = _cli("build", "custom", "--config", cfg, "--sources", src, "--out", out,
             "--allow-random-weights", "--sync-checkpoint", folder, "--executor", "local")
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ") and "--sync-checkpoint" in err and "_renamed" in err
    assert "== download" not in r.stdout            # nothing ran
    assert not (out / "manifests" / "downloads.parquet").exists()


def test_weight_errors_name_the_option_of_the_command_typed(tmp_path):
    """Issue 25: one broken released folder (a renamed key) handed to each command that reads
    weights; each one-line error names the option typed there, and no other command's."""
    from typer.testing import CliRunner
    from curate.cli import app
    folder = _released_with_renamed_key(tmp_path)
    src = tmp_path / "sources.csv"
    src.write_text("id,url,start,end,label,split\nabc,http://127.0.0.1:9/abc.mp4,0,10,dog barking,train\n")
    cfg = tmp_path / "recipe.json"
    cfg.write_text(json.dumps({"base": "demo", "stages": ["sources", "download", "split", "score"]}))
    out, empty = tmp_path / "out", tmp_path / "empty"
    empty.mkdir()
    resume = tmp_path / "resume"
    resume.mkdir()
    (resume / "sync_classifier.last.pt").write_bytes(b"not a checkpoint")
    garbage = tmp_path / "imagebind_huge.pth"
    garbage.write_bytes(b"not a checkpoint")
    commands = {  # command -> (arguments, the option its error must name)
        "build": (["build", "custom", "--config", cfg, "--sources", src, "--out", out,
                   "--allow-random-weights", "--sync-checkpoint", folder, "--executor", "local"],
                  "--sync-checkpoint"),
        "score": (["score", out, "--executor", "local"], "--sync-checkpoint"),
        "sync train": (["sync", "train", "--init", folder, "--out", tmp_path / "t", "--small",
                        "--steps", "1"], "--init"),
        "sync train (resume)": (["sync", "train", "--out", resume, "--small", "--steps", "1"], "--out"),
        "sync eval": (["sync", "eval", "--ckpt", folder, "--data", empty], "--ckpt"),
        "metrics": (["metrics", "--generated", empty, "--reference", empty, "--sync-checkpoint",
                     folder], "--sync-checkpoint"),
        "metrics (imagebind)": (["metrics", "--generated", empty, "--reference", empty,
                                 "--sync-checkpoint", folder, "--imagebind-checkpoint", garbage],
                                "--imagebind-checkpoint"),
    }
    others = {"--sync-checkpoint", "--ckpt", "--init", "--imagebind-checkpoint"}
    for name, (args, option) in commands.items():
        r = CliRunner().invoke(app, [str(a) for a in args])
        assert r.exit_code == 2, (name, r.output)
        err = r.output.strip().splitlines()[-1]
        assert err.startswith("error: ") and option in err, (name, err)
        assert not any(o in err for o in others - {option}), (name, err)
        if "(" not in name:
            assert "_renamed" in err, (name, err)
    # score has no weight options: its message says where the weights come from
    assert "run.json" in CliRunner().invoke(app, ["score", str(out), "--executor", "local"]).output


# ---------------------------------------------------------------- 7: weights only

class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_checkpoint_that_would_run_code_is_refused_naming_the_option(tmp_path, monkeypatch):
    from sync_classifier.model import TRUST_ENV, load_sync_classifier
    monkeypatch.delenv(TRUST_ENV, raising=False)
    p = tmp_path / "evil.pt"
    with open(p, "wb") as f:
        pickle.dump({"config": {}, "model": _Payload()}, f)
    with pytest.raises(ValueError, match=r"could run code.*--trust-checkpoint.*--sync-checkpoint"):
        load_sync_classifier(p)


def test_the_avid_cma_files_numpy_entries_are_allowed_explicitly(tmp_path, monkeypatch):
    from sync_classifier.model import (AVID_PREFIXES, TRUST_ENV, SyncClassifier, load_init,
                                       small_config)
    monkeypatch.delenv(TRUST_ENV, raising=False)
    cfg = small_config()
    src = SyncClassifier(cfg)
    model = {}
    for m, prefix in AVID_PREFIXES.items():
        model.update({prefix + k: v for k, v in getattr(src, m).state_dict().items()})
    p = tmp_path / "AVID-CMA_checkpoint.pth.tar"
    torch.save({"epoch": 9, "model": model, "best_metric": np.float64(0.61)}, p)
    got = load_init(p, cfg)
    for m in AVID_PREFIXES:
        a, b = getattr(got, m).state_dict(), getattr(src, m).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    # as the released file was written: numpy 1.x names the scalar numpy.core.multiarray (not
    # the numpy 2 name allowed above), and the training script's criterion state holds a class
    # of its own code (not installed here): both kept inert, the weights read
    for legacy in (False, True):        # the zip format and torch < 1.6's pickles in a row
        torch.save({"epoch": 9, "model": model, "best_metric": np.float64(0.61),
                    "train_criterion": _Criterion()}, p, _use_new_zipfile_serialization=not legacy)
        _renamed(p, {b"numpy._core.multiarray": b"numpy.core.multiarray",
                     f"{__name__}\n_Criterion".encode(): b"criterions.avid_cma\nAVID_CMA"})
        with pytest.raises(Exception, match="(?i)weights only"):
            torch.load(p, weights_only=True)
        got = load_init(p, cfg)
        for m in AVID_PREFIXES:
            a, b = getattr(got, m).state_dict(), getattr(src, m).state_dict()
            assert all(torch.equal(a[k], b[k]) for k in a)


class _Criterion:
    def __reduce__(self):
        return (_Criterion, ())


def _renamed(path, names: dict) -> None:
    """Rewrite the globals a torch.save file names (its pickles' text GLOBAL lines), as an
    older numpy or another project's code would have named them (either format)."""
    import zipfile
    if not zipfile.is_zipfile(path):
        data = path.read_bytes()
        for old, new in names.items():
            assert old in data, old
            data = data.replace(old, new)
        path.write_bytes(data)
        return
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        parts = {i.filename: z.read(i.filename) for i in infos}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for info in infos:
            data = parts[info.filename]
            if info.filename.endswith("data.pkl"):
                for old, new in names.items():
                    assert old in data, old
                    data = data.replace(old, new)
            z.writestr(info, data)


# ---------------------------------------------------------------- 9: messages

def test_garbage_in_run_json_names_the_file_and_what_to_do(tmp_path):
    (tmp_path / "run.json").write_text('{"recipe": {name: 1}}')
    r = _cli("select", tmp_path)
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert str(tmp_path / "run.json") in line and "rerun the same `curate build`" in line


def test_a_100k_label_gives_a_short_message(tmp_path):
    from manifests.source_lists import read_sources
    src = tmp_path / "s.csv"
    src.write_text("id,url,start,end,label,split\nabc,http://127.0.0.1:9/a.mp4,0,10," + "x" * 100_000 + ",train\n")
    row = read_sources(src)[0]
    assert row["status"] == "rejected"
    assert len(row["error"]) < 300 and "100000 characters" in row["error"] and "s.csv:2" in row["error"]


def test_a_device_as_local_path_is_not_a_missing_file(tmp_path):
    from curate.ops.fetch import DownloadOptions, download_source
    row = {"source_id": "dev_000000_000010", "ytid": "dev", "start": 0, "end": 10, "path": "/dev/zero"}
    got = download_source(row, tmp_path, DownloadOptions())
    assert got["status"] == "failed" and "not a regular file" in got["error"] and "/dev/zero" in got["error"]


def test_stats_group_rejected_sources_by_their_reason(tmp_path):
    from curate.reports.stats import format_text, collect
    from curate.config.run_state import new_run
    from curate.build import stage_value
    from curate.config.recipes import get_recipe
    src = tmp_path / "s.csv"
    src.write_text("id,url,start,end,label,split\n"
                   "bad id!,http://127.0.0.1:9/a.mp4,0,10,dog,train\n"
                   "other id?,http://127.0.0.1:9/b.mp4,0,10,dog,train\n"
                   "ok1,http://127.0.0.1:9/c.mp4,x,10,dog,train\n"
                   "ok2,http://127.0.0.1:9/d.mp4,0,10,dog,train\n")
    out = tmp_path / "out"
    cfg = tmp_path / "r.json"
    cfg.write_text(json.dumps({"base": "demo"}))
    run = new_run(out, get_recipe("custom", cfg), {})
    stage_value("sources", out, run, sources=src)
    st = collect(out)
    fails = {k: n for k, n in st["failures"].items() if k.startswith("sources")}
    assert fails == {"sources rejected: unsafe id '…'": 2, "sources rejected: unparseable start '…'": 1}, fails
    assert "unsafe id" in format_text(st)


def test_an_hls_failure_says_what_was_fetched_and_what_to_try():
    from curate.ops.fetch.errors import Failure
    from curate.ops.fetch.ytdlp import _stream_hint
    f = _stream_hint(Failure("error", "ffmpeg exited with code 1"),
                     {"protocol": "m3u8_native", "url": "http://127.0.0.1/x.m3u8"})
    assert f.message.startswith("HLS (m3u8) stream") and "use_ranges" in f.message
    plain = _stream_hint(Failure("error", "HTTP Error 404"), {"protocol": "https"})
    assert plain.message == "HTTP Error 404"


def test_every_option_name_is_readable_in_help_at_80_columns(monkeypatch):
    import typer.main
    from typer.testing import CliRunner

    from curate.cli import app
    monkeypatch.setenv("COLUMNS", "80")
    runner = CliRunner()
    group = typer.main.get_command(app)
    cmds = [([name], c) for name, c in group.commands.items()]
    for name, c in list(cmds):
        for sub, sc in getattr(c, "commands", {}).items():
            cmds.append((name + [sub], sc))
    checked = 0
    for path, c in cmds:
        if getattr(c, "commands", None):
            continue
        r = runner.invoke(app, [*path, "--help"], terminal_width=80)
        assert r.exit_code == 0, r.output
        assert "…" not in r.stdout, f"curate {' '.join(path)} --help truncates:\n{r.stdout}"
        assert max(len(line) for line in r.stdout.splitlines()) <= 80
        for p in c.params:
            for opt in p.opts + p.secondary_opts:
                if opt.startswith("--"):
                    assert re.search(rf"(^|[\s,/]){re.escape(opt)}(\s|$|,|/)", r.stdout, re.M), \
                        f"{opt} not readable in `curate {' '.join(path)} --help`"
                    checked += 1
    assert checked > 50
