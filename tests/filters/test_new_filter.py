"""A new filter is one new module: a throwaway ``brightness`` filter written into a folder of
the ``filters`` package registers, is scored by the score stage, stored in the windows
table, gates the selection (``--set brightness.min=``), and shows in ``curate stats``,
with no other file touched."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from filters import registry

MODULE = textwrap.dedent('''
    """Mean brightness of a window's 10 uniform frames (a throwaway test filter)."""
    import numpy as np

    from filters.spec import Bound, FilterSpec


    def score(frames) -> float:
        return float(np.asarray(frames, dtype=np.float64).mean() / 255.0)


    def run(seg, alive):
        def one(k):
            seg.rows[k]["brightness"] = score(seg.frames(seg.uniform10(k)))
        return seg.per_window(alive, one)


    FILTER = FilterSpec(name="brightness", columns=("brightness",), run=run,
                        bounds=(Bound("brightness", "min", "min", 0.0),))
''')


@pytest.fixture
def brightness(add_filter_module):
    add_filter_module("brightness", MODULE)


def _scored_run(tmp_path):
    """A demo-recipe run scored through the stages, brightness gating (serial executor)."""
    from curate.config.recipes import get_recipe
    from curate.config.run_state import new_run
    from curate.execution.local import LocalExecutor
    from curate.build import stage_value
    from testkit.avmedia import demo_sources

    recipe = get_recipe("demo")
    assert "brightness" in recipe["filters"] and "brightness" in recipe["order"]
    recipe["stages"] = ["sources", "download", "split", "score", "select"]
    recipe["gate"] = ["pixel_diff", "amplitude", "brightness"]
    out, ex = tmp_path / "run", LocalExecutor()
    run = new_run(out, recipe, {"allow_random_weights": True})
    stage_value("sources", out, run, sources=demo_sources(tmp_path / "corpus", n_videos=2, seed=3))
    stage_value("download", out, run, ex)
    stage_value("split", out, run, ex)
    return out, run, stage_value("score", out, run, ex)


def _passes_cheap(r) -> bool:
    """pixel_diff and amplitude at the demo's thresholds, written out."""
    return (r["pixel_diff"] is not None and 0.01 <= r["pixel_diff"] <= 0.15
            and r["amplitude"] is not None and r["amplitude"] >= 0.03)


def test_a_filter_module_alone_registers_scores_stores_selects_and_shows_in_stats(brightness, tmp_path):
    from curate.config.thresholds import parse_overrides
    from curate.reports.stats import collect, format_text
    from curate.build import stage_value
    from manifests import schemas

    # registered: columns, note, default threshold, cascade place, --set name
    assert "brightness" in registry.FILTERS and "brightness" in schemas.WINDOWS.names
    assert "brightness_note" in schemas.WINDOWS.names and "brightness" in schemas.CLIPS.names
    assert registry.DEFAULT_THRESHOLDS["brightness"] == {"min": 0.0}
    assert registry.DEFAULT_ORDER.index("brightness") < registry.DEFAULT_ORDER.index("clip_diff")
    assert parse_overrides(["brightness.min=0.4"])["brightness"] == {"min": 0.4}
    out, run, table = _scored_run(tmp_path)

    # scored and stored: every ok window that reached it has a brightness in (0, 1)
    rows = [r for r in schemas.read_rows(out, "windows") if r["status"] == "ok"]
    scored = [r["brightness"] for r in rows if r["brightness"] is not None]
    assert table.num_rows == len(schemas.read_rows(out, "windows")) and len(scored) >= 4
    assert all(0.0 < b < 1.0 for b in scored) and len(set(scored)) > 1

    # selects: a threshold between the scores rejects the darker windows, by brightness
    cut = float(np.median(scored))
    stage_value("select", out, run, overrides=[f"brightness.min={cut}"])
    reasons = {d["window_id"]: d["reason"] for d in schemas.read_rows(out, "decisions")}
    dark = [r["window_id"] for r in rows if _passes_cheap(r) and r["brightness"] is not None
            and r["brightness"] < cut]
    assert dark and all(reasons[w] == "brightness" for w in dark)
    assert all(reasons[r["window_id"]] != "brightness" for r in rows
               if r["brightness"] is not None and r["brightness"] >= cut)

    # shows in stats: its funnel step, counted here from the stored scores
    passed = [r for r in rows if _passes_cheap(r) and r["brightness"] is not None and r["brightness"] >= cut]
    st = collect(out)
    assert {s["stage"]: s["count"] for s in st["funnel"]}["after brightness"] == len(passed)
    assert "after brightness" in format_text(st)


def test_every_declared_model_has_a_weights_option_reachable_from_the_cli():
    from curate.config.models import parse_weights, weight_options
    assert weight_options() == {"clip": "clip_checkpoint", "imagebind": "imagebind_checkpoint",
                                "sync": "sync_checkpoint", "silero": "speech_checkpoint"}
    assert parse_weights(["sync=/w/s.pt", "clip=/w/c.pt"]) == {"sync_checkpoint": "/w/s.pt",
                                                              "clip_checkpoint": "/w/c.pt"}
    for bad in ("sync", "bogus=/w.pt", "sync="):
        with pytest.raises(ValueError, match="--weights"):
            parse_weights([bad])
