"""Stage `certify`: Synchformer's certificate of every ok merged clip, into the clips and
selected manifests, kept by a re-select, skipped without weights."""
from __future__ import annotations

import pytest
import torch

from curate.config.recipes import get_recipe
from curate.config.run_state import new_run
from curate.execution.local import LocalExecutor
from curate.build import stage_value
from curate.stages.select import keep_cut_columns
from filters.synchformer import CERT_COLUMNS
from filters.synchformer_model import Synchformer, SynchformerConfig, save_synchformer
from manifests import schemas
from manifests.schemas import read_rows, write_manifest
from tests.avmedia import make_clip

SID = "src_000000_000006"


def _clip(k: int, start: float, end: float, status: str = "ok") -> dict:
    return {"clip_id": f"{SID}_{k}", "source_id": SID, "shot_id": f"{SID}_shot000",
            "class_name": "dog", "split": "train", "start": start, "end": end, "n_windows": 1,
            "status": status, "error": None}


@pytest.fixture
def run_dir(tmp_path):
    out = tmp_path / "out"
    media = make_clip(tmp_path / "src.mp4", 6.0, "25", sr=16000)
    torch.manual_seed(0)
    model = Synchformer(SynchformerConfig(video_dim=32, video_depth=1, video_heads=2, audio_dim=32,
                                          audio_depth=1, audio_heads=2, dim=32, layers=1, heads=2))
    save_synchformer(model, tmp_path / "small_sf.pt")
    run = new_run(out, get_recipe("demo"), {"synchformer_checkpoint": str(tmp_path / "small_sf.pt")})
    write_manifest(out, "sources", [{"source_id": SID, "ytid": "src", "start": 0.0, "end": 6.0,
                                     "class_name": "dog", "split": "train", "status": "ok"}])
    write_manifest(out, "downloads", [{"source_id": SID, "path": str(media), "status": "ok",
                                       "duration": 6.0, "seg_start": 0.0, "seg_end": 6.0}])
    write_manifest(out, "clips", [_clip(0, 0.0, 5.5), _clip(1, 2.0, 4.0), _clip(2, 0.0, 2.0, "rejected")])
    write_manifest(out, "selected", [{"key": "dog-a", "name": "dog/src_000000_000006_2.0_4.0",
                                      "clip_id": f"{SID}_1", "source_id": SID, "class_name": "dog",
                                      "split": "train", "start": 2.0, "end": 4.0, "status": "ok"}])
    return out, run


def test_certify_fills_clips_and_selected(run_dir):
    out, run = run_dir
    assert stage_value("certify", out, run, LocalExecutor()) == 2
    clips = {c["clip_id"]: c for c in read_rows(out, "clips")}
    long, short, rejected = (clips[f"{SID}_{k}"] for k in range(3))
    assert all(long[c] is not None for c in CERT_COLUMNS) and long["cert_note"] is None
    assert "centred" in short["cert_note"]
    assert all(rejected[c] is None for c in CERT_COLUMNS)          # only ok clips are certified
    sel = read_rows(out, "selected")[0]
    assert sel["desync_s"] == short["desync_s"] and sel["cert_note"] == short["cert_note"]
    # the desync of a clip is the mean |offset| of its first and last contexts
    assert long["desync_s"] == pytest.approx((abs(long["sf_offset_first"]) + abs(long["sf_offset_last"])) / 2)


def test_reselect_keeps_the_certificate(run_dir):
    out, run = run_dir
    stage_value("certify", out, run, LocalExecutor())
    fresh = schemas.to_table([_clip(0, 0.0, 5.5), _clip(1, 2.0, 4.5)], schemas.CLIPS)
    kept = keep_cut_columns(out, "clips", fresh, "clip_id").to_pylist()
    assert kept[0]["desync_s"] is not None                # same clip and times: kept
    assert kept[1]["desync_s"] is None                    # other times: measured again later


def test_certify_without_weights_is_skipped(run_dir, tmp_path, monkeypatch):
    out, run = run_dir
    monkeypatch.setenv("CURATE_HOME", str(tmp_path / "empty_cache"))     # nothing pulled
    run["options"]["synchformer_checkpoint"] = None
    said = []
    assert stage_value("certify", out, run, LocalExecutor(), echo=said.append) == 0
    assert said == ["certify: skipped (no --synchformer-checkpoint, and no Synchformer in the weights "
                    "cache: `curate models pull synchformer-mmaudio`)"]
    assert all(c["desync_s"] is None for c in read_rows(out, "clips"))


def test_desync_gate_is_off_by_default_and_rejects_above_max():
    from curate.selection.rules import desync_gate
    rows = [_clip(0, 0.0, 5.5), _clip(1, 2.0, 4.0), _clip(2, 0.0, 2.0, "rejected"), _clip(3, 1.0, 6.0)]
    for r, d in zip(rows, (0.2, 1.2, 1.8, None)):
        r["desync_s"] = d
    table = schemas.to_table(rows, schemas.CLIPS)
    same, n = desync_gate(table, get_recipe("avsync15")["desync"]["max"])
    assert n == 0 and same is table                       # the paper's recipes: off
    gated, n = desync_gate(table, 0.4)
    got = gated.to_pylist()
    assert n == 2 and [r["status"] for r in got] == ["ok", "rejected", "rejected", "rejected"]
    assert got[1]["error"] == "desync 1.20 s > max 0.4"
    assert got[2]["error"] is None                        # already rejected: untouched
    assert "no certificate" in got[3]["error"]
    # a clip a repair will shift back is left to the repair (the shard stage decides)
    spared, n = desync_gate(table, 0.4, exempt={got[1]["clip_id"]})
    assert n == 1 and [r["status"] for r in spared.to_pylist()] == ["ok", "ok", "rejected", "rejected"]


def test_desync_max_is_the_recipes_unless_a_set_says_otherwise():
    from curate.config.thresholds import desync_max, parse_overrides
    run = {"recipe": get_recipe("demo")}
    assert desync_max(run) is None
    run["recipe"]["desync"]["max"] = 0.4
    assert desync_max(run) == 0.4
    assert desync_max({**run, "selection_overrides": ["clip_diff.max=0.6", "desync.max=0.2"]}) == 0.2
    assert desync_max({**run, "selection_overrides": ["desync.max=0.2", "desync.max=none"]}) is None
    assert parse_overrides(["desync.max=0.3", "clip_diff.max=0.6"])["clip_diff"]["max"] == 0.6
    for bad in ("desync.max=abc", "desync.max=-1", "desync.max=inf"):
        with pytest.raises(ValueError, match="desync.max"):
            parse_overrides([bad])


def test_certify_measures_the_clips_the_desync_gate_rejected_and_no_other(tmp_path):
    """The first select of a build with desync.max rejects every clip as not measured yet;
    certify must measure them (and a clip another rule rejected, not)."""
    from curate.selection.rules import DESYNC_UNMEASURED
    from curate.stages.certify import certify_items
    write_manifest(tmp_path, "sources", [{"source_id": "s", "ytid": "s", "start": 0.0, "end": 10.0,
                                          "class_name": "dog", "split": "train", "status": "ok"}])
    write_manifest(tmp_path, "downloads", [{"source_id": "s", "path": str(tmp_path / "s.mp4"), "status": "ok",
                                            "duration": 10.0, "seg_start": 0.0, "seg_end": 10.0}])
    (tmp_path / "s.mp4").write_bytes(b"x")
    clips = [{"clip_id": f"c{i}", "source_id": "s", "start": float(i), "end": i + 3.0, "status": st, "error": err}
             for i, (st, err) in enumerate([("ok", None), ("rejected", DESYNC_UNMEASURED),
                                            ("rejected", "desync 1.20 s > max 0.4"), ("rejected", "balance: cap")])]
    assert [it["key"] for it in certify_items(tmp_path, clips)] == ["c0", "c1", "c2"]


def test_stats_show_the_certificate_histograms(run_dir):
    from curate.reports.stats import collect, format_text
    out, run = run_dir
    assert "certificates" not in collect(out)             # nothing certified yet: no block
    stage_value("certify", out, run, LocalExecutor())
    st = collect(out)
    cert = st["certificates"]
    assert cert["certified"] == 2
    assert sum(cert["histograms"]["desync_s"].values()) == 2
    assert "sync certificates (merged clips): Synchformer 2 clips" in format_text(st)


def test_metrics_desync_on_generated_videos(tmp_path):
    from curate.reports.gen_metrics import desync_metric, with_desync
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir(), ref.mkdir()
    for name, seconds in (("a.mp4", 5.2), ("b.mp4", 3.0)):
        make_clip(gen / name, seconds, "24", sr=16000)
        make_clip(ref / name, seconds, "25", sr=16000)
    torch.manual_seed(0)
    save_synchformer(Synchformer(SynchformerConfig(video_dim=16, video_depth=1, video_heads=2, audio_dim=16,
                                                   audio_depth=1, audio_heads=2, dim=16, layers=1, heads=2,
                                                   image=32)), tmp_path / "sf.pt")
    d = desync_metric(gen, ref, tmp_path / "sf.pt", device="cpu")
    assert d["measured"] == 1 and d["too_short"] == ["b.mp4"]
    assert d["DeSync"] == d["per_video"]["a.mp4"] and 0 <= d["DeSync"] <= 2
    assert abs(d["DeSync"] * 10 - round(d["DeSync"] * 10)) < 1e-5     # mean of two 0.2-s classes
    assert "over 1 videos (1 shorter than 4.8 s not measured)" in with_desync("IA: 0.1", d, False)
