"""Issue 15: the preprocessing convention follows the weights, through checkpoints, scoring,
training, `curate sync eval` and `curate metrics`; nothing mixes them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from curate.demo.synth import make_event_video
from decoding import native
from sync_classifier import conventions as C
from tests.references import ref_released_clips
from sync_classifier.model import (DEMO_CHECKPOINT, SyncClassifier, load_init, load_sync_classifier,
                                   read_checkpoint, save_checkpoint, save_released, tiny_config,
                                   weights_convention)


def _released_folder(tmp_path: Path, seed: int = 0) -> Path:
    """A tiny model in the released modules/ layout, with no convention written (as released)."""
    torch.manual_seed(seed)
    root = save_released(tmp_path / "checkpoint-1" / "modules", SyncClassifier(tiny_config()))
    head = root / "head" / "config.json"
    cfg = json.loads(head.read_text())
    cfg.pop("curate_convention")
    head.write_text(json.dumps(cfg))
    return root.parent


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    for i in range(2):
        make_event_video(d / f"v{i}.mp4", duration=5.0, event_times=[0.8, 2.0, 3.3], seed=i)
    return d


# ------------------------------------------------------------------ checkpoints record it

def test_checkpoints_record_the_convention(tmp_path) -> None:
    m = SyncClassifier(tiny_config())
    assert m.convention == C.OURS
    save_checkpoint(tmp_path / "ours.pt", m)
    m.convention = C.RELEASED
    save_checkpoint(tmp_path / "rel.pt", m)
    assert load_sync_classifier(tmp_path / "ours.pt").convention == C.OURS
    assert load_sync_classifier(tmp_path / "rel.pt").convention == C.RELEASED
    assert weights_convention(tmp_path / "rel.pt") == C.RELEASED
    # an older checkpoint without the entry is ours
    st = read_checkpoint(tmp_path / "ours.pt")
    del st["convention"]
    torch.save(st, tmp_path / "old.pt")
    assert load_sync_classifier(tmp_path / "old.pt").convention == C.OURS


def test_released_layout_and_avid_imply_released(tmp_path) -> None:
    folder = _released_folder(tmp_path)
    assert load_sync_classifier(folder).convention == C.RELEASED
    assert weights_convention(folder) == C.RELEASED
    assert load_init(folder).convention == C.RELEASED
    m = SyncClassifier(tiny_config())
    avid = {"model": {**{f"module.audio_model.{k}": v for k, v in m.audio_encoder.state_dict().items()},
                      **{f"module.video_model.{k}": v for k, v in m.video_encoder.state_dict().items()}}}
    torch.save(avid, tmp_path / "avid.pth.tar")
    assert load_init(tmp_path / "avid.pth.tar", tiny_config()).convention == C.RELEASED
    assert weights_convention(tmp_path / "avid.pth.tar") == C.RELEASED
    # our model written in the released layout keeps its own convention
    save_released(tmp_path / "ours_layout", m)
    assert load_sync_classifier(tmp_path / "ours_layout").convention == C.OURS


def test_shipped_demo_classifier_keeps_our_convention() -> None:
    assert weights_convention(DEMO_CHECKPOINT) == C.OURS
    assert load_sync_classifier(DEMO_CHECKPOINT).convention == C.OURS


def test_unknown_convention_names_the_option() -> None:
    with pytest.raises(ValueError, match="--convention"):
        C.get_convention("clean")
    with pytest.raises(ValueError, match="--protocol"):
        C.get_protocol("middle", C.get_convention(C.RELEASED))


# ------------------------------------------------------------------ frames and flips

def test_stepped_frames_take_the_first_frame_at_or_after_each_time() -> None:
    pts = np.arange(50) / 25.0                      # 25 fps
    got = native.stepped_frames(pts, 0.1, 1 / 6, 12)
    want = [int(np.argmax(pts >= 0.1 + k / 6 - 1e-12)) for k in range(12)]
    assert got.tolist() == want
    # the last frame at or before, our grid's choice, differs on most of them
    assert (got != np.floor((0.1 + np.arange(12) / 6) * 25)).any()
    # short video: padded with the last frame
    assert native.stepped_frames(pts[:20], 0.0, 1 / 6, 12)[-1] == native.stepped_frames(pts[:20], 0.0, 1 / 6, 12)[5]


def test_training_flips_each_clip_independently(videos) -> None:
    p = videos / "v0.mp4"
    starts = C.clip_starts(0.0, 3.0, 3, 0.2)
    plain = C.released_clips(p, starts, 32)
    flipped = C.released_clips(p, starts, 32, flips=[True, False, True])
    assert torch.equal(flipped.video[0], plain.video[0].flip(-1))
    assert torch.equal(flipped.video[1], plain.video[1])
    assert torch.equal(flipped.video[2], plain.video[2].flip(-1))
    import random
    rc = C.released_instance(p, [-0.4, -0.2, 0.0, 0.2, 0.4] * 1, 32, random.Random(3))
    assert rc.video.shape == (5, 3, 12, 32, 32) and rc.mel.shape == (5, 1, 128, 204)


# ------------------------------------------------------------------ evaluation

def test_released_weights_evaluate_with_the_released_protocol_by_default(tmp_path, videos) -> None:
    from sync_classifier.evaluate import evaluate
    folder = _released_folder(tmp_path)
    res = evaluate(ckpt=folder, data=videos, num_workers=0)
    assert res["convention"] == C.RELEASED and res["protocol"] == C.RELEASED
    assert res["n_videos"] == 2 and res["chance"] == pytest.approx(11 / 31)
    assert set(res["protocols"]) == {C.RELEASED, C.ALL_ANCHORS}
    # the released figure: a hit rate per video, so a multiple of 1/2 here
    assert res["a2v"] * 2 == pytest.approx(round(res["a2v"] * 2))
    other = evaluate(ckpt=folder, data=videos, num_workers=0, protocol=C.ALL_ANCHORS)
    assert other["protocol"] == C.ALL_ANCHORS and other["chance"] == pytest.approx(311 / 961)
    assert other["a2v"] == pytest.approx(res["protocols"][C.ALL_ANCHORS]["a2v"])
    with pytest.raises(ValueError, match="--data"):
        evaluate(ckpt=folder, data=None, num_workers=0)


def test_eval_protocol_matches_the_released_main_on_fixed_phi() -> None:
    from sync_classifier.evaluate import accuracies
    phi = torch.full((31, 31), -1.0)
    phi[15, 22] = 5.0           # centre audio prefers video 22: 7 off, a miss
    phi[18, 15] = 5.0           # centre video prefers audio 18: 3 off, a hit
    acc = accuracies(phi)
    assert acc[C.RELEASED] == (0.0, 1.0)


def _curate(*args):
    p = subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_cli_eval_header_says_the_protocol_and_json_gives_both(tmp_path, videos) -> None:
    folder = _released_folder(tmp_path)
    videos = tmp_path / "one"
    videos.mkdir()
    make_event_video(videos / "v.mp4", duration=4.0, event_times=[0.8, 2.0, 3.3], seed=5)
    out = _curate("sync", "eval", "--ckpt", folder, "--data", videos)
    assert "protocol released, released convention" in out and "all-anchors:" in out
    res = json.loads(_curate("sync", "eval", "--ckpt", folder, "--data", videos, "--json",
                             "--protocol", "all-anchors"))
    assert res["protocol"] == "all-anchors" and res["convention"] == "released"
    assert all(res["protocols"][p]["a2v"] is not None for p in ("released", "all-anchors"))


def test_cli_released_eval_keeps_a_burst_frame_rate_file(tmp_path) -> None:
    """r_frame_rate 30, average 11.5 fps: evaluated by the released code (torchvision reads the
    guessed rate), so kept by `curate sync eval --protocol released` too."""
    from testkit.avmedia import make_burst_clip
    folder = _released_folder(tmp_path)
    videos = tmp_path / "burst"
    videos.mkdir()
    make_burst_clip(videos / "b.mp4")
    make_event_video(videos / "slow.mp4", duration=4.0, event_times=[1.0], seed=0, fps=10)
    res = json.loads(_curate("sync", "eval", "--ckpt", folder, "--data", videos, "--json",
                             "--protocol", "released"))
    assert res["n_videos"] == 1 and res["a2v"] is not None
    assert len(res["skipped"]) == 1 and "slow.mp4" in json.dumps(res["skipped"])
    assert "fps" in json.dumps(res["skipped"])


# ------------------------------------------------------------------ scoring

def test_released_weights_score_with_the_released_convention(tmp_path, videos) -> None:
    from curate.ops.scoring import Scorers, score_segment
    from decoding.media import decode_grid
    from filters.sync import SyncScorer
    from sync_classifier.metrics import p_sync
    folder = _released_folder(tmp_path)
    scorer = SyncScorer.from_checkpoint(str(folder))
    assert scorer.convention == C.RELEASED
    path = videos / "v1.mp4"
    grid = decode_grid(path)
    windows = [{"start": 0.5, "end": 3.5}]
    rows = score_segment(grid, windows, Scorers(sync=scorer), None, None, only={"sync"},
                         gate={"sync"}, path=str(path))
    assert rows[0]["sync_note"] is None, rows[0]["sync_note"]
    # the same phi straight from the released clips of the file (centre of the window +-0.25 s)
    from filters import sampling
    t0 = 0.5 + sampling.SYNC_START_OFFSET / grid.fps
    starts = [t0 + d / grid.fps for d in sampling.SYNC_SHIFTS]
    # the clips made independently from the released code's description (tests/references.py)
    rc = ref_released_clips(path, np.asarray(starts), 32)
    model = load_sync_classifier(folder)
    with torch.no_grad():
        mel = torch.from_numpy(rc.mel).float()
        phi = model.pairwise(model.encode_audio(mel), model.encode_video(rc.video))
    # the tiny random model's P_sync all lie within ~1e-5 of 1/3: a shifted frame pick or a
    # halved waveform moves them by more than 1e-8, the float32 / float64 mel difference
    # (under 1e-4) by less
    assert rows[0]["sync_a2v"] == pytest.approx(p_sync(phi[1, :]), abs=1e-8)
    assert rows[0]["sync_v2a"] == pytest.approx(p_sync(phi[:, 1]), abs=1e-8)
    # ours, forced: different inputs, so (in general) different numbers
    ours = SyncScorer.from_checkpoint(str(folder), convention=C.OURS)
    rows2 = score_segment(grid, windows, Scorers(sync=ours), None, None, only={"sync"}, gate={"sync"})
    assert rows2[0]["sync_a2v"] != rows[0]["sync_a2v"]
    # without the file the released scorer cannot score: a note, not a silent fallback
    rows3 = score_segment(grid, windows, Scorers(sync=scorer), None, None, only={"sync"}, gate={"sync"})
    assert rows3[0]["sync_a2v"] is None and "released" in rows3[0]["sync_note"]


def test_run_records_the_sync_convention(tmp_path) -> None:
    from curate.reports.stats import format_text
    from curate.config.models import resolve_models, weight_ids
    folder = _released_folder(tmp_path)
    recipe = {"name": "x", "filters": ["sync"], "gate": ["sync"], "models": {}}
    models = resolve_models({"recipe": recipe, "options": {"sync_checkpoint": str(folder)}})
    assert models["sync"]["convention"] == C.RELEASED
    assert weight_ids(models)["sync"]["convention"] == C.RELEASED
    forced = resolve_models({"recipe": recipe, "options": {"sync_checkpoint": str(folder),
                                                           "sync_convention": "ours"}})
    assert forced["sync"]["convention"] == C.OURS
    with pytest.raises(ValueError, match="--sync-convention"):
        resolve_models({"recipe": recipe, "options": {"sync_checkpoint": str(folder),
                                                      "sync_convention": "bogus"}})
    st = {"out": "o", "recipe": "x", "funnel": [], "per_class": {}, "warnings": [],
          "sync_convention": "released"}
    assert "sync classifier convention: released" in format_text(st)


# ------------------------------------------------------------------ training

def test_training_with_the_released_convention_records_it(tmp_path, videos) -> None:
    from sync_classifier.train import train
    ck = train(out=tmp_path / "rel", data=videos, steps=1, batch_size=2, num_workers=0,
               model=tiny_config(), convention="released", offsets=(-0.4, -0.2, 0.0, 0.2, 0.4))
    st = read_checkpoint(ck)
    assert st["convention"] == C.RELEASED and st["extra"]["convention"] == C.RELEASED
    assert load_sync_classifier(ck).convention == C.RELEASED
    # resuming with the other convention would mix them
    with pytest.raises(ValueError, match="mix"):
        train(out=tmp_path / "rel", data=videos, steps=2, batch_size=2, num_workers=0,
              model=tiny_config(), convention="ours", offsets=(-0.4, -0.2, 0.0, 0.2, 0.4))
    # init from released weights: released by default
    folder = _released_folder(tmp_path)
    ck2 = train(out=tmp_path / "ft", data=videos, init=folder, steps=1, batch_size=2, num_workers=0,
                offsets=(-0.4, -0.2, 0.0, 0.2, 0.4))
    assert read_checkpoint(ck2)["convention"] == C.RELEASED


def test_uniform_placement_is_the_released_test_sets(videos) -> None:
    """The authors' sync training validates with sampling_type="uniform": starts
    np.linspace(0, D - 2, K) over the shorter stream's duration D (their uniform_sample with
    endpoint=True), no flip; the span must still hold the compact clips, as they assert."""
    from sync_classifier.data import ReleasedClipDataset, find_sources
    path = videos / "v0.mp4"
    offsets = (-0.4, -0.2, 0.0, 0.2, 0.4)
    d = native.released_metadata(path)["av_duration"]
    rc = C.released_instance(path, offsets, 32, None, placement=C.UNIFORM)
    np.testing.assert_allclose(rc.starts, [k * (d - 2.0) / 4 for k in range(5)], rtol=0, atol=1e-12)
    centred = C.released_instance(path, offsets, 32, None)
    np.testing.assert_allclose(np.diff(centred.starts), 0.2, atol=1e-12)
    assert not np.allclose(rc.starts, centred.starts)
    # the frames are picked at the uniform starts by the released nearest-frame rule
    nf = native.decode_native_frames(path)
    times = C.clip_time_grid(rc.starts)[:, :-1]
    cand = (nf.pts >= times[0, 0]) & (nf.pts <= times[-1, -1])
    assert np.array_equal(rc.frame_index, nf.index[cand][np.abs(times[..., None] - nf.pts[cand]).argmin(-1)])
    # the evaluation dataset hands the placement on
    from sync_classifier.data import VideoSource
    ds = ReleasedClipDataset([VideoSource(path, 0.0, None, "v0")], offsets, 32, train=False,
                             placement=C.UNIFORM)
    assert torch.equal(ds[0]["mel"], rc.mel) and torch.equal(ds[0]["video"], rc.video)
    with pytest.raises(ValueError, match="placement"):
        C.released_instance(path, offsets, 32, None, placement="spread")
    with pytest.raises(ValueError, match="uniform placement is for evaluation"):
        ReleasedClipDataset(find_sources(videos), offsets, 32, train=True, placement=C.UNIFORM)


def test_released_training_validates_with_uniform_clips(tmp_path, caplog) -> None:
    """`curate sync train --convention released --val-data`: each validation video's clips
    (21 by default, 5 here to keep it quick) placed uniformly as in the authors' test set,
    said in the log and in the history file; our convention says centred."""
    import logging
    import sync_classifier.train as T
    from sync_classifier.train import train
    vids = tmp_path / "v"
    make_event_video(vids / "a.mp4", duration=4.0, event_times=[1.0, 2.5], seed=3)
    out, offsets = tmp_path / "ck", (-0.4, -0.2, 0.0, 0.2, 0.4)
    with caplog.at_level(logging.INFO, logger="sync_classifier.train"):
        train(out=out, data=vids, val_data=vids, steps=2, batch_size=1, val_every=1, offsets=offsets,
              num_workers=0, model=tiny_config(), convention="released")
    assert "validation on 1 videos (0 skipped), 5 clips each, uniform placement" in caplog.text
    loader, placement = T._validation_set(T.TrainConfig(out=out, val_data=vids, offsets=offsets),
                                          tiny_config(), C.RELEASED)
    assert placement == C.UNIFORM and loader.dataset.placement == C.UNIFORM
    assert "validation at step 2 (uniform placement, 1 videos)" in caplog.text
    hist = [json.loads(x) for x in (out / "sync_classifier.log.jsonl").read_text().splitlines()]
    val = [h for h in hist if "validation" in h]
    assert [h["step"] for h in val] == [1, 2]
    assert all(h["validation"] == "uniform" and h["val_instances"] == 1 for h in val)
    assert all(0.0 <= h["val_acc_a2v"] <= 1.0 and h["val_loss"] > 0 for h in val)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sync_classifier.train"):
        train(out=tmp_path / "ours", data=vids, val_data=vids, steps=1, batch_size=1, offsets=offsets,
              num_workers=0, model=tiny_config(), convention="ours")
    assert "centred placement" in caplog.text and "uniform placement" not in caplog.text


def test_cli_passes_the_validation_options(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner
    import sync_classifier.train as T
    from curate.cli import app
    seen = {}
    monkeypatch.setattr(T, "train", lambda **kw: seen.update(kw) or tmp_path / "x.pt")
    r = CliRunner().invoke(app, ["sync", "train", "--out", str(tmp_path), "--val-data", str(tmp_path),
                                 "--val-every", "7", "--convention", "released"])
    assert r.exit_code == 0, r.output
    assert seen["val_data"] == tmp_path and seen["val_every"] == 7
    r = CliRunner().invoke(app, ["sync", "train", "--out", str(tmp_path), "--val-data", str(tmp_path / "no")])
    assert r.exit_code == 2 and "--val-data" in r.output


# ------------------------------------------------------------------ metrics

def test_metrics_released_protocol(tmp_path, metrics_clips) -> None:
    from sync_classifier.generated_eval import (evaluate_generated, metrics_video,
                                                released_clip_starts, summarize)
    assert released_clip_starts(6.0) == {"head": 0.0, "center": 2.0, "tail": 4.0}
    v = metrics_video(np.zeros((12, 240, 320, 3), np.uint8), 256, 224)
    assert v.shape == (3, 12, 224, 224)
    gen_root, ref_root = metrics_clips
    folder = _released_folder(tmp_path)
    model = load_sync_classifier(folder)
    rows = evaluate_generated(gen_root, ref_root, model)          # released by default
    assert len(rows) == 3 and all(r["error"] is None for r in rows), rows
    assert all(r["protocol"] == "released" and 0 < r["rel_sync"] < 1 for r in rows)
    assert summarize(rows)["protocol"] == "released"
    ours = evaluate_generated(gen_root, ref_root, model, protocol="ours")
    assert all(r["protocol"] == "ours" for r in ours)
    assert [r["phi_gen"] for r in ours] != [r["phi_gen"] for r in rows]


# ------------------------------------------------------------------ a run through the stages

def test_score_stage_with_released_weights_records_the_convention(tmp_path) -> None:
    from curate.config.run_state import load_run, new_run
    from curate.build import stage_value
    from curate.config.recipes import get_recipe
    from curate.execution.local import LocalExecutor
    from curate.reports.stats import collect, format_text
    from testkit.avmedia import demo_sources
    root = tmp_path / "corpus"
    src = demo_sources(root, n_videos=2, seed=5)
    recipe = get_recipe("demo")
    recipe["stages"] = ["sources", "download", "split", "score"]
    recipe["filters"] = ["pixel_diff", "amplitude", "sync"]
    recipe["gate"] = ["sync"]
    out = tmp_path / "run"
    folder = _released_folder(tmp_path)
    run = new_run(out, recipe, {"sync_checkpoint": str(folder)})   # no convention option
    ex = LocalExecutor()
    stage_value("sources", out, run, sources=src)
    stage_value("download", out, run, ex)
    stage_value("split", out, run, ex)
    table = stage_value("score", out, run, ex).to_pylist()
    scored = [w for w in table if w["sync_a2v"] is not None]
    assert scored and all(w["sync_note"] is None for w in scored)
    assert load_run(out)["sync_convention"] == C.RELEASED
    st = collect(out)
    assert st["sync_convention"] == C.RELEASED
    assert "sync classifier convention: released" in format_text(st)
