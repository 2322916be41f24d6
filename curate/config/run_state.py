"""Run state: ``<out>/run.json`` (recipe, options, flags), written only when it changes."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from manifests import bounded
from manifests.atomic import write_json

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
#: how run.json writes an option that is a path inside the output (a sync classifier the
#: build trained): relative to the output, so a copied or moved run reads its own file
IN_OUT = "<out>/"


def _portable_options(options: dict[str, Any], out: str | Path) -> dict[str, Any]:
    root = os.path.abspath(out) + os.sep
    return {k: IN_OUT + os.path.relpath(v, root) if isinstance(v, str) and os.path.isabs(v)
            and os.path.abspath(v).startswith(root) else v for k, v in options.items()}


def _local_options(options: dict[str, Any], out: str | Path) -> dict[str, Any]:
    root = os.path.abspath(out)
    return {k: os.path.join(root, v[len(IN_OUT):]) if isinstance(v, str) and v.startswith(IN_OUT)
            else v for k, v in options.items()}


def load_run(out: str | Path) -> dict[str, Any]:
    path = Path(out) / RUN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: start with `curate sources` or `curate build`")
    try:
        run = bounded.read_json(path, "run file")
    except ValueError as e:
        raise ValueError(f"{e}: restore it, or remove it and rerun the "
                         f"same `curate build` command (the recipe and options are written anew; "
                         f"finished work is kept)") from e
    if not (isinstance(run, dict) and isinstance(run.get("recipe"), dict)
            and isinstance(run["recipe"].get("name"), str) and isinstance(run.get("options", {}), dict)):
        raise ValueError(f"{path} is not a curate run file (no recipe name / options): restore it, "
                         f"or remove it and rerun the same `curate build` command")
    run["options"] = _local_options(run.get("options") or {}, out)
    return run


def save_run(out: str | Path, run: dict[str, Any]) -> None:
    """Write run.json atomically, and only when its content changed (a finished rerun
    rewrites nothing). Options that are paths inside ``out`` are written relative to it
    (``IN_OUT``) and read back under wherever the output is then."""
    path = Path(out) / RUN_FILE
    run = {**run, "options": _portable_options(run.get("options") or {}, out)}
    try:
        if json.loads(path.read_text()) == json.loads(json.dumps(run)):
            return
    except (OSError, json.JSONDecodeError):
        pass
    write_json(path, run)


def record_run(out: str | Path, run: dict[str, Any], changes: dict[str, Any]) -> bool:
    """Record ``changes`` in the run dict and run.json (``save_run``: only when it changes).
    A key ``options`` merges into the options; any other key replaces its entry. What the
    build records for its stages (``curate.build``): no stage writes the run itself.
    Returns whether the run changed."""
    if not changes:
        return False
    before = json.dumps(run, sort_keys=True, default=str)
    for k, v in changes.items():
        if k == "options":
            run.setdefault("options", {}).update(v)
        else:
            run[k] = v
    if json.dumps(run, sort_keys=True, default=str) == before:
        return False
    save_run(out, run)
    return True


def new_run(out: str | Path, recipe: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Record the recipe and options of a run.

    An existing run of the same recipe name takes the recipe as given now: a changed
    parameter is seen by the stages' fingerprints, which redo exactly what depends on it.
    """
    path = Path(out) / RUN_FILE
    if path.exists():
        run = load_run(out)
        if run["recipe"]["name"] != recipe["name"]:
            raise ValueError(f"{out} holds a '{run['recipe']['name']}' run; use another --out")
        if run["recipe"] != recipe:
            log.info("recipe parameters changed since the last run: affected stages redo their items")
            run["recipe"] = recipe
        run["options"].update({k: v for k, v in options.items() if v is not None})
    else:
        run = {"recipe": recipe, "options": {k: v for k, v in options.items() if v is not None}}
    if run["options"].get("repair"):      # `curate build --repair` (kept by a resume)
        run["recipe"]["repair"] = {**(run["recipe"].get("repair") or {}), "enabled": True}
    save_run(out, run)
    return run


def engine_options(run: dict[str, Any]) -> dict[str, Any]:
    """The recipe's ``engine`` block with its defaults (older run.json files lack it)."""
    from curate.config.recipes import ENGINE_DEFAULTS
    return {**ENGINE_DEFAULTS, **(run["recipe"].get("engine") or {})}


def cascade_order(run: dict[str, Any]) -> tuple[str, ...]:
    """The run's cascade order (recipe option ``order``). A run.json written before the
    option existed was scored in the schema's order, so its skip notes read in that order."""
    from filters import registry
    order = run["recipe"].get("order")
    return registry.LEGACY_ORDER if order is None else registry.cascade_order(order)
