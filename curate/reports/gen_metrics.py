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
