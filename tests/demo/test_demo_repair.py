"""The demo repairs its shifted clips (issue 27): with repair on, the shifted videos of the demo
corpus (``curate.demo.synth``: the audio ``SHIFT_S`` s off its flashes) go through the demo
command's own path (loopback download, score, select, certify with the shipped small
Synchformer, shard) and come back cut with their audio shifted back, rescored at offset 0 and
verified against their source at the recorded shift. The truth is how the videos were made.
Every selected clip of a shifted video ships repaired, but one that cannot be: synth0030's
7.0-10.0 s has its audio 0.40 s late, and undoing that needs 0.40 s of sound past the file's
end, so the cut refuses and says so. synth0024's 6.0-9.0 s is repaired with the classifier's
confidence from its shot (its one window reads the shift at 0.058 < 2/31; its shot's 1.0-4.0 s
met every bar at the same offset); synth0030's 0.0-3.0 s is repaired by the classifier's
0.32 s for a 0.40-s shift, a residual off Synchformer's class centres that the rescore must
read as offset 0."""
from __future__ import annotations

import json

import pytest

from filters.synchformer_model import DEMO_CHECKPOINT as DEMO_SYNCHFORMER
from curate.demo.offline import build_demo
from curate.demo.synth import _write_sources, corpus_specs, render
from curate.execution.local import LocalExecutor
from manifests.schemas import read_rows
from shards.verify import verify_run


@pytest.mark.slow
def test_the_demo_repairs_every_shifted_video_and_verifies(tmp_path):
    specs = [s for s in corpus_specs(32, seed=0) if s.kind == "flash_click_shifted"]
    assert len(specs) == 3
    synth_dir = tmp_path / "out" / "synth"          # the demo's corpus, these videos alone
    for spec in specs:
        render(spec, synth_dir / "videos" / f"{spec.id}.mp4")
    (synth_dir / "truth.json").write_text(json.dumps({"seed": 0, "videos": [s.truth() for s in specs]}))
    _write_sources(synth_dir / "sources.csv", specs, None)
    lines: list[str] = []
    build_demo(tmp_path / "out", LocalExecutor(), options={"repair": True, "workers": 1},
               echo=lines.append)
    text = "\n".join(lines)
    print(text)
    assert f"shipped demo Synchformer {DEMO_SYNCHFORMER.name}" in text
    rows = read_rows(tmp_path / "out", "selected")
    # no clip is rejected by its rescore: each clip merged from repair candidates ships
    # repaired (the others are clips the sync gate passed)
    assert all(r["status"] == "ok" for r in rows), [(r["clip_id"], r["repair_note"]) for r in rows]
    repaired = [r for r in rows if r["repaired"]]
    truth = {s.id: s.audio_offset for s in specs}
    # every clip is repaired but those whose shifted audio would leave the file: the late
    # audio of a clip ending at the file's end
    refused = [r for r in rows if not r["repaired"]]
    assert [(r["source_id"].split("_")[0], r["start"], r["end"]) for r in refused] == \
        [("synth0030", 7.0, 10.0)], [(r["clip_id"], r["repair_note"]) for r in refused]
    assert "repair refused" in refused[0]["repair_note"] and "source's end" in refused[0]["repair_note"]
    assert truth["synth0030"] > 0 and refused[0]["end"] + truth["synth0030"] > 10.0
    assert len(repaired) == 5
    # every shifted video has a repaired clip; the shift undone is the truth's within the
    # classifier's grid and half a Synchformer class (its median over the clip's windows)
    assert {r["source_id"].split("_")[0] for r in repaired} == set(truth), text
    for r in repaired:
        assert r["av_shift_ms"] == pytest.approx(1000 * truth[r["source_id"].split("_")[0]], abs=100.0)
        assert r["repair_note"].endswith("rescore offset 0")
    rep = verify_run(tmp_path / "out")
    assert rep["ok"] and rep["summary"]["repaired_checked"] == len(repaired), rep["run_problems"]
    assert "repaired (rescore found offset 0)" in text
    assert f"== verify: OK; {len(repaired)} repaired" in text
