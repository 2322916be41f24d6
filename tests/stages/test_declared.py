"""Every stage is one declared object, run by name from one list (``curate.stages``)."""
from __future__ import annotations

import pytest

from curate.config.recipes import get_recipe, recipe_names
from curate.stages import STAGES, stage


def test_every_recipe_stage_is_declared_once_in_pipeline_order():
    names = [s.name for s in STAGES]
    assert len(names) == len(set(names))
    for recipe in (r for r in recipe_names() if r != "custom"):   # custom: a base recipe's
        listed = get_recipe(recipe)["stages"]
        assert [stage(n).name for n in listed] == listed
        assert listed == sorted(listed, key=names.index), recipe


def test_an_unknown_stage_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        stage("nope")


def test_item_stages_declare_function_failure_rows_and_resources():
    run = {"recipe": get_recipe("demo"), "options": {"allow_random_weights": True}}
    specs = {s.name: s.spec(run) for s in STAGES if s.spec is not None}
    assert set(specs) == {"download", "split", "score", "certify", "shard"}
    assert specs["shard"].name == "cut"          # the checkpoint folder keeps its name
    assert specs["score"].stateful and specs["score"].prepare is not None
    assert specs["certify"].stateful            # Synchformer loads once per actor
    assert not specs["download"].stateful and specs["download"].concurrency >= 1
    failed = {
        "download": specs["download"].on_error({"key": "s1"}, "timeout: no result after 5 s")["downloads"],
        "split": specs["split"].on_error({"key": "s1"}, "boom")["shots"],
        "score": specs["score"].on_error({"key": "s1", "inputs": {"windows": [["w1", "sh1", 0.0, 3.0]]}},
                                         "boom")["windows"],
        "shard": specs["shard"].on_error({"key": "k1"}, "boom")["cuts"],
        "certify": specs["certify"].on_error({"key": "c1"}, "boom")["certs"],
    }
    assert all(rows and all(r["status"] == "failed" for r in rows) for rows in failed.values())
    assert failed["download"][0]["reason"] == "timeout"
    assert failed["score"][0]["window_id"] == "w1" and failed["score"][0]["error"] == "score: boom"


def test_every_module_of_stages_is_a_declared_stage():
    """curate/stages/ holds stages only (what they share is curate/stagekit/); reproduce's
    two stage functions are the one exception, run by ``curate.build.reproduce``."""
    import importlib
    from pathlib import Path

    import curate.stages
    folder = Path(curate.stages.__file__).parent
    names = sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "reproduce"))
    declared = {s.name.replace("-", "_") for s in STAGES}
    for name in names:
        mod = importlib.import_module(f"curate.stages.{name}")
        assert getattr(mod, "STAGE", None) in STAGES, f"curate/stages/{name}.py is not a declared stage"
    assert set(names) <= declared | {"shard"}
