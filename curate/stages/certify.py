"""Stage `certify`: the sync certificate of every ok merged clip (``filters/synchformer.py``).

Synchformer runs once per merged clip, after the window cascade and the merge (the cheaper
filters have decided which clips exist), on the clip's first and last 4.8-s contexts. The
columns land in the clips and selected manifests (a re-select keeps them for the same clip
and times) and in each sample's JSON. The weights: ``--synchformer-checkpoint``, else the
ones `curate models pull synchformer-mmaudio` (or ``-audioset``) put in the cache
(``curate.config.models.command_weights``). Without either the stage records nothing and says
so: the paper's recipes need no Synchformer weights.
"""
from __future__ import annotations

from pathlib import Path

from manifests import schemas
from manifests.schemas import read_rows, write_manifest
from curate.execution.checkpoints import StageResult
from curate.execution.spec import StageSpec
from curate.stagekit.declare import Context, Outputs, Stage, Work, spec_kw, summarize_failures
from curate.stagekit.certifying import FLAG, OPTION, certify_spec, certify_weights, clip_item  # noqa: F401
from curate.stagekit.inputs import ok_downloads
from curate.selection.rules import desync_gated

def certify_items(out: str | Path, clips: list[dict]) -> list[dict]:
    """One item per merged clip whose download is ok and which is ok or rejected only by the
    desync gate (``desync.max``: the desync-gate stage decides again on what this measures)."""
    downloads = {d["source_id"]: d for d in ok_downloads(out)}
    return [clip_item(out, c["clip_id"], downloads[c["source_id"]], c["start"], c["end"])
            for c in clips if (c["status"] == schemas.STATUS_OK or desync_gated(c["status"], c["error"]))
            and c["source_id"] in downloads]


def _fill(rows: list[dict], certs: dict[str, dict]) -> list[dict]:
    """Each row's certificate columns from its clip's certificate (nulls when none)."""
    out = []
    for r in rows:
        c = certs.get(r.get("clip_id") or "")
        ok = c is not None and c["status"] == schemas.STATUS_OK
        note = None if c is None else (c.get(schemas.CERT_NOTE) if ok else f"certify: {c['error']}")
        out.append({**r, **{k: (c.get(k) if ok else None) for k in schemas.CERT_COLUMNS},
                    schemas.CERT_NOTE: note})
    return out


class Certify(Stage):
    """The sync certificate of every ok merged clip, into the clips and selected manifests;
    without ``--synchformer-checkpoint`` nothing runs and the stage says so. The value is how
    many clips were certified."""
    name = "certify"
    reads = ("clips", "downloads", "selected")
    writes = ("clips", "selected")

    def spec(self, ctx: Context) -> StageSpec:
        return certify_spec(ctx.run)

    def work(self, ctx: Context, spec: StageSpec | None) -> Work | None:
        if certify_weights(ctx.run) is None:
            ctx.echo(f"certify: skipped (no {FLAG}, and no Synchformer in the weights cache: "
                     f"`curate models pull synchformer-mmaudio`)")
            return None
        return Work(certify_items(ctx.out, read_rows(ctx.out, "clips")))

    def finish(self, ctx: Context, work: Work | None, result: StageResult | None) -> Outputs:
        if result is None:
            return Outputs(0)
        out = ctx.out
        table = result.table("certs")
        certs = {c["clip_id"]: c for c in (table.to_pylist() if table is not None else [])}
        write_manifest(out, "clips", _fill(read_rows(out, "clips"), certs))
        if schemas.has_manifest(out, "selected"):
            write_manifest(out, "selected", _fill(read_rows(out, "selected"), certs))
        if table is not None:
            summarize_failures("certify", table, ctx.echo)
        n = sum(c["status"] == schemas.STATUS_OK for c in certs.values())
        if n:
            ctx.echo(f"certify: {n} clips certified")
        return Outputs(n)


STAGE = Certify()
