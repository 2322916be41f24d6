"""Stage `download`: every ok source fetched (``curate.ops.fetch``) into ``media/raw``; the
full rendition of selected sources for two-pass runs."""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from manifests import schemas
from manifests.schemas import read_rows, write_manifest
from curate.execution.spec import StageSpec
from curate.execution.checkpoints import StageResult
from curate.config.run import Run
from curate.stagekit.declare import Context, Outputs, Stage, Work, empty_table, summarize_failures
from curate.stagekit.downloading import (DOWNLOAD_INPUTS, local_source_id, download_options,
                                         download_spec, run_encoder_settings)

#: download failures worth another try on `--retry-failed` (a 404 or a removed video is final)
TRANSIENT_REASONS = {"timeout", "http_error", "error", "worker_died", "throttled", "bot_check",
                     "js_challenge"}
_FINAL_HTTP = re.compile(r"HTTP Error (403|404|410)\b")


def download_items(out: str | Path, run: Run) -> list[dict]:
    """One item per ok source: the row, and the fields the download depends on."""
    root = download_options(run).get("source_root")
    return [{"key": r["source_id"], "row": r,
             "inputs": {**{k: r.get(k) for k in DOWNLOAD_INPUTS},
                        **({"local": local_source_id(r, root)} if r.get("path") else {})}}
            for r in read_rows(out, "sources") if r["status"] == schemas.STATUS_OK]


def transient_failures(out: str | Path) -> set[str]:
    """Sources whose download failed for a reason worth another try (``--retry-failed``)."""
    if not schemas.has_manifest(out, "downloads"):
        return set()
    return {d["source_id"] for d in read_rows(out, "downloads")
            if d["status"] == schemas.STATUS_FAILED and d["reason"] in TRANSIENT_REASONS
            and not _FINAL_HTTP.search(d["error"] or "")}


class Download(Stage):
    """Every ok source fetched into ``media/raw``; the run records the encoder settings
    every re-encode uses (run.json ``encoder``) before the first download."""
    name = "download"
    reads = ("sources",)
    writes = ("downloads",)

    def spec(self, ctx: Context) -> StageSpec:
        media = Path(ctx.out) / "media" / "raw"
        return download_spec(ctx.run, media, ctx.out)

    def work(self, ctx: Context, spec: StageSpec | None) -> Work:
        (Path(ctx.out) / "media" / "raw").mkdir(parents=True, exist_ok=True)
        enc = run_encoder_settings(ctx.run)
        return Work(download_items(ctx.out, ctx.run),
                    redo=transient_failures(ctx.out) if ctx.retry_failed else set(),
                    schemas={"downloads": schemas.DOWNLOADS}, record={"encoder": enc} if enc else {})

    def finish(self, ctx: Context, work: Work | None, result: StageResult | None) -> Outputs:
        table = _rebase_downloads(ctx.out, result.table("downloads") or empty_table("downloads"))
        write_manifest(ctx.out, "downloads", table)
        summarize_failures("download", table, ctx.echo, reason_col="reason")
        from curate.reports.ledger import update_ledger
        update_ledger(ctx.out)       # every source's availability, kept across reruns
        if result.ran:
            from curate.ops.health import echo_summary
            echo_summary(ctx.out, ctx.echo)
        return Outputs(table.to_pylist())


def _rebase_downloads(out: str | Path, table: pa.Table) -> pa.Table:
    """Download paths under this output's ``media/raw``, wherever the output was when they
    were downloaded (a run copied or moved to another folder reads its own files)."""
    if table.num_rows == 0 or "path" not in table.column_names:
        return table
    media = Path(out) / "media" / "raw"
    paths = table["path"].to_pylist()
    new = [str(media / f"{sid}.mp4") if p and Path(p).name == f"{sid}.mp4"
           and Path(p).parent.parts[-2:] == ("media", "raw") else p
           for p, sid in zip(paths, table["source_id"].to_pylist())]
    if new == paths:
        return table
    i = table.column_names.index("path")
    return table.set_column(i, table.schema.field(i), pa.array(new, table.schema.field(i).type))


STAGE = Download()
