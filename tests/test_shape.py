"""The project's shape rules that a walk of the source can check: no function over 50 lines
(the package, the benchmarks, testkit and the tests alike)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("curate", "filters", "manifests", "decoding", "sync_classifier", "shards", "benchmarks",
           "testkit", "tests", "scripts")
MAX_LINES = 50


def test_no_function_is_over_50_lines():
    long, seen = [], 0
    for folder in FOLDERS:
        for p in sorted((ROOT / folder).rglob("*.py")) if (ROOT / folder).is_dir() else []:
            for node in ast.walk(ast.parse(p.read_text(), str(p))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    seen += 1
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_LINES:
                        long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert seen > 1000
    assert not long, "\n".join(long)
