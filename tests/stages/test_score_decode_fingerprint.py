"""The grid decoder's version is part of the score fingerprint: a decode that changes decoded
values (``decoding.media.GRID_DECODE``) rescores old runs once; the same version keeps them."""
from curate.config.recipes import get_recipe
from curate.config.run import resolve
from curate.config.run_state import new_run
from curate.execution.checkpoints import item_fingerprint
from curate.stagekit import window_table as windows
from curate.stages.score import score_spec


def _fp(run) -> str:
    spec = score_spec(resolve(run))
    return item_fingerprint(spec, {"key": "s", "inputs": {"file": "f", "windows": []}})


def test_decoder_version_enters_the_score_fingerprint(tmp_path, monkeypatch):
    run = new_run(tmp_path, get_recipe("demo"), {"allow_random_weights": True})
    first = _fp(run)
    assert _fp(run) == first
    assert windows.score_params(run, [])["decode"] == windows.GRID_DECODE
    monkeypatch.setattr(windows, "GRID_DECODE", "grid-next")
    assert _fp(run) != first
