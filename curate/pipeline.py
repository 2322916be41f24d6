"""The stages of a curation run, as plain functions over manifests and an executor.

Each ``stage_*`` reads the previous stage's manifest from ``<out>/manifests`` and writes its
own. Per-item work goes through ``curate.runner.run_stage`` (checkpointed, resumable) on
whatever executor the caller gives (Ray in ``curate build``, serial in tests).
"""
from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path
from typing import Any

from manifests import schemas
from manifests.schemas import read_rows, write_manifest
from curate.runner import Executor, StageSpec, run_stage

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


# ----------------------------------------------------------------------------- run state

def load_run(out: str | Path) -> dict[str, Any]:
    path = Path(out) / RUN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: start with `curate sources` or `curate build`")
    return json.loads(path.read_text())


def save_run(out: str | Path, run: dict[str, Any]) -> None:
    from manifests.atomic import write_json
    write_json(Path(out) / RUN_FILE, run)


def new_run(out: str | Path, recipe: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Record the recipe and options of a run; an existing run keeps its recipe (resume)."""
    path = Path(out) / RUN_FILE
    if path.exists():
        run = load_run(out)
        if run["recipe"]["name"] != recipe["name"]:
            raise ValueError(f"{out} holds a '{run['recipe']['name']}' run; use another --out")
        run["options"].update({k: v for k, v in options.items() if v is not None})
    else:
        run = {"recipe": recipe, "options": {k: v for k, v in options.items() if v is not None}}
    save_run(out, run)
    return run


# ----------------------------------------------------------------------------- sources

def stage_sources(out: str | Path, run: dict[str, Any], sources_file: str | Path,
                  limit: int | None = None) -> list[dict]:
    from manifests.classes import recipe_classes
    from manifests.sources import read_sources

    recipe = run["recipe"]
    kw: dict[str, Any] = {}
    if recipe.get("classes"):
        kw["classes"] = recipe_classes(recipe["classes"])
    fmt = recipe.get("source_format", "auto")
    if fmt in ("vggsound", "avsync"):
        kw["url_template"] = recipe.get("url_template")
    rows = read_sources(sources_file, fmt=fmt, **kw)
    if limit is not None:
        kept = 0
        for r in rows:
            if r["status"] == schemas.STATUS_OK:
                kept += 1
                if kept > limit:
                    r["status"], r["error"] = schemas.STATUS_SKIPPED, f"beyond --limit {limit}"
    write_manifest(out, "sources", rows)
    ok = sum(r["status"] == schemas.STATUS_OK for r in rows)
    log.info("sources: %d rows, %d accepted", len(rows), ok)
    return rows


# ----------------------------------------------------------------------------- download

def _download_factory(media_dir: str, opts: dict):
    from curate.download import DownloadOptions, download_source

    options = DownloadOptions(**opts)

    def fn(item: dict) -> dict:
        return {"downloads": [download_source(item["row"], Path(media_dir), options)]}
    return fn


def _download_error(item: dict, error: str) -> dict:
    return {"downloads": [{"source_id": item["key"], "status": schemas.STATUS_FAILED,
                           "reason": "error", "error": error}]}


def download_options(run: dict[str, Any]) -> dict[str, Any]:
    d = dict(run["recipe"]["download"])
    d["url_template"] = run["recipe"].get("url_template", d.get("url_template"))
    for k in ("cookiefile", "proxy", "ratelimit"):
        if run["options"].get(k):
            d[k] = run["options"][k]
    from curate.download import DownloadOptions
    known = set(DownloadOptions.__dataclass_fields__)
    return {k: v for k, v in d.items() if k in known}


#: download failures worth another try on `--retry-failed` (a 404 or a removed video is final)
TRANSIENT_REASONS = {"timeout", "http_error", "error"}
_FINAL_HTTP = re.compile(r"HTTP Error (403|404|410)\b")


def stage_download(out: str | Path, run: dict[str, Any], executor: Executor,
                   retry_failed: bool = False) -> list[dict]:
    sources = [r for r in read_rows(out, "sources") if r["status"] == schemas.STATUS_OK]
    redo: set[str] = set()
    if retry_failed and schemas.has_manifest(out, "downloads"):
        redo = {d["source_id"] for d in read_rows(out, "downloads")
                if d["status"] == schemas.STATUS_FAILED and d["reason"] in TRANSIENT_REASONS
                and not _FINAL_HTTP.search(d["error"] or "")}
    media = Path(out) / "media" / "raw"
    media.mkdir(parents=True, exist_ok=True)
    spec = StageSpec("download", functools.partial(_download_factory, str(media), download_options(run)),
                     _download_error)
    items = [{"key": r["source_id"], "row": r} for r in sources]
    res = run_stage(out, spec, items, executor, redo=redo)
    rows = res.outputs.get("downloads", [])
    write_manifest(out, "downloads", rows)
    return rows


# ----------------------------------------------------------------------------- split

def _split_factory(shot_params: dict, window_params: dict):
    from curate.shots import shot_rows
    from curate.windows import make_windows

    def fn(item: dict) -> dict:
        shots = shot_rows(item["key"], item["path"], **shot_params)
        windows = make_windows(shots, item["class_name"], item["split"], **window_params)
        return {"shots": shots, "windows": windows}
    return fn


def _split_error(item: dict, error: str) -> dict:
    return {"shots": [{"shot_id": None, "source_id": item["key"], "shot_index": None,
                       "status": schemas.STATUS_FAILED, "error": error}]}


def _ok_downloads(out: str | Path) -> list[dict]:
    sources = {r["source_id"]: r for r in read_rows(out, "sources")}
    rows = []
    for d in read_rows(out, "downloads"):
        if d["status"] == schemas.STATUS_OK and d["source_id"] in sources:
            rows.append({**sources[d["source_id"]], "path": d["path"], "width": d["width"],
                         "height": d["height"], "duration": d["duration"]})
    return rows


def stage_split(out: str | Path, run: dict[str, Any], executor: Executor) -> tuple[list, list]:
    recipe = run["recipe"]
    spec = StageSpec("split", functools.partial(_split_factory, recipe["shots"], recipe["windows"]),
                     _split_error)
    items = [{"key": s["source_id"], "path": s["path"], "class_name": s["class_name"],
              "split": s["split"]} for s in _ok_downloads(out)]
    res = run_stage(out, spec, items, executor)
    shots, windows = res.outputs.get("shots", []), res.outputs.get("windows", [])
    if schemas.has_manifest(out, "windows"):
        # keep scores already computed for windows that still exist
        scored = {w["window_id"]: w for w in read_rows(out, "windows")}
        windows = [scored.get(w["window_id"], w) for w in windows]
    write_manifest(out, "shots", shots)
    write_manifest(out, "windows", windows)
    return shots, windows


# ----------------------------------------------------------------------------- models

MODEL_FILTERS = {"clip_diff": "clip", "imagebind": "imagebind", "sync": "sync"}
WEIGHT_OPTIONS = {"clip": "clip_checkpoint", "imagebind": "imagebind_checkpoint",
                  "sync": "sync_checkpoint"}


def resolve_models(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Which weights each model-backed filter uses, and whether it may gate.

    A model with random weights cannot gate meaningfully: its filter is scored and stored
    but marked score-only, and ``curate stats`` says so.
    """
    recipe, opts = run["recipe"], run["options"]
    allow_random = bool(opts.get("allow_random_weights", recipe.get("allow_random_weights")))
    out: dict[str, dict[str, Any]] = {}
    for filt, model in MODEL_FILTERS.items():
        if filt not in recipe["filters"]:
            continue
        weights = opts.get(WEIGHT_OPTIONS[model])
        if model == "clip" and not weights and not allow_random:
            weights = f"{recipe['models']['clip_model']}/{recipe['models']['clip_pretrained']}"
        if weights:
            out[filt] = {"model": model, "weights": weights, "random": False}
        elif allow_random:
            out[filt] = {"model": model, "weights": None, "random": True}
        else:
            raise ValueError(f"filter '{filt}' needs weights: pass --{WEIGHT_OPTIONS[model].replace('_', '-')} "
                             f"(or --allow-random-weights for demos and tests only)")
    return out


def gating(run: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """(filters that gate, {score-only filter: why})."""
    recipe = run["recipe"]
    models = resolve_models(run)
    gate, score_only = [], {}
    for f in recipe["filters"]:
        if f in models and models[f]["random"]:
            score_only[f] = "random weights (--allow-random-weights)"
        elif f not in recipe["gate"]:
            score_only[f] = f"recipe '{recipe['name']}' records it without gating"
        else:
            gate.append(f)
    return gate, score_only


def thresholds(run: dict[str, Any], overrides: list[str] | None = None) -> dict[str, dict[str, float]]:
    from curate.select import parse_overrides
    from filters.registry import default_thresholds

    th = default_thresholds()
    for f, vals in run["recipe"].get("thresholds", {}).items():
        th.setdefault(f, {}).update(vals)
    if overrides:
        for f, vals in parse_overrides(overrides).items():
            th.setdefault(f, {}).update(vals)
    return th


# ----------------------------------------------------------------------------- score

def _build_scorers(models: dict[str, dict[str, Any]], run_models: dict[str, Any], device: str):
    from curate.scoring import Scorers

    kw: dict[str, Any] = {}
    for m in models.values():
        if m["model"] == "clip":
            from filters.clip_model import ClipScorer
            if m["random"]:
                kw["clip"] = ClipScorer.random(seed=0, device=device)
            elif Path(str(m["weights"])).is_file():
                kw["clip"] = ClipScorer.from_checkpoint(m["weights"], model=run_models["clip_model"], device=device)
            else:
                kw["clip"] = ClipScorer.from_pretrained(run_models["clip_model"], run_models["clip_pretrained"],
                                                        device=device)
        elif m["model"] == "imagebind":
            from filters.imagebind import ImageBindScorer
            kw["imagebind"] = (ImageBindScorer.random(seed=0, device=device) if m["random"]
                               else ImageBindScorer.from_checkpoint(m["weights"], device=device))
        elif m["model"] == "sync":
            from filters.sync import SyncScorer
            kw["sync"] = (SyncScorer.random(seed=0, device=device) if m["random"]
                          else SyncScorer.from_checkpoint(m["weights"], device=device))
    return Scorers(**kw)


def _score_factory(models: dict, run_models: dict, th: dict, gate: list[str]):
    import torch
    from decoding.media import decode_grid
    from curate.scoring import score_segment

    device = "cuda" if torch.cuda.is_available() else "cpu"
    scorers = _build_scorers(models, run_models, device)

    def fn(item: dict) -> dict:
        grid = decode_grid(item["path"])   # the whole segment, once, for all its windows
        only = set(item["only"]) if item.get("only") else None
        rows = score_segment(grid, item["windows"], scorers, th, item["text"], cascade=True,
                             only=only, gate=set(gate))
        return {"windows": rows}
    return fn


def _score_error(item: dict, error: str) -> dict:
    return {"windows": [{**w, "status": schemas.STATUS_FAILED, "error": f"score: {error}"}
                        for w in item["windows"]]}


def _score_items(out: str | Path, windows: list[dict], wanted: dict[str, set[str] | None],
                 tag: str) -> list[dict]:
    """One item per (source, filters to score): the segment is decoded once per item."""
    from manifests.sources import display_name

    paths = {d["source_id"]: d["path"] for d in _ok_downloads(out)}
    groups: dict[tuple[str, tuple], list[dict]] = {}
    for w in windows:
        if w["window_id"] in wanted and w["status"] == schemas.STATUS_OK and w["source_id"] in paths:
            only = tuple(sorted(wanted[w["window_id"]])) if wanted[w["window_id"]] else ()
            groups.setdefault((w["source_id"], only), []).append(w)
    items = []
    for (sid, only), ws in sorted(groups.items()):
        key = sid + (f"@{'+'.join(only)}@{tag}" if only else "")
        items.append({"key": key, "path": paths[sid], "windows": ws, "only": list(only) or None,
                      "text": display_name(ws[0]["class_name"] or "")})
    return items


#: GPU share of one scoring actor when Ray sees GPUs: two actors per GPU keep it busy while
#: the other decodes (ignored on CPU-only clusters)
SCORE_GPUS_PER_ACTOR = 0.5


def stage_score(out: str | Path, run: dict[str, Any], executor: Executor,
                rescore: bool = False, num_gpus: float = SCORE_GPUS_PER_ACTOR) -> list[dict]:
    """Score every window not yet scored; with ``rescore``, score exactly the windows the
    current thresholds admit but the cascade skipped, and only their missing filters."""
    from curate.select import needs_scoring_by_filter, rescore_filters

    windows = read_rows(out, "windows")
    gate, _ = gating(run)
    th = thresholds(run, run.get("selection_overrides"))
    if rescore:
        import hashlib
        wanted: dict[str, set[str] | None] = {}
        for first, ids in needs_scoring_by_filter(windows, th, set(gate)).items():
            wanted.update({i: rescore_filters(first) for i in ids})
        tag = hashlib.sha1("\n".join(sorted(wanted)).encode()).hexdigest()[:12]
        items = _score_items(out, windows, wanted, tag)
    else:
        items = _score_items(out, windows, {w["window_id"]: None for w in windows}, "")
    factory = functools.partial(_score_factory, resolve_models(run), run["recipe"]["models"], th, gate)
    spec = StageSpec("score", factory, _score_error, stateful=True, num_gpus=num_gpus)
    res = run_stage(out, spec, items, executor, chunk_size=32)
    scored = {w["window_id"]: w for w in res.outputs.get("windows", [])}
    merged = [scored.get(w["window_id"], w) for w in windows]
    write_manifest(out, "windows", merged)
    return merged


# ----------------------------------------------------------------------------- select

def stage_select(out: str | Path, run: dict[str, Any], overrides: list[str] | None = None,
                 decisions_file: str | Path | None = None) -> dict[str, Any]:
    """Thresholds on stored scores -> decisions -> merged clips -> balanced, split selection.

    Touches no model: changing a threshold and re-selecting takes seconds.
    """
    from curate.balance import select_clips
    from curate.select import select_windows

    recipe = run["recipe"]
    if overrides is not None:
        run["selection_overrides"] = list(overrides)
        save_run(out, run)
    th = thresholds(run, run.get("selection_overrides"))
    gate, score_only = gating(run)
    review = _load_review(decisions_file or run.get("review_decisions"))
    if decisions_file:
        run["review_decisions"] = str(Path(decisions_file).resolve())
        save_run(out, run)
    summary: dict[str, Any] = {"score_only": score_only, "gate": gate, "thresholds": th}
    if recipe["clip_mode"] == "fixed":
        from curate.merge import fixed_clips
        clips = fixed_clips(_ok_downloads(out), length=recipe["fixed_clip_length"])
    else:
        from curate.merge import merge_windows
        windows = read_rows(out, "windows")
        decisions, funnel = select_windows(windows, th, gate=set(gate))
        write_manifest(out, "decisions", decisions)
        summary["funnel"], summary["needs_scoring"] = funnel, funnel["needs_scoring"]
        if funnel["needs_scoring"]:
            log.warning("%d windows were never scored under these thresholds; run `curate score %s`",
                        funnel["needs_scoring"], out)
        clips = merge_windows(windows, decisions, read_rows(out, "shots"), min_len=recipe["merge"]["min_len"])
    write_manifest(out, "clips", clips)
    # every class the run asked for, so one without any candidate shows in the shortfall
    classes = sorted({s["class_name"] for s in read_rows(out, "sources")
                      if s["status"] == schemas.STATUS_OK and s["class_name"]})
    if recipe.get("classes"):
        from manifests.classes import recipe_folders
        classes = recipe_folders(recipe["classes"])
    selected, bal = select_clips(clips, recipe["select"], seed=recipe["select"].get("seed", 0),
                                 decisions=review, classes=classes)
    write_manifest(out, "selected", selected)
    summary["balance"] = bal
    return summary


def _load_review(path: str | Path | None) -> dict[str, str] | None:
    if not path:
        return None
    from curate.review import load_decisions
    return load_decisions(path)


# ----------------------------------------------------------------------------- shard

def _cut_factory(cap: int | None):
    from curate.cut import cut_clip

    def fn(item: dict) -> dict:
        info = cut_clip(item["src"], item["dst"], item["start"], item["end"], max_short_side=cap)
        return {"cuts": [{"key": item["key"], "path": item["dst"], "status": schemas.STATUS_OK,
                          "error": None, "duration": info.get("duration")}]}
    return fn


def _cut_error(item: dict, error: str) -> dict:
    return {"cuts": [{"key": item["key"], "path": None, "status": schemas.STATUS_FAILED, "error": error}]}


def class_list(run: dict[str, Any], selected: list[dict]) -> list[str]:
    """Class index order: the recipe's class list when it has one, else sorted names."""
    names = sorted({s["class_name"] for s in selected})
    if run["recipe"].get("classes"):
        from manifests.classes import recipe_folders
        base = recipe_folders(run["recipe"]["classes"])
        return base + [n for n in names if n not in base]
    return names


def stage_shard(out: str | Path, run: dict[str, Any], executor: Executor) -> list[dict]:
    """Cut every selected clip (Ray tasks), then write each split's shards and their index."""
    from shards.writer import make_sample, write_shards

    recipe = run["recipe"]
    all_selected = read_rows(out, "selected")
    selected = [s for s in all_selected if s["status"] == schemas.STATUS_OK]
    downloads = {d["source_id"]: d for d in _ok_downloads(out)}
    clips = {c["clip_id"]: c for c in read_rows(out, "clips")} if schemas.has_manifest(out, "clips") else {}
    clip_dir = Path(out) / "media" / "clips"
    clip_dir.mkdir(parents=True, exist_ok=True)
    items = [{"key": s["key"], "src": downloads[s["source_id"]]["path"],
              "dst": str(clip_dir / f"{s['key']}.mp4"), "start": s["start"], "end": s["end"]}
             for s in selected if s["source_id"] in downloads]
    spec = StageSpec("cut", functools.partial(_cut_factory, recipe["shards"].get("max_short_side")), _cut_error)
    cuts = {c["key"]: c for c in run_stage(out, spec, items, executor).outputs.get("cuts", [])}
    classes = class_list(run, selected)
    rows: list[dict] = []
    for split in sorted({s["split"] for s in selected}):
        samples = [make_sample(s, cuts[s["key"]]["path"], classes.index(s["class_name"]),
                               source=downloads[s["source_id"]], clip=clips.get(s["clip_id"]),
                               duration=cuts[s["key"]].get("duration"))
                   for s in selected
                   if s["split"] == split and cuts.get(s["key"], {}).get("status") == schemas.STATUS_OK]
        rows += write_shards(out, samples, split, max_count=recipe["shards"]["max_count"],
                             max_bytes=recipe["shards"]["max_bytes"])
    write_manifest(out, "shards", rows)
    _record_cut_failures(out, all_selected, cuts)
    return rows


def _record_cut_failures(out: str | Path, selected: list[dict], cuts: dict[str, dict]) -> None:
    """A clip that could not be cut stays in `selected`, failed, with the reason."""
    changed = False
    for s in selected:
        c = cuts.get(s["key"] or "")
        if s["status"] == schemas.STATUS_OK and c and c["status"] != schemas.STATUS_OK:
            s["status"], s["error"], changed = schemas.STATUS_FAILED, f"cut: {c['error']}", True
    if changed:
        write_manifest(out, "selected", selected)


# ----------------------------------------------------------------------------- exact reproduction

def stage_reproduce_sources(out: str | Path, run: dict[str, Any], lists: list[str | Path]) -> list[dict]:
    """Sources of one or more AVSync15 lists (one row per distinct 10-s segment)."""
    from manifests.sources import read_avsync_list

    rows, seen = [], set()
    for lst in lists:
        for r in read_avsync_list(lst, url_template=run["recipe"].get("url_template")):
            if r["status"] == schemas.STATUS_OK and r["source_id"] in seen:
                continue        # the same segment listed in train and test: download once
            seen.add(r["source_id"])
            rows.append(r)
    write_manifest(out, "sources", rows)
    return rows


def stage_reproduce(out: str | Path, run: dict[str, Any], lists: list[str | Path]) -> list[dict]:
    """Exactly the clips the lists name (no scoring, no selection): the selected table."""
    from curate.reproduce import downloads_lookup, reproduce_list

    lookup = downloads_lookup(read_rows(out, "downloads"), read_rows(out, "sources"))
    selected: list[dict] = []
    for lst in lists:
        selected += reproduce_list(lst, lookup=lookup)
    write_manifest(out, "selected", selected)
    return selected
