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

import functools
from pathlib import Path

from manifests import schemas
from manifests.schemas import read_rows, write_manifest
from curate.config.run import Run
from curate.execution.checkpoints import StageResult
from curate.execution.spec import StageSpec
from curate.stagekit.declare import Context, Outputs, Stage, Work, spec_kw, summarize_failures
from curate.stagekit.inputs import file_id, ok_downloads

OPTION = "synchformer_checkpoint"
FLAG = "--synchformer-checkpoint"


def certify_weights(run: Run) -> str | None:
    """The Synchformer weights of the run: the option's file (or a weights row's name), else
    the cached file (its pull record checked); None when neither."""
    from curate.config.models import command_weights
    return command_weights("synchformer", run.options.get(OPTION), FLAG)


def _device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _factory(checkpoint: str):
    from filters.synchformer import certify_clip
    from filters.synchformer_model import load_synchformer
    device = _device()
    model = load_synchformer(checkpoint, device=device)

    def fn(item: dict) -> dict:
        cert, note = certify_clip(model, item["src"], item["start"], item["end"], item["seg_end"],
                                  offset=item["offset"], device=device,
                                  audio_shift=item.get("audio_shift") or 0.0)
        return {"certs": [{"clip_id": item["key"], **cert, schemas.CERT_NOTE: note,
                           "status": schemas.STATUS_OK, "error": None}]}
    return fn


def _error(item: dict, error: str) -> dict:
    return {"certs": [{"clip_id": item["key"], "status": schemas.STATUS_FAILED, "error": error}]}


def certify_spec(run: Run) -> StageSpec:
    """One stateful worker per device (the model loads once); the weights identify the results."""
    from curate.config.models import _file_ident
    ckpt = certify_weights(run)
    return StageSpec("certify", functools.partial(_factory, ckpt), _error, stateful=True,
                     params={"weights": _file_ident(ckpt) if ckpt else None, "convention": "authors"},
                     **spec_kw(run, "certify"))


def rescore_spec(run: Run) -> StageSpec:
    """Synchformer on repaired clips (``curate.stagekit.repair``): the certificate's model, its
    own checkpoint folder."""
    import dataclasses
    return dataclasses.replace(certify_spec(run), name="rescore", **spec_kw(run, "rescore"))


def rescore_items(out: str | Path, cuts: dict[str, dict], selected: dict[str, dict]) -> list[dict]:
    """One item per repaired cut (keyed by its sample key): the frames it was cut on and its
    source's audio at the applied shift, which is the repaired clip's audio to the sample
    (``curate verify`` checks it); a clip shorter than a context is measured, as its
    certificate was, on 4.8 s of its segment centred on it."""
    downloads = {d["source_id"]: d for d in ok_downloads(out)}
    items = []
    for key, c in cuts.items():
        d = downloads[selected[key]["source_id"]]
        offset, seg_end = d.get("seg_start") or 0.0, float(d.get("duration") or c["cut_end"])
        item = {"start": c["cut_start"], "end": c["cut_end"], "offset": offset, "seg_end": seg_end,
                "audio_shift": c["av_shift_ms"] / 1000.0}
        items.append({"key": key, "src": d["path"], **item,
                      "inputs": {"src": file_id(d["path"], out), **item}})
    return items


def certify_items(out: str | Path, clips: list[dict]) -> list[dict]:
    """One item per ok merged clip whose download is ok."""
    downloads = {d["source_id"]: d for d in ok_downloads(out)}
    items = []
    for c in clips:
        d = downloads.get(c["source_id"])
        if c["status"] != schemas.STATUS_OK or d is None:
            continue
        offset, seg_end = d.get("seg_start") or 0.0, float(d.get("duration") or c["end"])
        items.append({"key": c["clip_id"], "src": d["path"], "start": c["start"], "end": c["end"],
                      "offset": offset, "seg_end": seg_end,
                      "inputs": {"src": file_id(d["path"], out), "start": c["start"], "end": c["end"],
                                 "offset": offset, "seg_end": seg_end}})
    return items


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
