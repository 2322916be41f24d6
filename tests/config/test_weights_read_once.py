"""The driver reads a weight file once (issue 24 item 3): recording it in run.json (sha256),
checking it (keys and shapes, no scorer built), its convention and its fingerprint id, asked
for again and again by the stages, all come from one ``open`` per file version and process.
Counted from outside the code under test: an audit hook sees every ``open`` of the process."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, os, sys
ckpt = os.path.realpath(sys.argv[1])
opened = []
sys.addaudithook(lambda ev, args: opened.append(1) if ev == "open" and isinstance(args[0], (str, bytes, os.PathLike))
                 and os.path.realpath(os.fsdecode(args[0])) == ckpt else None)
from curate.config.models import check_weights, record_weights
from curate.config.recipes import get_recipe
from curate.config.run import resolve
from curate.stagekit.window_table import score_params
import filters.sync
built, init = [], filters.sync.SyncScorer.__init__
filters.sync.SyncScorer.__init__ = lambda self, *a, **k: (built.append(1), init(self, *a, **k))[1]
recipe = get_recipe("demo")
recipe["filters"] = ["pixel_diff", "amplitude", "sync"]
run = {"recipe": recipe, "options": {"sync_checkpoint": ckpt}}
record_weights(sys.argv[2], run)
check_weights(run)
for _ in range(3):                      # what the stages ask, again and again
    check_weights(run)
    params = score_params(run, list(resolve(run).gate))
    models = resolve(run).with_conventions()
print(json.dumps({"opens": len(opened), "convention": models["sync"]["convention"],
                  "id": params["models"]["sync"]["weights"], "built": len(built)}))
"""


def _opens(ckpt: Path, out: Path) -> dict:
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(ckpt), str(out)], capture_output=True,
                       text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_the_driver_opens_the_sync_checkpoint_once(tmp_path):
    from sync_classifier.model import DEMO_CHECKPOINT
    ckpt = tmp_path / "sync.pt"
    shutil.copyfile(DEMO_CHECKPOINT, ckpt)
    out = tmp_path / "out"
    out.mkdir()
    res = _opens(ckpt, out)
    assert res["opens"] == 1, res
    assert res["convention"] == "ours" and res["id"][0] == ckpt.stat().st_size
    assert res["built"] == 0               # no scorer was built to check the file
    rec = json.loads((out / "run.json").read_text())["weights"]["sync"]
    assert rec["size"] == ckpt.stat().st_size and len(rec["sha256"]) == 64


def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_option(tmp_path):
    import pytest
    import torch

    from curate.config.models import check_weights
    from curate.config.recipes import get_recipe
    from sync_classifier.model import DEMO_CHECKPOINT
    state = torch.load(DEMO_CHECKPOINT, map_location="cpu", weights_only=True)
    key = next(iter(state["model"]))
    state["model"][key] = torch.zeros(3, 1)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    recipe = get_recipe("demo")
    recipe["filters"] = ["sync"]
    with pytest.raises(ValueError, match="--sync-checkpoint") as e:
        check_weights({"recipe": recipe, "options": {"sync_checkpoint": str(bad)}})
    assert key in str(e.value) and "shape" in str(e.value)
