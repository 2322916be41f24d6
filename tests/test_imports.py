"""The package's import graph: no circle between modules, and Ray only in the Ray executor.

Every ``import`` and ``from ... import`` of every module of the project's packages counts,
at module level or inside a function (a function-level import is still an arrow between
the two modules; it only moves the failure to run time).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curate", "manifests", "decoding", "filters", "sync_classifier", "shards")
#: the Ray executor's package: the only modules that import Ray
RAY_PACKAGE = "curate.execution.ray"


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            parts = p.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = p
    return mods


def _imports(path: Path, me: str, mods: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(first-party modules imported, every top-level name imported) of one file."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found, tops = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                tops.add(a.name.split(".")[0])
                if a.name in mods:
                    found.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            tops.add(base.split(".")[0])
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in mods:          # ``from curate.ops import fetch``: the submodule
                    found.add(sub)
                elif base in mods:
                    found.add(base)
    found.discard(me)
    return found, tops


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    mods = _modules()
    graph, tops = {}, {}
    for m, p in mods.items():
        graph[m], tops[m] = _imports(p, m, mods)
    return graph, tops


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    graph, _ = _graph()
    assert len(graph) > 50            # the walk saw the packages
    cycles = _cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(
        " <-> ".join(c) + "  (" + "; ".join(f"{a}->{b}" for a in c for b in sorted(graph[a]) if b in c) + ")"
        for c in cycles)


def _in_ray_package(module: str) -> bool:
    return module == RAY_PACKAGE or module.startswith(RAY_PACKAGE + ".")


def test_only_the_ray_executor_imports_ray():
    _, tops = _graph()
    assert "ray" in tops[f"{RAY_PACKAGE}.executor"] and "ray" in tops[f"{RAY_PACKAGE}.worker"]
    others = sorted(m for m, t in tops.items() if "ray" in t and not _in_ray_package(m))
    assert not others, f"modules importing ray outside {RAY_PACKAGE}: {others}"


def test_the_ray_package_is_reached_only_by_choosing_it():
    """Nothing of the pipeline imports the Ray executor's package: a build reaches it
    through ``curate.execution.make.make_executor`` (the executor it asked for), so a stage,
    an op or the serial executor never depends on Ray."""
    graph, _ = _graph()
    users = sorted(m for m, ds in graph.items() if not _in_ray_package(m)
                   and any(_in_ray_package(d) for d in ds))
    assert users == ["curate.execution.make"], users


def test_executors_know_nothing_of_stages_or_work():
    """``curate/execution/`` runs items: it imports no op, stage, filter or selection rule
    (a download's rate limit and health gate wrap the download function instead)."""
    graph, _ = _graph()
    work = ("curate.ops", "curate.stages", "curate.stagekit", "curate.selection", "filters",
            "curate.config", "curate.reports")
    bad = sorted(f"{m} -> {d}" for m, ds in graph.items() if m.startswith("curate.execution")
                 for d in ds if d.startswith(work))
    assert not bad, bad


def test_stages_are_not_imported_by_what_they_use():
    """Arrows point from stages/ to stagekit/, ops/, selection/, execution/, config/ and the
    leaf packages, never back (what a stage shares with stagekit/ helpers lives in stagekit/)."""
    graph, _ = _graph()
    below = ("curate.ops", "curate.selection", "curate.execution", "curate.config", "curate.stagekit",
             "manifests", "decoding", "filters", "sync_classifier", "shards")
    back = sorted(f"{m} -> {d}" for m, ds in graph.items() if m.startswith(below)
                  for d in ds if d.startswith("curate.stages") or d in ("curate.build", "curate.cli"))
    assert not back, "imports back up into stages/build/cli:\n" + "\n".join(back)


def test_a_stage_imports_no_other_stage():
    """What two stages share (the shard stage's full-rendition step uses the download spec)
    lives in stagekit/, so each stage module stands alone."""
    graph, _ = _graph()
    stages = {m for m in graph if m.startswith("curate.stages.")}
    assert len(stages) > 8
    cross = sorted(f"{m} -> {d}" for m in stages for d in graph[m]
                   if d.startswith("curate.stages.") and d != m)
    assert not cross, cross


def test_nothing_outside_tests_imports_the_tests():
    """The package, the benchmarks and ``testkit`` (what tests and benchmarks share) never
    import ``tests``: the row-dict oracle of the selection rules (tests/selection/oracle.py)
    and the references stay test-only."""
    _, tops = _graph()
    assert not sorted(m for m, t in tops.items() if "tests" in t)
    others = sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "testkit").glob("*.py")])
    assert len(others) > 10
    importing = [str(p.relative_to(ROOT)) for p in others if "tests" in _imports(p, p.stem, {})[1]]
    assert not importing, importing


def test_config_does_not_import_ops():
    """What a run is configured by (curate/config/) reads declarations, never per-item work:
    building scorers needs ``filters.segment.Scorers``, not ``curate.ops.scoring``."""
    graph, _ = _graph()
    bad = sorted(f"{m} -> {d}" for m, ds in graph.items() if m.startswith("curate.config")
                 for d in ds if d.startswith("curate.ops"))
    assert not bad, bad


def test_ops_do_not_import_execution():
    """Per-item work (curate/ops/) knows nothing of workers: a download's gate is handed in
    (``curate.ops.health.Gate``), never looked up in the executor layer."""
    graph, _ = _graph()
    bad = sorted(f"{m} -> {d}" for m, ds in graph.items() if m.startswith("curate.ops")
                 for d in ds if d.startswith("curate.execution"))
    assert not bad, bad
