"""The score fingerprint of the audio filters names the fbank's arithmetic (decoding.mel
FBANK_ID): issue 25 changed the fbank's filter weights, and scores computed before must not
be taken as current."""
from curate.config.recipes import get_recipe
from curate.config.run_state import new_run
from curate.execution.checkpoints import fingerprint
from curate.stagekit import window_table as windows
from decoding.mel import FBANK_ID


def test_audio_filters_fingerprint_the_fbank(tmp_path, monkeypatch) -> None:
    run = new_run(tmp_path / "a", get_recipe("demo"), {"allow_random_weights": True})
    params = windows.score_params(run, ["sync"])
    assert params["fbank"] == FBANK_ID
    before = fingerprint({"params": params})
    monkeypatch.setattr(windows, "FBANK_ID", FBANK_ID + "-changed")
    assert fingerprint({"params": windows.score_params(run, ["sync"])}) != before

    recipe = get_recipe("demo")
    recipe["filters"] = ["pixel_diff", "amplitude", "clip_diff"]
    recipe["gate"] = ["pixel_diff", "amplitude"]
    video_only = new_run(tmp_path / "b", recipe, {"allow_random_weights": True})
    assert "fbank" not in windows.score_params(video_only, ["pixel_diff"])
