"""Recipes as data: which stages run and with which parameters, one place each.

A recipe is a plain dict (JSON-serialisable) so that a run records exactly what it used in
``<out>/run.json`` and a ``custom`` recipe is just a JSON file of overrides on a base recipe.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from curate.selection.repair import MIN_PROB as REPAIR_MIN_PROB, MIN_WINDOW_PROB
from manifests import bounded

WINDOW_STAGES = ["sources", "download", "split", "score", "select", "certify", "desync-gate", "shard"]

#: streaming-engine options (curate/execution/); none of them changes a result, so none is
#: part of a checkpoint fingerprint
ENGINE_DEFAULTS: dict[str, Any] = {
    "score_batch_size": 4,           # decoded segments per scoring-actor call
    "score_actors_per_gpu": 2,       # fractional num_gpus = 1 / this, on GPU clusters
    "max_tries": 2,                  # tries of an item whose worker died (signal, OOM kill)
    "timeout_s": {"download": 900.0, "split": 600.0, "score": 1800.0, "cut": 600.0},
    "download_workers": 16,          # downloads are I/O bound: apart from the CPU count
    "max_requests_per_s": None,      # global download start rate over all workers
    "flush_items": 64,               # checkpoint part every N finished items ...
    "flush_seconds": 5.0,            # ... or every T seconds
}

_BASE: dict[str, Any] = {
    "name": "base",
    "classes": None,                 # manifests.classes recipe name, or None for any label
    "source_format": "auto",         # vggsound | avsync | generic | auto
    "url_template": "https://www.youtube.com/watch?v={ytid}",
    "download": {"max_height": 720, "min_width": 0, "min_height": 0, "require_audio": True,
                 "retries": 3, "backoff": 1.0, "socket_timeout": 30.0, "rendition": "full"},
    "shots": {"threshold": 27.0, "min_shot_len": 0.5},
    "windows": {"length": 3.0, "stride": 0.5},
    "clip_mode": "windows",          # windows: score + merge | fixed: non-overlapping fixed clips
    "fixed_clip_length": 10.0,
    # every declared filter, those that gate, the cascade order: from the filters'
    # declarations (``_base``)
    "filters": None, "gate": None, "order": None,
    "thresholds": {},                # overrides of each filter's declared thresholds
    "merge": {"min_len": 2.0},
    # clip-level gate on Synchformer's DeSync (certify stage): None = off (the paper's recipes)
    "desync": {"max": None},
    # repair instead of drop (curate.selection.repair): a selected clip whose two models agree
    # on one constant, non-zero offset (Synchformer above min_prob, the paper's classifier's
    # windows above min_window_prob) is cut with its audio shifted back and ships only if
    # Synchformer's rescore finds offset 0. Off in the paper's recipes.
    "repair": {"enabled": False, "min_prob": REPAIR_MIN_PROB, "min_window_prob": MIN_WINDOW_PROB},
    "select": {"per_class": None, "test_per_class": None, "balanced_test": False, "seed": 0},
    "shards": {"max_count": 1000, "max_bytes": 1 << 30, "max_short_side": 720},
    "models": {"clip_model": "ViT-B-32", "clip_pretrained": "openai"},
    "allow_random_weights": False,
    "engine": ENGINE_DEFAULTS,
    "stages": WINDOW_STAGES,
}

RECIPES: dict[str, dict[str, Any]] = {
    # AVSync15 (seed 003 section 5.2): VGGSound rows of the 15 classes, every filter gating,
    # then 100 clips per class split 90/10.
    "avsync15": {
        "name": "avsync15", "classes": "avsync15", "source_format": "vggsound",
        # VGGSound scale: score on the smallest rendition >= 224 px, fetch the full one
        # (max_height) only for the sources of selected clips (shard stage)
        "download": {"rendition": "small"},
        "select": {"per_class": 100, "test_per_class": 10, "balanced_test": False, "seed": 0},
    },
    # VGGSS: the 149 classes of the preliminary curation, same filters, no balancing.
    "vggss": {"name": "vggss", "classes": "vggss", "source_format": "vggsound",
              "download": {"rendition": "small"}},
    # VGGSS with constant offsets repaired instead of dropped (needs --synchformer-checkpoint:
    # without a certificate nothing is repaired)
    "vggss-repaired": {"name": "vggss-repaired", "classes": "vggss", "source_format": "vggsound",
                       "download": {"rendition": "small"}, "repair": {"enabled": True}},
    # Landscape (seeds 004/001): high-resolution sources, non-overlapping 10-s clips, no
    # sync/alignment gating unless asked; TPoS balanced the test split per class (seed 000).
    "landscape": {
        "name": "landscape", "classes": "landscape", "source_format": "generic",
        "download": {"max_height": 2160, "min_width": 1280, "min_height": 720},
        "clip_mode": "fixed", "fixed_clip_length": 10.0,
        "filters": ["pixel_diff", "amplitude"], "gate": [],
        "select": {"per_class": None, "test_per_class": None, "balanced_test": True, "seed": 0},
        "shards": {"max_short_side": 1080},
        "stages": ["sources", "download", "select", "certify", "desync-gate", "shard"],
        # the released Landscapes folder: videos/{train,test}/<class>/ (curate export-folder)
        "export": {"layout": "split_class"},
    },
    # The offline demo: generated media served over loopback, small random models. Filters
    # whose model has random weights are scored but cannot gate (see curate stats).
    "demo": {
        "name": "demo", "classes": None, "source_format": "generic",
        "download": {"max_height": 480, "retries": 2, "backoff": 0.05, "socket_timeout": 10.0},
        "gate": ["pixel_diff", "amplitude", "sync"],
        "select": {"per_class": 4, "test_per_class": 1, "balanced_test": False, "seed": 0},
        "shards": {"max_count": 8, "max_bytes": 64 << 20, "max_short_side": 240},
        "allow_random_weights": True,
    },
}


def _base() -> dict[str, Any]:
    """The base recipe with every declared filter: scored (schema order), gating where the
    filter says so (``FilterSpec.gates``), in the default cascade order (cheapest per
    window first, ``filters.registry.DEFAULT_ORDER``; any permutation keeps the same windows,
    only the work and the skip notes differ)."""
    from filters import registry
    specs = registry.specs()
    base = copy.deepcopy(_BASE)
    base.update(filters=list(specs), gate=[n for n, s in specs.items() if s.gates],
                order=list(registry.DEFAULT_ORDER))
    return base


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def get_recipe(name: str, config: str | Path | None = None) -> dict[str, Any]:
    """The full parameter dict of a recipe; ``custom`` reads ``config`` (JSON overrides).

    A custom config names its base with ``"base": "avsync15"`` (default: the base recipe).
    """
    if name == "custom":
        if config is None:
            raise ValueError("recipe 'custom' needs --config FILE (JSON with 'base' and overrides)")
        over = bounded.read_json(config, "--config")
        if not isinstance(over, dict):
            raise ValueError(f"--config {config} is not a JSON object of recipe keys")
        base_name = over.pop("base", None)
        base = get_recipe(base_name) if base_name else _base()
        unknown = set(over) - set(_base())
        if unknown:
            raise ValueError(f"unknown recipe keys in {config}: {sorted(unknown)}")
        return _merge(base, {**over, "name": "custom"})
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted([*RECIPES, 'custom'])}")
    return _merge(_base(), RECIPES[name])


def recipe_names() -> list[str]:
    return sorted([*RECIPES, "custom"])
