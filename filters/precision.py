"""Numeric precision of the model filters (CLIP, ImageBind, the sync classifier), one place.

``auto`` (the default of every scorer): **bf16 autocast on CUDA**, plain fp32 on CPU. On CPU
nothing changes: the same fp32 ops as before, so CPU scores stay byte-identical. On CUDA the
weights stay fp32 and ``torch.autocast(dtype=bfloat16)`` runs matrix products and
convolutions in bf16 with fp32 accumulation (softmax, layer norm and reductions stay fp32),
which is what H100/H200 tensor cores are fast at (about 790 dense TFLOP/s on an H200 against
about 60 in fp32). Scores are computed from the fp32 outputs either way.

``fp32``: true fp32, TF32 switched off for matmuls and cuDNN while the model runs.
``tf32``: fp32 tensors, TF32 tensor-core matmuls / convolutions (10-bit mantissa inputs).
``bf16``: autocast on any device (CPU too: how ``benchmarks/device_check.py --smoke``
measures the bf16 error here).

Tolerance (``BF16_TOLERANCE``): the largest |bf16 - fp32| accepted per score column on the
same windows. Scores are cosines (CLIP frame differences, ImageBind agreement) and softmax
probabilities (P_sync) in [0, 1]; bf16 rounds each product input to 8 significant bits
(relative 2^-9) and accumulations stay fp32, so a cosine of two embeddings moves by about
that relative error times the depth's error growth. The bounds below are the accepted error,
not a measurement: ``benchmarks/device_check.py`` measures the actual error (CUDA bf16
against CPU fp32 on the same windows; ``--smoke``: CPU bf16 against CPU fp32 with the small
models) and reports it next to these bounds. A window within the tolerance of a threshold
may flip; nothing else may.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

PRECISIONS = ("auto", "fp32", "tf32", "bf16")

#: largest accepted |bf16 - fp32| per score column (see the module doc)
BF16_TOLERANCE: dict[str, float] = {
    "pixel_diff": 0.0, "amplitude": 0.0,          # arithmetic on the grid: no model
    "clip_diff": 0.01, "imagebind_ia": 0.02, "imagebind_it": 0.02,
    "sync_a2v": 0.03, "sync_v2a": 0.03,
}


def resolve(precision: str, device) -> str:
    """``auto`` -> ``bf16`` on CUDA, ``fp32`` elsewhere; other names are checked and kept."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if _device_type(device) == "cuda" else "fp32"
    return precision


def _device_type(device) -> str:
    return getattr(device, "type", str(device).split(":")[0])


@contextlib.contextmanager
def compute(precision: str, device) -> Iterator[None]:
    """The context a model's forward runs in for a resolved ``precision``."""
    import torch

    kind = _device_type(device)
    if precision == "bf16":
        with torch.autocast(kind, dtype=torch.bfloat16):
            yield
        return
    if kind != "cuda":           # CPU fp32 / tf32: exactly the ops of before
        yield
        return
    tf32 = precision == "tf32"
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def to_device(x, device):
    """A host tensor onto ``device``: through pinned memory without blocking on CUDA (the
    copy overlaps the preprocessing of the next batch), unchanged on CPU."""
    if _device_type(device) != "cuda" or x.device.type != "cpu":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def channels_last(x, device):
    """Channels-last memory format on CUDA for 4-D / 5-D conv inputs (cuDNN's fast bf16
    kernels are NHWC); unchanged on CPU, so CPU results do not move."""
    import torch

    if _device_type(device) != "cuda":
        return x
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x
