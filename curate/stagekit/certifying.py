"""What the certify stage and repair's rescore share (``curate.stages.certify``,
``curate.stagekit.repair``): Synchformer's weights of a run, the stateful worker that loads the
model once and certifies a clip, and the stage specs and items of both runs.
"""
from __future__ import annotations

import functools
from pathlib import Path

from manifests import schemas
from curate.config.run import Run
from curate.execution.spec import StageSpec
from curate.stagekit.declare import spec_kw
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
    return [clip_item(out, key, downloads[selected[key]["source_id"]], c["cut_start"], c["cut_end"],
                      audio_shift=c["av_shift_ms"] / 1000.0)
            for key, c in cuts.items()]


def clip_item(out: str | Path, key: str, download: dict, start: float, end: float,
              **extra: float) -> dict:
    """One certify item: a clip of a download (its times in the segment, the segment's offset
    in the file and its end), identified by the file and those fields (``inputs``)."""
    fields = {"start": start, "end": end, "offset": download.get("seg_start") or 0.0,
              "seg_end": float(download.get("duration") or end), **extra}
    return {"key": key, "src": download["path"], **fields,
            "inputs": {"src": file_id(download["path"], out), **fields}}
