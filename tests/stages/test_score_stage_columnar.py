"""The score stage with columnar items: a looser threshold's rescore (``curate score``)
scores exactly the windows the cascade skipped, gives them the scores a run with the looser
threshold from the start gives, and a rerun of either does no work."""

import pytest

from curate.config.run_state import new_run
from curate.build import stage_value
from curate.config.recipes import get_recipe
from curate.execution.local import LocalExecutor
from manifests.schemas import ALL_SCORES, NOTE_COLUMNS
from testkit.avmedia import demo_sources
from tests.stages.test_engine_stages import Recording


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return demo_sources(root, n_videos=3, seed=5)


def _run(out, src, ex, thresholds):
    r = get_recipe("demo")
    r["stages"] = ["sources", "download", "split", "score", "select"]
    r["thresholds"] = thresholds
    run = new_run(out, r, {"allow_random_weights": True})
    stage_value("sources", out, run, sources=src)
    stage_value("download", out, run, ex)
    stage_value("split", out, run, ex)
    table = stage_value("score", out, run, ex)
    return run, {w["window_id"]: w for w in table.to_pylist()}


def test_rescore_scores_exactly_the_skipped_windows_as_a_loose_run_does(sources, tmp_path):
    ex = Recording()
    # pixel_diff.max = 0: every window stops at the first filter
    run, tight = _run(tmp_path / "a", sources, ex, {"pixel_diff": {"max": 0.0}})
    assert tight and all(w["amplitude_note"] == "skipped: rejected by pixel_diff"
                         for w in tight.values() if w["status"] == "ok")
    _, loose = _run(tmp_path / "b", sources, LocalExecutor(), {})
    skipped_in_loose = sum(w["amplitude"] is not None for w in loose.values())
    assert skipped_in_loose > 0            # the default threshold lets windows through

    run["selection_overrides"] = ["pixel_diff.max=0.15"]     # the default again
    ex = Recording()   # a new `curate score` (LocalExecutor keeps a stage's function)
    table = stage_value("score", tmp_path / "a", run, ex, rescore=True)
    assert ex.ran["score"] and all("@" in k for k in ex.ran["score"])   # rescore items only
    rescored = {w["window_id"]: w for w in table.to_pylist()}
    assert rescored.keys() == loose.keys()
    for wid, w in rescored.items():
        for c in (*NOTE_COLUMNS, *ALL_SCORES, "status", "error"):
            assert w[c] == loose[wid][c], (wid, c)
    # finished: neither a score nor a rescore does any work, the table stays the same
    ex.ran.clear()
    assert stage_value("score", tmp_path / "a", run, ex, rescore=True).equals(table)
    assert stage_value("score", tmp_path / "a", run, ex).equals(table)
    assert ex.ran == {}
