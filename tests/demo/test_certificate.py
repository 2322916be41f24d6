"""The demo's sync certificate table (issue 27): which Synchformer certify uses, and both
models' offsets beside each generated video's truth."""
from __future__ import annotations

import json

import pytest

from curate.demo.certificate import format_offset_rows, kind_summary, offset_rows, use_demo_synchformer
from manifests import schemas
from manifests.schemas import write_manifest


def test_the_demo_uses_the_shipped_synchformer_when_installed(tmp_path):
    weights = tmp_path / "synchformer_demo_small.pt"
    opts: dict = {}
    line = use_demo_synchformer(opts, weights)            # not installed: says so, sets nothing
    assert "synchformer_checkpoint" not in opts
    assert str(weights) in line and "--synchformer-checkpoint" in line
    weights.write_bytes(b"x")
    line = use_demo_synchformer(opts, weights)
    assert opts["synchformer_checkpoint"] == str(weights) and "shipped demo Synchformer" in line
    mine = {"synchformer_checkpoint": "mine.pt"}
    use_demo_synchformer(mine, weights)                   # the option wins
    assert mine["synchformer_checkpoint"] == "mine.pt"


def _window(sid: str, k: int, off: float | None) -> dict:
    return {"window_id": f"{sid}_{k}", "source_id": sid, "shot_id": f"{sid}_shot000", "class_name": "c",
            "split": "train", "start": 0.5 * k, "end": 0.5 * k + 3, "status": "ok", "error": None,
            "sync_offset_s": off}


def _clip(sid: str, first: float, last: float, desync: float) -> dict:
    return {"clip_id": f"{sid}_c", "source_id": sid, "shot_id": f"{sid}_shot000", "class_name": "c",
            "split": "train", "start": 0.0, "end": 6.0, "n_windows": 3, "status": "ok", "error": None,
            "sf_offset_first": first, "sf_offset_last": last, "desync_s": desync}


def test_offsets_beside_the_truth(tmp_path):
    out = tmp_path / "out"
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"videos": [
        {"id": "synth0000", "kind": "flash_click", "audio_offset": 0.0},
        {"id": "synth0001", "kind": "flash_click_shifted", "audio_offset": 0.52},    # audio late
        {"id": "synth0002", "kind": "static_tone", "audio_offset": 0.0}]}))
    a, b, c = "synth0000_000000_000010", "synth0001_000000_000010", "synth0002_000000_000010"
    write_manifest(out, "windows", [_window(a, 0, 0.0), _window(a, 1, 0.04), _window(a, 2, 0.0),
                                    _window(b, 0, -0.52), _window(b, 1, -0.48), _window(b, 2, -0.52),
                                    _window(c, 0, None)])
    write_manifest(out, "clips", [_clip(a, 0.0, 0.2, 0.1)])
    rows = offset_rows(out, truth)
    assert [r["id"] for r in rows] == ["synth0000", "synth0001"]        # c: no scored window
    clean, shifted = rows
    assert clean["true_offset_s"] == 0.0 and clean["sync_offset_s"] == 0.0
    assert clean["sync_agree"] == pytest.approx(2 / 3) and clean["sf_offsets_s"] == [0.0, 0.2]
    assert clean["desync_s"] == pytest.approx(0.1)
    assert shifted["true_offset_s"] == -0.52 and shifted["sync_offset_s"] == -0.52
    assert shifted["sf_offsets_s"] == [] and shifted["desync_s"] is None   # no merged clip
    text = "\n".join(format_offset_rows(rows))
    assert "flash_click_shifted" in text and "-0.52" in text
    summary = "\n".join(kind_summary(rows))
    assert "1/1" in summary and "2/2" in summary          # within 0.2 s: classifier, Synchformer
    assert schemas.CERT_COLUMNS[0] == "sf_offset_first"


def test_the_repair_table_lists_shifted_videos_and_what_the_repair_did(tmp_path):
    from curate.demo.certificate import format_repair_rows, repair_rows
    out, truth = tmp_path / "out", tmp_path / "truth.json"
    truth.write_text(json.dumps({"videos": [
        {"id": "synth0000", "kind": "flash_click", "audio_offset": 0.0},
        {"id": "synth0001", "kind": "flash_click_shifted", "audio_offset": -0.4},    # audio early
        {"id": "synth0002", "kind": "flash_click_shifted", "audio_offset": 0.4}]}))

    def sel(yt, status, shift, repaired, note, error=None):
        return {"key": yt, "source_id": f"{yt}_000000_000010", "start": 1.0, "end": 6.0, "status": status,
                "error": error, "av_shift_ms": shift, "repaired": repaired, "repair_note": note}
    write_manifest(out, "selected", [
        sel("synth0000", "ok", 0.0, False, "in sync (both models find offset 0)"),     # not listed
        sel("synth0001", "ok", -400.0, True, "audio early by 0.400 s (both models agree); rescore offset 0"),
        sel("synth0002", "rejected", 0.0, False, "models disagree (Synchformer +0.20 s, paper's "
            "classifier +0.400 s)", "sync: out of sync and not repaired (models disagree)")])
    rows = repair_rows(out, truth)
    assert [r["id"] for r in rows] == ["synth0001", "synth0002"]
    fixed, left = rows
    assert fixed["true_offset_s"] == pytest.approx(0.4) and fixed["shift_offset_s"] == pytest.approx(0.4)
    assert fixed["outcome"] == "repaired (rescore found offset 0)"
    assert left["outcome"].startswith("rejected (out of sync), not repaired: models disagree")
    text = "\n".join(format_repair_rows(rows))
    assert "rescore offset 0" in text and "+0.40" in text
    assert [ln.split()[5] for ln in text.splitlines()[1::2]] == ["yes", "no"]      # what ships
    write_manifest(out, "selected", [sel("synth0001", "ok", 0.0, False, None)])          # repair off
    assert repair_rows(out, truth) == []
