"""What the download stage and the shard stage's full-rendition step share: the download
function and its options, the stage spec (rate and health control), the encoder settings in
the fingerprints, and ``fetch_full``, the full rendition of the selected sources on two-pass
runs (a step of the shard stage, run by the same executor under its own checkpoint)."""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from manifests import schemas
from manifests.schemas import read_rows
from curate.config.run import Run, resolve
from curate.config.run_state import engine_options
from curate.execution.checkpoints import run_stage
from curate.execution.spec import Executor, StageSpec
from curate.stagekit.declare import Echo, run_kw, spec_kw, summarize_failures

log = logging.getLogger(__name__)


def download_factory(media_dir: str, opts: dict):
    from curate.ops.fetch import DownloadOptions, download_source
    from curate.stagekit.gated import gated

    options = DownloadOptions(**opts)

    def fn(item: dict, gate) -> dict:
        # ``gate``: the run's health control (one for all workers)
        return {"downloads": [download_source(item["row"], Path(media_dir), options, gate=gate)]}
    return gated(fn)


def _download_error(item: dict, error: str) -> dict:
    reason = "timeout" if error.startswith("timeout") else \
        "worker_died" if error.startswith("worker") else "error"
    return {"downloads": [{"source_id": item["key"], "status": schemas.STATUS_FAILED,
                           "reason": reason, "error": error}]}


def download_options(run: Run) -> dict[str, Any]:
    """The ``DownloadOptions`` fields of the run (the recipe's download block, the command's
    network options), as plain values."""
    state = run.as_dict()
    d = dict(state["recipe"]["download"])
    d["url_template"] = state["recipe"].get("url_template", d.get("url_template"))
    for k in ("cookiefile", "proxy", "ratelimit", "socket_timeout", "extractor_args", "js_runtimes"):
        if state["options"].get(k):
            d[k] = state["options"][k]
    from curate.ops.fetch import DownloadOptions
    known = set(DownloadOptions.__dataclass_fields__)
    return {k: v for k, v in d.items() if k in known}


#: options that change how a download is fetched, never what it yields
_DOWNLOAD_NON_INPUTS = {"cookiefile", "proxy", "ratelimit", "retries", "backoff", "socket_timeout",
                        "max_wait", "timeout_retries", "extractor_args", "js_runtimes"}
DOWNLOAD_INPUTS = ("source_id", "ytid", "url", "start", "end", "path")


def run_encoder_settings(run: Run | None = None) -> dict[str, Any]:
    """The run's deterministic encoder settings (``curate.ops.encoding``); part of the download
    and cut fingerprints; the download stage has the build record them in run.json."""
    try:
        from curate.ops.fetch import DownloadOptions
        from curate.ops.encoding import encoder_settings
        return encoder_settings(DownloadOptions(**download_options(run)) if run else None)
    except Exception as e:  # noqa: BLE001 - ffmpeg missing: the download stage says so itself
        log.debug("no encoder settings: %s", e)
        return {}


def download_spec(run: Run, media: Path | None = None, out: str | Path | None = None) -> StageSpec:
    """Fetch each source into ``media`` (``ops.fetch.download_source``), with the run's
    request rate and health control (its state recorded under ``out``)."""
    opts = download_options(run)
    eng = engine_options(run.as_dict())      # plain values: the health block goes to workers
    from curate.ops.fetch import DOWNLOAD_FORMAT
    # the format: a file of another one (a re-encode re-timed to 0) is fetched again;
    # rendition "full" is what every download was before the option: left out, old runs stay done
    params = {"download": {k: v for k, v in opts.items() if k not in _DOWNLOAD_NON_INPUTS
                           and not (k == "rendition" and v == "full")},
              "encoder": run_encoder_settings(run), "format": DOWNLOAD_FORMAT}
    rate = run.options.get("max_requests_per_s", eng.get("max_requests_per_s"))
    from curate.ops.health import download_health
    from curate.stagekit.gated import health_shared
    health = download_health(eng.get("download_health"), opts)
    return StageSpec("download", functools.partial(download_factory, str(media or ""), opts), _download_error,
                     params=params,
                     concurrency=int(run.options.get("download_workers") or eng["download_workers"]),
                     shared=health_shared(health, float(rate) if rate else None, out),
                     **spec_kw(run, "download"))


def two_pass(run: Run) -> bool:
    """Score small, fetch full only for survivors (recipe ``download.rendition: small``)."""
    return (run.recipe.get("download") or {}).get("rendition") == "small"


def fetch_full(out: str | Path, run: Run, executor: Executor, source_ids: list[str],
               downloads: dict[str, dict], echo: Echo = None) -> tuple[dict[str, dict], dict[str, str]]:
    """The full rendition (the recipe's ``max_height`` cap) of exactly ``source_ids`` (the
    sources of selected clips) into ``media/full/``, for the shard stage to cut from: a step
    of the shard stage on two-pass runs, run by the same executor under its own checkpoint.
    Returns (downloads with the full files' path and size, {source_id: why it failed})."""
    state = run.as_dict()
    state["recipe"]["download"]["rendition"] = "full"
    full_run = resolve(state)
    media = Path(out) / "media" / "full"
    media.mkdir(parents=True, exist_ok=True)
    spec = download_spec(full_run, media, out)
    spec.name = "download_full"
    sources = {r["source_id"]: r for r in read_rows(out, "sources")}
    items = [{"key": sid, "row": sources[sid], "inputs": {k: sources[sid].get(k) for k in DOWNLOAD_INPUTS}}
             for sid in sorted(set(source_ids)) if sid in sources]
    res = run_stage(out, spec, items, executor, schemas={"downloads": schemas.DOWNLOADS}, **run_kw(run))
    table = res.table("downloads")
    summarize_failures("download full rendition", table, echo, reason_col="reason")
    full, failed = dict(downloads), {}
    for r in (table.to_pylist() if table is not None else []):
        sid = r["source_id"]
        if r["status"] == schemas.STATUS_OK:
            # the full file's own clock: a stream copy starts on its own keyframe
            full[sid] = {**downloads.get(sid, {}), "path": r["path"], "width": r["width"],
                         "height": r["height"], "duration": r["duration"], "rendition": "full",
                         "seg_start": r.get("seg_start"), "seg_end": r.get("seg_end")}
        else:
            full.pop(sid, None)
            failed[sid] = f"full rendition: {r['reason']}: {r['error']}"
    return full, failed


def local_source_id(row: dict, source_root: str | None) -> list[Any] | None:
    """Size and mtime of a local source file (None for URLs): a file replaced at the same path
    is a new input and is read again."""
    if not row.get("path"):
        return None
    p = Path(row["path"])
    if not p.is_absolute() and source_root:
        p = Path(source_root) / p
    try:
        st = p.stat()
    except OSError:
        return [None, None]
    return [st.st_size, st.st_mtime_ns]
