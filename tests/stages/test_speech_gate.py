"""The audio's content through a whole run (issue 26): generated videos with espeak-ng speech
mixed in at several levels, against tones, noise, clicks and silence; the real Silero weights.

A custom recipe gating on ``speech.max`` drops exactly the speech windows; the paper's
recipes would record the same scores without gating; ``select --set speech.max=...``
re-selects from the stored scores (no model, no rescoring); the weight file is opened once
in the driver (the check before any stage) and once per scoring worker, not per segment;
``curate stats`` and the report show the scores."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from curate.build import build
from curate.execution.local import LocalExecutor
from curate.reports.stats import collect, format_text, write_report
from manifests.schemas import read_rows
from tests.avmedia import audio_kinds, mux_audio

SPEECH = ("speech_loud", "speech_quiet", "speech_over_tone", "speech_over_noise")
#: the cheap filters and the two of issue 26 (no random CLIP / ImageBind / sync to load)
RECIPE = {"base": "demo", "stages": ["sources", "download", "split", "score", "select"],
          "filters": ["pixel_diff", "amplitude", "audio_quality", "speech"], "gate": ["speech"],
          "allow_random_weights": False, "thresholds": {"speech": {"max": 0.2}},
          "select": {"per_class": None, "test_per_class": None}}


class Counted(LocalExecutor):
    def __init__(self):
        super().__init__()
        self.ran: Counter = Counter()

    def run(self, spec, items):
        self.ran[spec.name] += len(items)
        return super().run(spec, items)


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory):
    """One 6-s video per kind (class = kind), built with the custom recipe; the opens of
    the speech weight file counted."""
    import safetensors.torch as st_torch

    from filters.silero_model import packaged_weights

    root = tmp_path_factory.mktemp("speech_run")
    lines = ["id,path,start,end,label,split"]
    for i, (kind, audio) in enumerate(audio_kinds(48000).items()):
        path = mux_audio(root / f"v{i}.mp4", audio, 48000)
        lines.append(f"v{i},{path},0,6,{kind.replace('_', ' ')},train")
    (root / "sources.csv").write_text("\n".join(lines) + "\n")
    (root / "recipe.json").write_text(json.dumps(RECIPE))
    opens, real = [], st_torch.load_file
    weights = str(packaged_weights())

    def counting(path, *a, **kw):
        opens.append(str(path))
        return real(path, *a, **kw)
    from curate.config import models
    mp = pytest.MonkeyPatch()
    mp.setattr(st_torch, "load_file", counting)
    # the driver checks each file version once per process: an earlier test in this process
    # may have checked the same packaged file, so this build starts with none checked
    mp.setattr(models, "_CHECKED", set())
    ex = Counted()
    try:
        build("custom", root / "out", ex, sources=root / "sources.csv", config=root / "recipe.json",
              options={}, echo=lambda s: None)
    finally:
        mp.undo()
    return {"out": root / "out", "opens": [p for p in opens if p == weights], "ran": ex.ran}


def _by_class(out) -> dict[str, list[dict]]:
    dec = {d["window_id"]: d for d in read_rows(out, "decisions")}
    by: dict[str, list[dict]] = {}
    for w in read_rows(out, "windows"):
        by.setdefault(w["class_name"], []).append({**w, **dec[w["window_id"]]})
    return by


def test_gating_on_speech_drops_the_espeak_windows_and_nothing_else(speech_run):
    by = _by_class(speech_run["out"])
    assert len(by) == 8 and all(len(ws) == 7 for ws in by.values())       # 3-s windows of 6 s
    for cls, ws in by.items():
        assert all(w["status"] == "ok" and w["speech"] is not None for w in ws), cls
        if cls in SPEECH:
            assert all(w["speech"] > 0.5 and not w["keep"] and w["reason"] == "speech" for w in ws), cls
        else:
            assert all(w["speech"] < 0.1 and w["keep"] for w in ws), cls
    # the signal scores are there too, from the 48-kHz native audio
    silence = {w["silence"] for w in by["silence"]}
    noise = [w["bandwidth_hz"] for w in by["noise"]]
    assert silence == {1.0} and min(noise) > 20000
    # merged clips carry the mean and the max of the new scores
    clips = [c for c in read_rows(speech_run["out"], "clips") if c["status"] == "ok"]
    assert clips and all(c["speech_max"] is not None and c["speech_max"] >= c["speech"] for c in clips)


def test_the_weight_file_is_opened_once_per_worker_not_per_segment(speech_run):
    # the driver's check before the stages, then the one local scoring worker; 8 segments
    assert speech_run["ran"]["score"] == 8
    assert len(speech_run["opens"]) == 2


def test_select_with_another_speech_threshold_reselects_without_a_model(speech_run, monkeypatch):
    from curate.config.run_state import load_run
    from curate.build import stage_value
    from filters import silero_model, speech
    from manifests.schemas import manifest_path

    def no_model(*a, **kw):
        raise AssertionError("select touched the speech model")
    monkeypatch.setattr(silero_model, "load_silero", no_model)
    monkeypatch.setattr(speech.SpeechScorer, "speech_probs", no_model)
    out = speech_run["out"]
    windows = manifest_path(out, "windows").read_bytes()
    try:
        # audio_quality is recorded, not gating, in this recipe: its threshold changes
        # nothing, and select says so
        summary = stage_value("select", out, load_run(out), overrides=["speech.max=1.0",
                                                               "audio_quality.silence_max=0.1"])
        assert all(d["keep"] for d in read_rows(out, "decisions"))
        assert len(summary["inert"]) == 1 and "'audio_quality' does not gate" in summary["inert"][0]
        stage_value("select", out, load_run(out), overrides=["speech.max=0.2"])
        kept = {w["class_name"] for ws in _by_class(out).values() for w in ws if w["keep"]}
        assert kept == {"tone", "noise", "clicks", "silence"}
    finally:
        stage_value("select", out, load_run(out), overrides=None)
    assert manifest_path(out, "windows").read_bytes() == windows          # nothing rescored


def test_stats_and_report_show_the_scores_and_the_speech_share(speech_run, tmp_path):
    st = collect(speech_run["out"])
    assert {"speech", "speech_run_s", "silence", "bandwidth_hz", "clipping", "fake_stereo"} <= set(st["scores"])
    share = {c: r["share"] for c, r in st["speech_by_class"]["classes"].items()}
    assert share == {**{k: 1.0 for k in SPEECH},                 # class names in folder form
                     "tone": 0.0, "noise": 0.0, "clicks": 0.0, "silence": 0.0}
    assert st["speech_by_class"]["threshold"] == 0.2              # the recipe's speech.max
    text = format_text(st)
    assert "windows with speech (speech > 0.2)" in text and "bandwidth_hz" in text
    html = write_report(speech_run["out"], tmp_path / "r.html").read_text()
    assert 'data-column="speech"' in html and "Windows with speech" in html
    # the licence the scores depend on: recorded in run.json from the weights table, shown
    run = json.loads((speech_run["out"] / "run.json").read_text())
    assert run["weights"]["speech"]["licence"].startswith("MIT")
    assert run["weights"]["speech"]["source"] == "package: silero-vad"
    assert st["licences"] == {"speech": run["weights"]["speech"]["licence"]}
    assert "MIT (snakers4/silero-vad)" in html
    assert np.isclose(st["scores"]["silence"]["max"], 1.0)
