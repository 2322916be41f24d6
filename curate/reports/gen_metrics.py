"""`curate metrics`: generated-video metrics with the sync classifier and, when given, ImageBind.

The ImageBind scorer lives in ``filters``, which imports ``sync_classifier``; building it here
keeps ``sync_classifier`` free of ``filters`` (no package cycle).
"""
from __future__ import annotations

from pathlib import Path


def run_metrics(generated_dir: str | Path, reference_dir: str | Path, sync_checkpoint: str | Path,
                imagebind_checkpoint: str | Path | None = None, as_json: bool = False,
                device: str | None = None, protocol: str | None = None,
                image_size: int = 256) -> str:
    """``sync_classifier.generated_eval.run_metrics`` with an ImageBind scorer from a checkpoint."""
    import torch

    from sync_classifier.generated_eval import run_metrics as _run

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    scorer = None
    if imagebind_checkpoint:
        from filters.imagebind_scorer import ImageBindScorer
        scorer = ImageBindScorer.from_checkpoint(imagebind_checkpoint, device=dev)
    return _run(generated_dir, reference_dir, sync_checkpoint, scorer, as_json=as_json, device=dev,
                protocol=protocol, image_size=image_size)


def desync_metric(generated_dir: str | Path, reference_dir: str | Path, synchformer_checkpoint: str | Path,
                  device: str | None = None) -> dict:
    """DeSync as MMAudio's av-benchmark computes it, for each generated video with the same
    name in ``reference_dir``: the generated frames against the reference's audio (the audio
    the video was generated from), Synchformer's |offset| on the first and the last 4.8 s of the
    25-fps grid, averaged; then the mean over videos. Videos shorter than one 4.8-s context
    cannot be measured and are counted apart."""
    import torch

    from decoding.media import probe
    from filters import synchformer as sf
    from filters.synchformer_model import load_synchformer

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_synchformer(synchformer_checkpoint, device=dev)
    per_video, too_short = {}, []
    for gen in sorted(Path(generated_dir).glob("*.mp4")):
        ref = Path(reference_dir) / gen.name
        if not ref.exists():
            continue
        end = min(probe(gen)["duration"] or 0.0, probe(ref)["duration"] or 0.0)
        if end < sf.CONTEXT_S:
            too_short.append(gen.name)
            continue
        frames, _ = sf.decode_context_media(gen, 0.0, end)
        _, wave = sf.decode_context_media(ref, 0.0, end)
        per_video[gen.name] = sf.certify_media(model, frames, wave, dev)["desync_s"]
    mean = float(sum(per_video.values()) / len(per_video)) if per_video else None
    return {"DeSync": mean, "measured": len(per_video), "too_short": too_short, "per_video": per_video}


def with_desync(text: str, desync: dict, as_json: bool) -> str:
    """``run_metrics``' output with the DeSync result added (a JSON key, or a text line)."""
    import json
    if as_json:
        return json.dumps({**json.loads(text), "desync": desync})
    value = "n/a" if desync["DeSync"] is None else f"{desync['DeSync']:.3f} s"
    return (f"{text}\nDeSync (Synchformer, av-benchmark protocol): {value} over {desync['measured']} "
            f"videos ({len(desync['too_short'])} shorter than 4.8 s not measured)")
