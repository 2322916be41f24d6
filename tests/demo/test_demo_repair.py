"""The demo repairs its shifted clips (issue 27): with repair on, a shifted video of the demo
corpus (``curate.demo.synth``: the audio ``SHIFT_S`` s off its flashes) goes through the demo
command's own path (loopback download, score, select, certify with the shipped small
Synchformer, shard) and comes back cut with its audio shifted back, rescored at offset 0 and
verified against its source at the recorded shift. The truth is how the video was made."""
from __future__ import annotations

import json

import pytest

from curate.demo.certificate import DEMO_SYNCHFORMER
from curate.demo.offline import build_demo
from curate.demo.synth import _write_sources, corpus_specs, render
from curate.execution.local import LocalExecutor
from manifests.schemas import read_rows
from shards.verify import verify_run


@pytest.mark.slow
def test_the_demo_repairs_a_shifted_video_and_verifies(tmp_path):
    spec = next(s for s in corpus_specs(32, seed=0) if s.kind == "flash_click_shifted")
    synth_dir = tmp_path / "out" / "synth"          # the demo's corpus, this video alone
    render(spec, synth_dir / "videos" / f"{spec.id}.mp4")
    (synth_dir / "truth.json").write_text(json.dumps({"seed": 0, "videos": [spec.truth()]}))
    _write_sources(synth_dir / "sources.csv", [spec], None)
    lines: list[str] = []
    build_demo(tmp_path / "out", LocalExecutor(), options={"repair": True, "workers": 1},
               echo=lines.append)
    text = "\n".join(lines)
    print(text)
    assert f"shipped demo Synchformer {DEMO_SYNCHFORMER.name}" in text
    sel = [r for r in read_rows(tmp_path / "out", "selected") if r["status"] == "ok"]
    assert len(sel) == 1, text
    clip = sel[0]
    # the shift undone is the truth's (the paper's classifier's median: its grid is 0.04 s)
    assert clip["repaired"] is True, clip["repair_note"]
    assert clip["av_shift_ms"] == pytest.approx(1000 * spec.audio_offset, abs=40.0)
    assert clip["repair_note"].endswith("rescore offset 0")
    rep = verify_run(tmp_path / "out")
    assert rep["ok"] and rep["summary"]["repaired_checked"] == 1, rep["run_problems"]
    assert "repaired (rescore found offset 0)" in text and "== verify: OK; 1 repaired" in text
