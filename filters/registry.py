"""The filters, found from their declarations, and the tables derived from them.

A filter is a module of the ``filters`` package that assigns ``FILTER = FilterSpec(...)`` at
module level (``filters/spec.py`` says what it declares). ``specs()`` finds those modules by
reading each module's syntax tree (the other modules of the package, which hold model code,
are never imported here), imports them and returns their declarations in schema order: the
five filters of the first windows schema in their historical order, then any other by name.

Derived here, read by everything else (module attributes, computed from the current
declarations): ``FILTERS`` (schema order), ``SCORE_COLUMNS``, ``ALL_SCORES``,
``NOTE_COLUMNS``, ``DEFAULT_THRESHOLDS``, ``BOUNDS`` (column, threshold key, "min" | "max"),
``MODEL_FILTERS`` (filter -> model name), ``DEFAULT_ORDER`` (= ``ORDER``: by ``cost``, the
cheapest per window first). ``curate select`` uses this module, so filter modules keep their
heavy imports inside functions: changing a threshold and re-selecting never touches torch.
"""
from __future__ import annotations

import ast
import copy
import importlib
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from filters.spec import FilterSpec

#: the windows schema's filter order before the ``order`` recipe option existed: runs whose
#: run.json has no ``order`` wrote their skip notes in this order, and their columns lie so
LEGACY_ORDER: tuple[str, ...] = ("pixel_diff", "amplitude", "clip_diff", "imagebind", "sync")

SKIP_REJECTED = "skipped: rejected by "
SKIP_NO_MODEL = "skipped: no {} model"

_SPECS: dict[str, FilterSpec] | None = None


def _declares_filter(path: Path) -> bool:
    """True when the module assigns ``FILTER`` at module level."""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return False
    return any(isinstance(node, (ast.Assign, ast.AnnAssign))
               and any(isinstance(t, ast.Name) and t.id == "FILTER"
                       for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
               for node in tree.body)


def _find() -> dict[str, FilterSpec]:
    import filters
    found: dict[str, FilterSpec] = {}
    for folder in list(filters.__path__):
        for path in sorted(Path(folder).glob("*.py")):
            if path.stem.startswith("_") or not _declares_filter(path):
                continue
            spec = importlib.import_module(f"filters.{path.stem}").FILTER
            if not isinstance(spec, FilterSpec):
                raise TypeError(f"{path}: FILTER is not a filters.spec.FilterSpec")
            if spec.name in found:
                raise ValueError(f"filter {spec.name!r} is declared twice ({path})")
            found[spec.name] = spec
    rank = {n: i for i, n in enumerate(LEGACY_ORDER)}
    return {n: found[n] for n in sorted(found, key=lambda n: (rank.get(n, len(rank)), n))}


def specs() -> dict[str, FilterSpec]:
    """name -> declaration, in schema order (found once per process; ``refresh`` forgets)."""
    global _SPECS
    if _SPECS is None:
        _SPECS = _find()
    return _SPECS


def refresh() -> None:
    """Find the filters again (a test that adds a filter module)."""
    global _SPECS
    _SPECS = None


def spec(name: str) -> FilterSpec:
    try:
        return specs()[name]
    except KeyError:
        raise ValueError(f"unknown filter {name!r}; filters: {list(specs())}") from None


def _default_order() -> tuple[str, ...]:
    names = list(specs())
    return tuple(sorted(names, key=lambda n: (specs()[n].cost, names.index(n))))


_DERIVED = {
    "FILTERS": lambda: tuple(specs()),
    "SCORE_COLUMNS": lambda: {n: s.columns for n, s in specs().items()},
    "ALL_SCORES": lambda: tuple(c for s in specs().values() for c in s.columns),
    # the clips table's maxima over windows (``FilterSpec.clip_max``): column -> its window column
    "CLIP_MAX_COLUMNS": lambda: {f"{c}_max": c for s in specs().values() if s.clip_max for c in s.columns},
    # clip columns with their own reduction (``FilterSpec.clip_columns``): name -> ClipColumn
    "CLIP_COLUMNS": lambda: {c.name: c for s in specs().values() for c in s.clip_columns},
    # of those, the ones that are not window columns too (the clips table adds them)
    "CLIP_ONLY_COLUMNS": lambda: tuple(c.name for s in specs().values() for c in s.clip_columns
                                       if c.name not in s.columns),
    # the clip columns the selected manifest and the sample JSON's sync_certificate carry
    "CERT_CLIP_COLUMNS": lambda: tuple(c.name for s in specs().values() for c in s.clip_columns
                                       if c.certificate),
    "NOTE_COLUMNS": lambda: tuple(s.note_column for s in specs().values()),
    "DEFAULT_THRESHOLDS": lambda: {n: s.thresholds for n, s in specs().items()},
    "BOUNDS": lambda: {n: tuple((b.column, b.key, b.kind) for b in s.bounds) for n, s in specs().items()},
    "MODEL_FILTERS": lambda: {n: s.model.name for n, s in specs().items() if s.model is not None},
    # filters whose scores read the Kaldi fbank (decoding.mel): its FBANK_ID is in their fingerprint
    "FBANK_FILTERS": lambda: tuple(n for n, s in specs().items() if s.reads_fbank),
    "DEFAULT_ORDER": _default_order,
    "ORDER": _default_order,
}


def __getattr__(name: str) -> Any:
    if name in _DERIVED:
        return _DERIVED[name]()
    raise AttributeError(f"module 'filters.registry' has no attribute {name!r}")


def default_gate() -> tuple[str, ...]:
    """The filters that gate unless a recipe says otherwise (``FilterSpec.gates``): what a
    ``gate`` of None means everywhere (scoring, select, stats)."""
    return tuple(n for n, s in specs().items() if s.gates)


def cascade_order(order: Sequence[str] | None = None) -> tuple[str, ...]:
    """``order`` checked (known filters, each once; None: ``DEFAULT_ORDER``). Filters it
    does not name (declared after the run was recorded) follow, in default order."""
    if order is None:
        return _default_order()
    out = tuple(order)
    names = list(specs())
    if len(set(out)) != len(out) or set(out) - set(names):
        raise ValueError(f"cascade order {list(out)} (recipe option 'order') must list filters of "
                         f"{names}, each once")
    return out + tuple(n for n in _default_order() if n not in out)


def default_thresholds() -> dict[str, dict[str, float]]:
    return copy.deepcopy(_DERIVED["DEFAULT_THRESHOLDS"]())


def columns(name: str) -> tuple[str, ...]:
    return spec(name).columns


def note_column(name: str) -> str:
    return f"{name}_note"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def passes(name: str, row: Mapping[str, Any], thresholds: Mapping[str, Mapping[str, float]]) -> bool | None:
    """True / False when the filter's scores in ``row`` pass / fail; None when a score it
    decides by (``FilterSpec.decided_by``) is missing."""
    s = spec(name)
    thr = thresholds.get(name, {})
    values = {c: row.get(c) for c in s.decided_by}
    if any(_missing(v) for v in values.values()):
        return None
    for b in s.bounds:
        bound = thr.get(b.key)
        if bound is None:
            continue
        v = values[b.column]
        if (b.kind == "min" and v < bound) or (b.kind == "max" and v > bound):
            return False
    return True


def check(row: Mapping[str, Any], thresholds: Mapping[str, Mapping[str, float]],
          gate: set[str] | frozenset[str] | None = None,
          order: Sequence[str] | None = None) -> tuple[bool, str | None]:
    """(keep, first failing gating filter in cascade ``order`` | None). A missing score fails
    its filter."""
    gate = set(default_gate()) if gate is None else set(gate)
    for name in cascade_order(order):
        if name in gate and not passes(name, row, thresholds):
            return False, name
    return True, None


def is_cascade_skip(note: str | None) -> bool:
    return bool(note) and note.startswith(SKIP_REJECTED)
