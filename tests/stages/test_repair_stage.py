"""Repair in the shard stage (issue 27): a selected clip whose models agree on a constant,
non-zero offset is cut with its audio shifted back, rescored with Synchformer, shipped only
when the rescore finds offset 0, recorded in the manifests and sample JSON, and verified
against its source at the recorded shift.

The media are generated with a known delay (audio 0.6 s late). The certificate columns and
the paper's classifier's per-window offsets are written as the certify and score stages
write them; the rescore runs the real certify path with a small Synchformer whose head is
biased to one class (a stub offset source: the decision it feeds is what is under test).
"""
from __future__ import annotations

import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from curate.config.recipes import get_recipe
from curate.config.run_state import new_run
from curate.demo.synth import make_event_video
from curate.execution.local import LocalExecutor
from curate.reports.stats import collect, format_text
from curate.stagekit import repair
from curate.build import stage_value
from filters.synchformer import offset_grid
from filters.synchformer_model import Synchformer, SynchformerConfig, save_synchformer
from manifests.schemas import read_rows, write_manifest
from shards.verify import format_report, verify_run
from shards.writer import key_from_name

DELAY = 0.6          # audio late (synth's sign); Synchformer reads offset -0.6
EVENTS = [0.35, 1.1, 1.7, 2.55, 3.05, 3.95, 4.3, 5.2, 5.9, 6.45, 7.4, 8.05, 8.7, 9.6]
# clip: (source, start, end, the paper's per-window offsets over it)
CLIPS = {"fix": ("aaaaaaaaaaa", 1.0, 5.0, [-0.6] * 5),           # agree, constant: repaired
         "end": ("aaaaaaaaaaa", 5.5, 9.5, [-0.6] * 5),           # would run out of audio
         "mixed": ("bbbbbbbbbbb", 1.0, 5.0, [-0.6, -0.6, 0.0, -0.6, -0.6]),   # not constant
         "other": ("bbbbbbbbbbb", 5.0, 9.0, [-0.2] * 5)}         # disagree with Synchformer
#: clips the select stage merged from windows the sync gate rejected (repair candidates):
#: they ship only repaired
CANDIDATES = {"fix", "mixed"}


def _sid(yt):
    return f"{yt}_000000_000010"




def _bias_head(model, offset_s: float) -> None:
    head = [mod for name, mod in model.named_modules() if name.endswith("off_head")][0]
    with torch.no_grad():
        head.bias.zero_()
        head.weight.zero_()
        head.bias[int(abs(offset_grid() - offset_s).argmin())] = 10.0


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    src = tmp_path_factory.mktemp("repair") / "src.mp4"
    make_event_video(src, 10.0, EVENTS, audio_offset=DELAY, seed=5)
    return src


def _run(tmp_path, src, rescore_offset: float, enabled: bool = True):
    out = tmp_path / "out"
    torch.manual_seed(0)
    m = Synchformer(SynchformerConfig(video_dim=32, video_depth=1, video_heads=2, audio_dim=32,
                                      audio_depth=1, audio_heads=2, dim=32, layers=1, heads=2))
    _bias_head(m, rescore_offset)
    save_synchformer(m, tmp_path / f"sf{rescore_offset}.pt")
    recipe = get_recipe("demo")
    recipe["repair"]["enabled"] = enabled
    run = new_run(out, recipe, {"synchformer_checkpoint": str(tmp_path / f"sf{rescore_offset}.pt")})
    yts = sorted({c[0] for c in CLIPS.values()})
    write_manifest(out, "sources", [{"source_id": _sid(y), "ytid": y, "start": 0.0, "end": 10.0,
                                     "class_name": "dog", "split": "train", "status": "ok"} for y in yts])
    write_manifest(out, "downloads", [{"source_id": _sid(y), "path": str(src), "status": "ok",
                                       "duration": 10.0, "seg_start": 0.0, "seg_end": 10.0} for y in yts])
    clips, sel = [], []
    for cid, (yt, a, b, _) in CLIPS.items():
        clips.append({"clip_id": cid, "source_id": _sid(yt), "class_name": "dog", "split": "train",
                      "start": a, "end": b, "n_windows": 5, "status": "ok",
                      "sf_offset_first": -DELAY, "sf_prob_first": 0.9, "sf_offset_last": -DELAY,
                      "sf_prob_last": 0.8})
        name = f"dog/{yt}_000000_000010_{a:.1f}_{b:.1f}"
        sel.append({"key": key_from_name(name), "name": name, "clip_id": cid, "source_id": _sid(yt),
                    "class_name": "dog", "split": "train", "start": a, "end": b, "status": "ok"})
    write_manifest(out, "clips", clips)
    write_manifest(out, "selected", sel)
    windows, decisions = [], []
    for cid, (yt, a, b, _) in CLIPS.items():
        for wid, start, end, off, p in _clip_windows(cid):
            windows.append({"window_id": wid, "source_id": _sid(yt), "start": start, "end": end,
                            "status": "ok", "sync_offset_s": off, "sync_offset_p": p})
            decisions.append({"window_id": wid, "keep": cid not in CANDIDATES,
                              "reason": "sync" if cid in CANDIDATES else None})
    write_manifest(out, "windows", windows)
    write_manifest(out, "decisions", decisions)
    return out, run


def _clip_windows(cid):
    """(window_id, start, end, offset, probability) of a clip's 3-s windows every 0.25 s."""
    _, a, _, offs = CLIPS[cid]
    return [(f"{cid}_w{i}", a + 0.25 * i, a + 0.25 * i + 3.0, o, 0.9) for i, o in enumerate(offs)]


@pytest.fixture
def paper_offsets():
    """The paper's classifier's per-window offsets (Synchformer's sign) are written into the
    windows manifest by ``_run`` (as the score stage writes them)."""


def _selected(out):
    return {r["clip_id"]: r for r in read_rows(out, "selected")}


def test_repair_ships_the_agreed_shift_and_refuses_the_rest(tmp_path, source, paper_offsets):
    out, run = _run(tmp_path, source, rescore_offset=0.0)
    stage_value("shard", out, run, LocalExecutor())
    s = _selected(out)
    fix = s["fix"]
    assert fix["status"] == "ok" and fix["repaired"] is True
    assert fix["av_shift_ms"] == pytest.approx(DELAY * 1000) and "rescore offset 0" in fix["repair_note"]
    assert s["end"]["repaired"] is False and s["end"]["av_shift_ms"] == 0.0
    assert "repair refused" in s["end"]["repair_note"] and "source's end" in s["end"]["repair_note"]
    assert s["mixed"]["repaired"] is False and "not constant" in s["mixed"]["repair_note"]
    assert s["other"]["repaired"] is False and "disagree" in s["other"]["repair_note"]
    # not repaired: shipped as selected, unless out of sync (a repair candidate)
    assert [s[c]["status"] for c in ("fix", "end", "other")] == ["ok"] * 3
    assert s["mixed"]["status"] == "rejected" and s["mixed"]["error"].startswith("sync: out of sync")
    assert s["mixed"]["key"] not in {r["key"] for r in read_rows(out, "shards")}
    clips = {c["clip_id"]: c for c in read_rows(out, "clips")}
    assert clips["fix"]["repaired"] is True and clips["fix"]["av_shift_ms"] == fix["av_shift_ms"]
    with tarfile.open(out / "shards" / "train-000000.tar") as t:
        meta = json.loads(t.extractfile(f"{fix['key']}.json").read())
    assert meta["repaired"] is True and meta["av_shift_ms"] == pytest.approx(600.0)
    rep = verify_run(out)
    assert rep["ok"], rep["run_problems"]
    assert rep["summary"]["repaired_checked"] == 1        # verify read the repaired clip's audio
    assert "repaired clips: 1 checked" in format_report(rep)
    assert (out / "work" / "rescore").is_dir()            # only the repaired clip was rescored
    st = collect(out)
    assert st["repairs"] == {"repaired (rescore found offset 0)": 1,
                             "refused: the shifted audio would run past the source": 1,
                             "rejected (out of sync), not repaired: offset not constant": 1,
                             "not repaired: models disagree": 1}
    assert "repaired (rescore found offset 0)" in format_text(st)
    from curate.reports.html import _tables
    assert "Repairs (selected clips)" in "".join(_tables(st))


def test_verify_fails_when_the_recorded_shift_is_tampered(tmp_path, source, paper_offsets):
    out, run = _run(tmp_path, source, rescore_offset=0.0)
    stage_value("shard", out, run, LocalExecutor())
    assert verify_run(out)["ok"]
    path = out / "manifests" / "selected.parquet"
    t = pq.read_table(path)
    rows = t.to_pylist()
    for r in rows:
        if r["clip_id"] == "fix":
            r["av_shift_ms"] = 640.0        # 40 ms off the shift the cut applied
    pq.write_table(type(t).from_pylist(rows, schema=t.schema), path)
    rep = verify_run(out)
    assert not rep["ok"]
    assert any("off its source at the recorded shift +640.0 ms" in p for p in rep["run_problems"])


def test_a_repair_whose_rescore_is_not_zero_is_rejected(tmp_path, source, paper_offsets):
    out, run = _run(tmp_path, source, rescore_offset=-0.6)
    stage_value("shard", out, run, LocalExecutor())
    s = _selected(out)
    assert s["fix"]["status"] == "rejected" and "rescore" in s["fix"]["error"]
    assert s["fix"]["repaired"] is False
    assert collect(out)["repairs"]["rejected: the rescore of the repaired clip is not offset 0"] == 1
    keys = {r["key"] for r in read_rows(out, "shards")}
    assert s["fix"]["key"] not in keys and s["end"]["key"] in keys
    assert verify_run(out)["ok"]


def test_repair_off_cuts_as_before(tmp_path, source, paper_offsets):
    out, run = _run(tmp_path, source, rescore_offset=0.0, enabled=False)
    stage_value("shard", out, run, LocalExecutor())
    s = _selected(out)
    assert all(r["repaired"] is False and r["av_shift_ms"] == 0.0 and r["repair_note"] is None
               for r in s.values())
    assert not (out / "work" / "rescore").exists()
    assert "repairs" not in collect(out)


def test_build_repair_option_turns_the_recipe_option_on_and_a_resume_keeps_it(tmp_path):
    assert get_recipe("vggss")["repair"]["enabled"] is False          # the paper's recipes: off
    assert get_recipe("vggss-repaired")["repair"]["enabled"] is True
    run = new_run(tmp_path, get_recipe("demo"), {"repair": True})
    assert run["recipe"]["repair"] == {"enabled": True, "min_prob": 0.5,
                                       "min_window_prob": pytest.approx(2 / 31)}
    again = new_run(tmp_path, get_recipe("demo"), {"repair": None})   # resumed without --repair
    assert again["recipe"]["repair"]["enabled"] is True
    assert new_run(tmp_path / "plain", get_recipe("demo"), {})["recipe"]["repair"]["enabled"] is False


def test_a_repair_without_weights_to_rescore_it_is_rejected(tmp_path):
    run = new_run(tmp_path, get_recipe("demo"), {"repair": True})
    cuts = {"k": {"key": "k", "status": "ok", "repaired": True, "av_shift_ms": 600.0,
                  "repair_note": "audio late by 0.600 s (both models agree)"}}
    repair.rescore(tmp_path, run, LocalExecutor(), cuts, [])
    assert cuts["k"]["status"] == "rejected" and cuts["k"]["repaired"] is False
    assert "no --synchformer-checkpoint" in cuts["k"]["error"]


def test_only_a_clip_merged_from_candidates_must_be_repaired(tmp_path):
    """A clip of kept windows ships as with repair off even when a rejected, confidently
    shifted window lies inside it; a clip holding candidates and no kept window ships only
    repaired (``repair.needs_repair``)."""
    sid = _sid("aaaaaaaaaaa")
    # (window, start, keep, offset): kept 0.0-1.0 with a shifted window at 0.5 inside;
    # 5.0-5.5 shifted only
    plan = [("k0", 0.0, True, 0.0), ("x1", 0.5, False, -0.6), ("k2", 1.0, True, 0.0),
            ("c3", 5.0, False, -0.6), ("c4", 5.5, False, -0.6)]
    write_manifest(tmp_path, "windows", [{"window_id": w, "source_id": sid, "start": t, "end": t + 3.0,
                                          "status": "ok", "sync_offset_s": off, "sync_offset_p": 0.9}
                                         for w, t, _, off in plan])
    write_manifest(tmp_path, "decisions", [{"window_id": w, "keep": k, "reason": None if k else "sync"}
                                           for w, _, k, _ in plan])
    selected = [{"key": "insync", "source_id": sid, "start": 0.0, "end": 4.0},
                {"key": "shifted", "source_id": sid, "start": 5.0, "end": 8.5}]
    assert repair.needs_repair(tmp_path, selected) == {"shifted"}


def test_a_weak_clip_is_repaired_by_its_shots_confident_clip_selected_or_not(tmp_path):
    """The paper's classifier below its bar on every window of a clip (p 0.05 < 2/31) but at
    the offset both models read: repaired when another clip of the same shot was decided at
    that offset with every bar met, even when that clip was not selected
    (``selection.repair.confirm_by_shot``); alone in its shot it is not."""
    sid = _sid("aaaaaaaaaaa")
    # clip: (shot, start, end, classifier probability of each window)
    spec = {"strong": ("s0", 0.0, 3.5, 0.2), "weak": ("s0", 5.0, 8.0, 0.05),
            "alone": ("s1", 10.0, 13.0, 0.05)}
    windows, clips = [], {}
    for cid, (shot, a, b, p) in spec.items():
        for i, t in enumerate(np.arange(a, b - 3.0 + 1e-6, 0.5)):
            windows.append({"window_id": f"{cid}{i}", "source_id": sid, "start": float(t),
                            "end": float(t) + 3.0, "status": "ok", "sync_offset_s": -DELAY,
                            "sync_offset_p": p})
        clips[cid] = {"clip_id": cid, "source_id": sid, "shot_id": f"{sid}_{shot}", "start": a, "end": b,
                      "sf_offset_first": -DELAY, "sf_prob_first": 0.9, "sf_offset_last": -DELAY,
                      "sf_prob_last": 0.9}
    write_manifest(tmp_path, "windows", windows)
    selected = [{"key": k, "clip_id": k, "source_id": sid} for k in ("weak", "alone")]
    run = {"recipe": {"repair": {"enabled": True}}}
    got = repair.plan(tmp_path, run, selected, clips)
    assert got["weak"].repair and got["weak"].delay_s == pytest.approx(DELAY)
    assert "another clip of its shot" in got["weak"].reason
    assert not got["alone"].repair and "paper's classifier below" in got["alone"].reason
    clips["strong"]["sf_offset_last"] = -0.2           # the shot's confident clip is no more
    assert not repair.plan(tmp_path, run, selected, clips)["weak"].repair
