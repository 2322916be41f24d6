"""Every stage is one declared object (a ``Stage`` class per module of ``curate/stages/``),
run by name from one list (``curate.stages``) through one loop (``curate.build.run_stage``)
that hands it the typed ``Run`` and alone records what it returns in run.json."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from curate.config.recipes import get_recipe, recipe_names
from curate.config.run import Run, resolve
from curate.stagekit.declare import Context, Outputs, Stage, Work
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
    ctx = Context("unused-out", resolve(run))
    specs = {s.name: s.spec(ctx) for s in STAGES}
    specs = {k: v for k, v in specs.items() if v is not None}
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
    """curate/stages/ holds stages only (what they share is curate/stagekit/): each module's
    ``STAGE`` is an instance of a ``Stage`` class defined there, and in the list."""
    import importlib

    import curate.stages
    folder = Path(curate.stages.__file__).parent
    names = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    for name in names:
        mod = importlib.import_module(f"curate.stages.{name}")
        st = getattr(mod, "STAGE", None)
        assert st in STAGES, f"curate/stages/{name}.py is not a declared stage"
        assert isinstance(st, Stage) and type(st).__module__ == mod.__name__
    assert {type(s).__module__.rpartition(".")[2] for s in STAGES} == set(names)
    assert len({type(s) for s in STAGES}) == len(STAGES)


# ----------------------------------------------------------------------------- the run, passed down

def _writes_run(tree: ast.AST) -> list[str]:
    """``save_run`` / ``record_run`` calls, and assignments into a subscript or attribute of a
    name ``run`` (``run["x"] = ...``, ``run["options"]["x"] = ...``, ``run.setdefault``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in ("save_run", "record_run", "write_run"):
                found.append(f"{name}() line {node.lineno}")
            if isinstance(f, ast.Attribute) and f.attr in ("setdefault", "update", "pop") \
                    and _root(f.value) == "run":
                found.append(f"run...{f.attr}() line {node.lineno}")
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for t in targets:
            if isinstance(t, (ast.Subscript, ast.Attribute)) and _root(t) == "run":
                found.append(f"run[...] = line {node.lineno}")
    return found


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Subscript, ast.Attribute, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def test_no_stage_module_writes_the_run():
    """Stages return their outputs; the build's loop alone records them in run.json."""
    import curate.stages
    folder = Path(curate.stages.__file__).parent
    bad = {p.name: w for p in sorted(folder.glob("*.py")) if (w := _writes_run(ast.parse(p.read_text())))}
    assert not bad, bad


def test_the_static_check_sees_a_run_write():
    src = ("def f(out, run):\n    run['options']['x'] = 1\n    save_run(out, run)\n"
           "    run.setdefault('a', {})\n")
    assert len(_writes_run(ast.parse(src))) == 3


class _Probe(Stage):
    """A stage that records what it receives and asks for one run.json entry."""
    name = "probe"

    def __init__(self, seen: list):
        self.seen = seen

    def configure(self, args):
        return {"probe_arg": args.get("x")}

    def spec(self, ctx):
        from curate.execution.spec import StageSpec
        return StageSpec("probe", lambda: (lambda item: {"rows": [{"key": item["key"], "n": item["n"] * 2}]}),
                         lambda item, err: {"rows": []})

    def work(self, ctx, spec):
        self.seen.append(("work", ctx.run))
        return Work([{"key": f"k{i}", "n": i, "inputs": {"n": i}} for i in range(3)], record={"before": 1})

    def finish(self, ctx, work, result):
        self.seen.append(("finish", ctx.run, sorted(r["n"] for r in result.outputs["rows"])))
        return Outputs("value", record={"after": ctx.run.as_dict().get("before")})


def test_the_loop_hands_the_run_and_records_what_the_stage_returns(tmp_path):
    from curate.build import stage_value
    from curate.config.run_state import load_run, new_run
    from curate.execution.local import LocalExecutor

    run = new_run(tmp_path, get_recipe("demo"), {})
    seen: list = []
    assert stage_value(_Probe(seen), tmp_path, run, LocalExecutor(), x=7) == "value"
    (w, run_w), (f, run_f, ns) = seen
    assert isinstance(run_w, Run) and isinstance(run_f, Run)
    assert run_w.as_dict()["probe_arg"] == 7            # configure: recorded before resolving
    assert ns == [0, 2, 4]                               # the items ran through the executor
    on_disk = load_run(tmp_path)
    assert (on_disk["probe_arg"], on_disk["before"], on_disk["after"]) == (7, 1, 1)
    assert run["after"] == 1
    with pytest.raises(TypeError):
        run_f.recipe["name"] = "x"                       # read-only


def test_the_build_runs_every_listed_stage_through_the_one_loop(tmp_path, monkeypatch):
    """``run_stages`` runs each stage it is given, in order, through ``run_stage``, each
    with the ``Run`` of the current run dict; the weights are checked once, before the
    first stage that scores (none here: the check is not called)."""
    import curate.build as build
    from curate.config.run_state import new_run
    from curate.execution.local import LocalExecutor

    run = new_run(tmp_path, get_recipe("demo"), {})
    calls: list = []
    real = build.run_stage
    monkeypatch.setattr(build, "run_stage", lambda st, r, ctx: calls.append((st.name, ctx.run)) or real(st, r, ctx))
    monkeypatch.setattr(build, "check_run_weights", lambda *a: calls.append("weights"))
    seen: list = []
    outs = build.run_stages(tmp_path, run, LocalExecutor(), [_Probe(seen), _Probe(seen)],
                            echo=lambda _l: None, args={"x": 1})
    assert [c[0] for c in calls] == ["probe", "probe"] and all(isinstance(c[1], Run) for c in calls)
    assert [o.value for o in outs] == ["value", "value"]
    assert json.loads((tmp_path / "run.json").read_text())["after"] == 1


def test_weights_are_checked_once_before_scoring_and_after_training():
    from curate.build import weights_due
    by = {s.name: s for s in STAGES}
    demo = [by[n] for n in ("split", "train-sync", "score", "select")]
    assert not any(weights_due(demo[i:]) for i in range(2)) and weights_due(demo[2:])
    assert weights_due([by[n] for n in ("sources", "download", "score")])
    assert not weights_due([by[n] for n in ("sources", "download", "shard")])
