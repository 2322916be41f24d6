"""`curate sync train` / `curate sync eval` / `curate metrics` through the console script."""
import json
import subprocess
import sys

from curate.demo.synth import make_event_video
from sync_classifier.model import read_checkpoint


def _curate(*args, stderr=False):
    p = subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return (p.stdout, p.stderr) if stderr else p.stdout


def test_sync_train_eval_and_metrics(tmp_path, metrics_clips):
    ckpt_dir = tmp_path / "ckpt"
    out = _curate("sync", "train", "--out", ckpt_dir, "--small", "--steps", "3", "--batch-size", "2")
    ckpt = ckpt_dir / "sync_classifier.pt"
    assert ckpt.exists() and str(ckpt) in out
    assert read_checkpoint(ckpt)["step"] == 3
    # resume: asking for 5 steps continues from step 3
    _, err = _curate("sync", "train", "--out", ckpt_dir, "--small", "--steps", "5", "--batch-size", "2",
                     stderr=True)
    assert "at step 3" in err and read_checkpoint(ckpt)["step"] == 5

    vids = tmp_path / "videos"
    for i in range(2):
        make_event_video(vids / f"v{i}.mp4", duration=8.0, event_times=[1.0, 2.5, 4.0, 6.5], seed=i)
    res = json.loads(_curate("sync", "eval", "--ckpt", ckpt, "--data", vids, "--json"))
    assert res["n_videos"] == 2 and 0.0 <= res["a2v"] <= 1.0 and 0.0 <= res["v2a"] <= 1.0

    gen_root, ref_root = metrics_clips
    table = _curate("metrics", "--generated", gen_root, "--reference", ref_root, "--sync-checkpoint", ckpt)
    assert "RelSync" in table
    rows = json.loads(_curate("metrics", "--generated", gen_root, "--reference", ref_root,
                              "--sync-checkpoint", ckpt, "--json"))["rows"]
    assert len(rows) == 3 and all(0.0 < r["rel_sync"] < 1.0 for r in rows)
