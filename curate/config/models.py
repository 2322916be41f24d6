"""Model weights policy: which weights each model-backed filter uses, whether it may gate,
what identifies them in a fingerprint, and building the scorers (once per scoring actor)."""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from filters import registry


def weight_options() -> dict[str, str]:
    """model name -> the run option naming its weights (``ModelSpec.weights_option``)."""
    return {s.model.name: s.model.weights_option for s in registry.specs().values() if s.model}


def parse_weights(items: list[str] | None) -> dict[str, str]:
    """``--weights MODEL=PATH`` items -> {the model's weights option: PATH}: every model a
    filter declares is reachable from the CLI, with or without a flag of its own."""
    known = weight_options()
    out = {}
    for item in items or ():
        model, sep, path = str(item).partition("=")
        if not sep or not path:
            raise ValueError(f"--weights {item!r} is not MODEL=PATH, e.g. sync=sync.pt")
        if model not in known:
            raise ValueError(f"--weights {item!r}: unknown model {model!r}; models: {sorted(known)}")
        out[known[model]] = path
    return out


def _weights(spec, opts: dict[str, Any], recipe: dict[str, Any], allow_random: bool) -> dict[str, Any]:
    m = spec.model
    weights = opts.get(m.weights_option)
    if not weights and (not allow_random or m.shipped) and m.default_weights is not None:
        weights = m.default_weights(recipe["models"])
    if not weights and not allow_random:       # what `curate models pull` put in the cache
        weights = _cached_weights(m.name)
    if weights:
        return {"model": m.name, "weights": weights, "random": False}
    if allow_random:
        return {"model": m.name, "weights": None, "random": True}
    raise ValueError(_missing_weights(spec.name, m.name))


def resolve_models(run: dict[str, Any], convention: bool = True) -> dict[str, dict[str, Any]]:
    """Which weights each model-backed filter uses, and whether it may gate.

    A model with random weights cannot gate meaningfully: its filter is scored and stored
    but marked score-only, and ``curate stats`` says so. ``convention=False`` leaves out the
    models' conventions (which read their weight files): what gating needs.
    """
    recipe, opts = run["recipe"], run["options"]
    allow_random = bool(opts.get("allow_random_weights", recipe.get("allow_random_weights")))
    out: dict[str, dict[str, Any]] = {}
    for filt, spec in registry.specs().items():
        if spec.model is None or filt not in recipe["filters"]:
            continue
        out[filt] = _weights(spec, opts, recipe, allow_random)
    return add_conventions(out, opts) if convention else out


def add_conventions(models: dict[str, dict[str, Any]], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``models`` with the preprocessing convention of each model that declares one: the
    run option overriding it, else what its weight file records (read once per process)."""
    for filt, m in models.items():
        spec = registry.spec(filt).model
        if spec.convention is None:
            continue
        override = options.get(spec.convention_option) if spec.convention_option else None
        conv = spec.convention(m["weights"], override)
        if conv is not None:
            m["convention"] = conv
    return models


def _cached_weights(model: str) -> str | None:
    from curate.config.weights import cached_row
    hit = cached_row(model)
    return str(hit[1]) if hit else None


def command_weights(model: str, given: str | os.PathLike | None, option: str) -> str | None:
    """The weights of a model read outside the filters (Synchformer: certify and ``curate
    metrics``; AVID-CMA: ``sync train --init``; the sync classifier and ImageBind in ``curate
    metrics``): ``given`` (the option's value: a file, or a weights row's name for its cached
    file), else the model's cached file; a cached file is checked against its pull record.
    None when neither; a row name not in the cache is a ValueError naming the pull and ``option``."""
    from curate.config.weights import WEIGHTS, cached_row, get_weight, in_cache, missing_fix
    if given is not None and not Path(given).exists():
        if str(given) in {w.name for w in WEIGHTS}:
            row = get_weight(str(given))
            path = in_cache(row) if row.kind in ("url", "manual") else None
            if path is None:
                raise ValueError(f"{option} {given}: not in the weights cache: {missing_fix(row, option)}")
            _check_pull_record(row, path, _sha256(path))
            return str(path)
    if given is not None:
        return str(given)
    hit = cached_row(model)
    if hit is None:
        return None
    _check_pull_record(hit[0], hit[1], _sha256(hit[1]))
    return str(hit[1])


def _missing_weights(filt: str, model: str) -> str:
    from curate.config.weights import for_model, missing_fix
    fix = missing_fix(for_model(model), registry.spec(filt).model.flag)
    return (f"filter '{filt}' needs weights: {fix} (or --allow-random-weights for demos and "
            f"tests only)")


#: weight files up to this size are identified by their content, wherever they are
HASHED_WEIGHTS_MAX = 64 << 20


def _file_ident(path: str) -> list[Any]:
    """A weight file in a fingerprint. Small files (a sync classifier the build trained into
    ``--out``) by size and content hash: a copied or moved run keeps its fingerprints, a
    retrained file is new weights. Larger ones (CLIP, ImageBind: hundreds of MB to GB, kept
    outside the output) by path, size and mtime, to spare reading them on every run."""
    st = os.stat(path)
    if st.st_size > HASHED_WEIGHTS_MAX:
        return [str(path), st.st_size, int(st.st_mtime)]
    return [st.st_size, _digests(os.path.realpath(path), st.st_size, st.st_mtime_ns)[1]]


@functools.lru_cache(maxsize=32)
def _digests(path: str, size: int, mtime_ns: int) -> tuple[str, str | None]:
    """(sha256, blake2b-128 for files up to ``HASHED_WEIGHTS_MAX``) of a weight file, once per
    file version and process (run.json records the first, fingerprints the second; a build
    asks for both several times). A small file's bytes are the ones the model's ``inspect``
    reads too (``manifests.smallfiles``): one read in all."""
    from manifests import smallfiles
    sha = hashlib.sha256()
    b2 = hashlib.blake2b(digest_size=16) if size <= HASHED_WEIGHTS_MAX else None
    for block in _blocks(path, size, smallfiles.read(path)):
        sha.update(block)
        if b2 is not None:
            b2.update(block)
    return sha.hexdigest(), None if b2 is None else b2.hexdigest()


def _blocks(path: str, size: int, data: bytes | None):
    """The file's content in blocks: ``data`` when read already, else streamed (a progress
    bar for large files)."""
    if data is not None:
        yield data
        return
    from tqdm import tqdm
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"sha256 {Path(path).name}",
                                     disable=size < (256 << 20) or None) as bar:
        for block in iter(lambda: f.read(1 << 22), b""):
            bar.update(len(block))
            yield block


def weight_ids(models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What identifies each model's weights in a fingerprint: the file (``_file_ident``),
    a released folder's files by name, size and mtime, or the name."""
    ids: dict[str, Any] = {}
    for filt, m in models.items():
        w = m["weights"]
        ident: Any = w
        if w and Path(str(w)).is_file():
            ident = _file_ident(str(w))
        elif w and Path(str(w)).is_dir():     # a released modules/ folder: every file in it
            files = sorted(p for p in Path(str(w)).rglob("*") if p.is_file())
            ident = [str(w), [[str(p.relative_to(w)), p.stat().st_size, int(p.stat().st_mtime)]
                              for p in files]]
        ids[filt] = {"model": m["model"], "weights": ident, "random": m["random"]}
        if m.get("convention"):
            ids[filt]["convention"] = m["convention"]
    return ids


def gating(run: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """(filters that gate, {score-only filter: why})."""
    recipe = run["recipe"]
    models = resolve_models(run, convention=False)   # select and stats read no weight file
    gate, score_only = [], {}
    for f in recipe["filters"]:
        if f in models and models[f]["random"]:
            score_only[f] = "random weights (--allow-random-weights)"
        elif f not in recipe["gate"]:
            score_only[f] = f"recipe '{recipe['name']}' records it without gating"
        else:
            gate.append(f)
    return gate, score_only


def build_scorers(models: dict[str, dict[str, Any]], run_models: dict[str, Any], device: str):
    """The ``filters.segment.Scorers`` of a run (called once per scoring actor)."""
    from filters.segment import Scorers

    return Scorers(**{m["model"]: registry.spec(filt).model.load(
        m["weights"], m["random"], run_models, device, m.get("convention"))
        for filt, m in models.items()})


#: weight files already checked in this process (a build checks before download and again
#: before scoring; the second look is free)
_CHECKED: set[tuple] = set()


def check_weights(run: dict[str, Any]) -> None:
    """Check, here in the driver, every model file the run names before any stage work: a
    file that does not fit stops the run with the loader's message and the option to fix,
    instead of failing inside every scoring worker. Where the model declares ``inspect``
    (keys and shapes read from the file, no model built: ImageBind, the sync classifier)
    that is all; otherwise (CLIP through open_clip) the scorer is built on the CPU. Random
    weights are not checked (nothing to load); each file version once per process."""
    for filt, m in resolve_models(run, convention=False).items():
        if m["random"]:
            continue
        model = registry.spec(filt).model
        key = (filt, *_version(m["weights"]))
        if key in _CHECKED:
            continue
        try:
            if model.inspect is not None:
                model.inspect(m["weights"])
            else:
                build_scorers({filt: m}, run["recipe"]["models"], "cpu")
        except Exception as e:  # noqa: BLE001 - every loader error becomes one clear message
            msg = str(e) if isinstance(e, (ValueError, FileNotFoundError)) else f"{type(e).__name__}: {e}"
            if model.flag not in msg:
                msg += f" (check {model.flag})"
            raise ValueError(f"filter '{filt}': its weights {m['weights']} do not load: {msg}") from e
        _CHECKED.add(key)


def _version(weights: Any) -> tuple:
    """A weight path and its file's size and mtime (a name or a folder: the name alone)."""
    p = Path(str(weights))
    if p.is_file():
        st = p.stat()
        return str(p.resolve()), st.st_size, st.st_mtime_ns
    return (str(weights),)


def record_weights(out: str | Path, run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """run.json ``weights``: file, size and sha256 of every weight file or folder the run's
    filters read (and, for the cache's, the licence). A cached file whose sha256 is not the
    one its pull recorded is refused, naming it (ValueError)."""
    from curate.config.run_state import save_run
    from curate.config.weights import cache_path, for_model, package_file, row_at, size_of

    rec: dict[str, dict[str, Any]] = {}
    for filt, m in resolve_models(run, convention=False).items():
        if m["random"]:
            continue
        row = row_at(m["weights"]) or for_model(m["model"])
        path = _local_weights(m, row)
        if path is None:      # open_clip fetches it on first use (and verifies it itself)
            rec[filt] = {"model": m["model"], "weights": m["weights"], "file": None}
            continue
        sha = _sha256(path)
        packaged = row is not None and row.kind == "package" and path == package_file(row)
        cached = row is not None and (path == cache_path(row) or packaged or
                                      (row.kind == "open_clip" and m["weights"] == row.file))
        if cached and row.kind not in ("open_clip", "package"):
            _check_pull_record(row, path, sha)
        where = f"package: {row.url}" if packaged else f"cache: {row.name}" if cached else "option"
        rec[filt] = {"model": m["model"], "file": str(path), "size": size_of(path), "sha256": sha,
                     "source": where, **({"licence": row.licence} if cached else {})}
    if run.get("weights") != rec:
        run["weights"] = rec
        save_run(out, run)
    return rec


def _local_weights(m: dict[str, Any], row: Any) -> Path | None:
    """The file or folder a resolved model reads, where it is a local one."""
    from curate.config.weights import open_clip_cached
    w = str(m["weights"])
    if Path(w).exists():
        return Path(w)
    if row is not None and row.kind == "open_clip" and w == row.file:
        return open_clip_cached(row)
    return None


def _sha256(path: Path) -> str:
    from curate.config.weights import sha256_of
    if path.is_dir():
        return sha256_of(path)
    st = path.stat()
    return _digests(os.path.realpath(path), st.st_size, st.st_mtime_ns)[0]


def _check_pull_record(row: Any, path: Path, sha: str) -> None:
    from curate.config.weights import read_record
    rec = read_record(row)
    if rec is None:
        raise ValueError(f"cached weights {row.name}: {path} has no pull record: run `curate "
                         f"models pull {row.name}` (it checks the file in place and records it)")
    if rec.get("sha256") != sha:
        raise ValueError(f"cached weights {row.name}: {path} changed since it was pulled (sha256 "
                         f"{sha}, recorded {rec.get('sha256')}): remove it and run `curate models "
                         f"pull {row.name}`")
