"""What a filter declares, once, in its own module: ``FILTER = FilterSpec(...)``.

A filter is one module of ``filters/`` with a module-level ``FILTER`` (``filters.registry``
finds it by that assignment; nothing else lists filters). Everything else is derived from
the declarations: the windows and clips columns (``manifests.schemas``), the default
thresholds and the ``--set FILTER.KEY=VALUE`` names (``curate.config.thresholds``), the
keep rule of select and stats (``registry.passes``, ``curate.selection.rules``), the report's
threshold lines, the default cascade order (by ``cost``), the models a run loads and their
weight options (``curate.config.models``) and therefore the score fingerprints.

A minimal filter (no model)::

    from filters.spec import Bound, FilterSpec

    def score(frames) -> float: ...               # the pure math, tested on its own

    def run(seg, alive):                           # the windows ``alive`` of one segment
        def one(k):
            seg.rows[k]["brightness"] = score(seg.frames(seg.uniform10(k)))
        return seg.per_window(alive, one)         # {k: error note} for the failed ones

    FILTER = FilterSpec(name="brightness", columns=("brightness",),
                        bounds=(Bound("brightness", "min", "min", 0.1),), run=run)

``run(seg, alive) -> {window index: error note}`` writes its columns into ``seg.rows[k]``
for each ``k`` of ``alive``; ``seg`` is a ``filters.segment.Segment`` (the decoded grid,
the window rows, sampling helpers, feature caches, the filter's model as
``seg.model(name)``). A model-backed filter declares ``model=ModelSpec(...)``: ``load``
builds its scorer once per scoring worker, ``weights_option`` names the run option (CLI
flag ``--<option with dashes>``) that points at its weights. Heavy imports (torch, model
code) go inside functions: ``curate select`` imports every filter module and must stay light.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

#: a bound's kind: the score must be >= ("min") or <= ("max") the threshold, inclusive
KINDS = ("min", "max")


@dataclass(frozen=True)
class Bound:
    """One inclusive bound: score column ``column`` against threshold ``key`` (the name
    ``--set FILTER.KEY=`` takes), ``kind`` "min" or "max"; ``default`` None: not set unless
    a recipe or ``--set`` sets it."""
    column: str
    key: str
    kind: str
    default: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"bound kind {self.kind!r} is not one of {KINDS}")


@dataclass(frozen=True)
class ClipColumn:
    """A merged clip's column reduced from one window column by a declared rule instead of the
    mean: ``reduce(values)`` takes the clip's non-null window values (float64, in start order)
    and returns a float. ``name`` may be the window column itself (its mean is then replaced)
    or a clip-only column. ``certificate``: the column also goes to the selected manifest and
    each sample's ``sync_certificate``."""
    name: str
    column: str
    reduce: Callable[[Any], float]
    certificate: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """The model a filter needs.

    ``load(weights, random, run_models, device, convention) -> scorer``: ``weights`` the
    resolved weights (a path or a name; None with ``random``), ``run_models`` the recipe's
    ``models`` block. ``default_weights(run_models) -> str | None``: weights used when the
    option is not given (CLIP's pretrained name). ``convention(weights, override) -> str |
    None``: the preprocessing convention the weights carry (read from the weight file;
    None when it cannot be read here), overridden by run option ``convention_option``.
    ``shipped``: the default weights come with an installed package (Silero VAD), so they
    are used even under ``--allow-random-weights`` (they are real, and need no download);
    ``default_weights`` returns None when the package is missing. (Licences live in the
    weights table, ``curate.config.weights``.)
    """
    name: str
    weights_option: str
    load: Callable[..., Any]
    default_weights: Callable[[Mapping[str, Any]], str | None] | None = None
    convention: Callable[[str | None, str | None], str | None] | None = None
    convention_option: str | None = None
    inspect: Callable[[str], Any] | None = None
    shipped: bool = False

    @property
    def flag(self) -> str:
        """The CLI flag of the weights option."""
        return "--" + self.weights_option.replace("_", "-")


@dataclass(frozen=True)
class FilterSpec:
    """One filter: its score columns, bounds (with defaults), scoring function, cascade
    cost and model. ``cost``: work per window (GFLOP at real model sizes; arithmetic filters
    0): the default cascade runs the cheapest first, ties in schema order. ``needs_audio``:
    a source without audio gets an error note instead of a score. ``reads_fbank``: its scores
    go through ``decoding.mel``'s Kaldi fbank (whose ``FBANK_ID`` then joins the score
    fingerprint: a change of its arithmetic rescores). ``gates``: gates in the
    base recipe (False: scored and stored, gating only where a recipe's ``gate`` names it).
    ``params``: declared constants of the scoring (frame sizes, floors), part of the score
    fingerprint, so changing one rescores. ``clip_max``: the merged clip also carries the
    maximum over its windows of each column (``<column>_max``), beside the mean.
    ``clip_columns``: clip columns reduced otherwise than by the mean (``ClipColumn``)."""
    name: str
    columns: tuple[str, ...]
    bounds: tuple[Bound, ...]
    run: Callable[..., dict[int, str]]
    cost: float = 0.0
    model: ModelSpec | None = None
    needs_audio: bool = False
    reads_fbank: bool = False
    gates: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)
    clip_max: bool = False
    clip_columns: tuple[ClipColumn, ...] = ()
    doc: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        unknown = {b.column for b in self.bounds} - set(self.columns)
        if unknown:
            raise ValueError(f"filter {self.name}: bounds on columns it does not declare: {sorted(unknown)}")
        unknown = {c.column for c in self.clip_columns} - set(self.columns)
        if unknown:
            raise ValueError(f"filter {self.name}: clip columns from columns it does not declare: {sorted(unknown)}")
        keys = [b.key for b in self.bounds]
        if len(set(keys)) != len(keys):
            raise ValueError(f"filter {self.name}: a threshold key is declared twice: {keys}")

    @property
    def thresholds(self) -> dict[str, float]:
        """The default thresholds, ``{key: value}`` (bounds without a default left out)."""
        return {b.key: b.default for b in self.bounds if b.default is not None}

    @property
    def decided_by(self) -> tuple[str, ...]:
        """The columns a keep decision reads: those with a bound (all, for a filter without
        bounds). A column without a bound only records (the sync classifier's offset), so a
        row without it still gets a decision."""
        bounded = {b.column for b in self.bounds}
        return tuple(c for c in self.columns if c in bounded) or self.columns

    @property
    def note_column(self) -> str:
        return f"{self.name}_note"
