"""Docstrings and comments name files and modules that exist: a path of this repository
(``curate/ops/fetch/segment.py``) or a dotted module (``curate.ops.fetch.read_segment``) mentioned in
a docstring or a comment of the project's Python files is there."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPS = ("curate", "filters", "manifests", "decoding", "sync_classifier", "shards", "tests",
        "benchmarks", "testkit", "docs", "scripts")
PATH = re.compile(r"(?<![\w/.-])((?:%s)/(?:[\w-]+/)*[\w-]+\.(?:py|md|sh|json|npz|pt))\b" % "|".join(TOPS))
DOTTED = re.compile(r"``((?:curate|filters|manifests|decoding|sync_classifier|shards)(?:\.[A-Za-z_]\w*)+)``")
#: files named as they were at an older commit, on purpose (the benchmark reads them with git show)
HISTORICAL = {("benchmarks/bench_score_memory.py", "curate/pipeline.py"),
              ("benchmarks/bench_tables.py", "curate/stats.py")}
#: files of the released ASVA code (lzhangbj/ASVA), not of this repository
RELEASED = {"scripts/avsync_eval.py"}
#: a dotted name that is a file name (``sync_classifier.pt``), not a module
FILE_SUFFIXES = ("pt", "py", "json", "jsonl", "npz", "parquet", "tar", "txt")


def _texts(path: Path) -> str:
    src = path.read_text()
    tree = ast.parse(src)
    docs = [ast.get_docstring(n, clean=False) or "" for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return "\n".join(docs + [ln for ln in src.splitlines() if ln.strip().startswith("#")])


def _module_exists(dotted: str) -> bool:
    """Some prefix of ``dotted`` of two or more parts is a module or package of the repo."""
    parts = dotted.split(".")
    for i in range(len(parts), 1, -1):
        p = ROOT.joinpath(*parts[:i])
        if p.with_suffix(".py").is_file() or (p / "__init__.py").is_file():
            return True
    return False


def test_docstrings_and_comments_name_files_that_exist():
    files = [p for top in TOPS if (ROOT / top).is_dir() for p in sorted((ROOT / top).rglob("*.py"))]
    assert len(files) > 100
    missing = []
    for p in files:
        rel = str(p.relative_to(ROOT))
        text = _texts(p)
        missing += [f"{rel}: {m}" for m in PATH.findall(text)
                    if not (ROOT / m).exists() and (rel, m) not in HISTORICAL and m not in RELEASED]
        missing += [f"{rel}: {m}" for m in DOTTED.findall(text)
                    if not _module_exists(m) and m.rsplit(".", 1)[1] not in FILE_SUFFIXES]
    assert not missing, "\n".join(missing)
