"""The one place that copes with a torchvision wheel built for CUDA next to a CPU torch.

PyPI's torchvision 0.28.0 is a CUDA build. Next to the CPU torch 2.13.0 wheel its C++ ops
library fails to load, and ``import torchvision`` then dies registering fake kernels for
``torchvision::nms`` / ``torchvision::qnms``, ops whose schemas the C++ library would have
declared. open_clip and timm import torchvision only for transforms, never for those ops, so
we declare the two schemas ourselves (no kernels: calling them still fails loudly) and import
again. With a matching torchvision (any GPU machine) the first import succeeds and nothing
here runs.
"""
from __future__ import annotations

import sys

_LIB = None  # keeps the torch.library fragment alive for the life of the process


def import_torchvision():
    """Import torchvision, declaring the missing op schemas when its C++ ops did not load."""
    global _LIB
    try:
        import torchvision
        return torchvision
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    if _LIB is None:
        _LIB = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            _LIB.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision
    return torchvision


def import_open_clip():
    """open_clip, after making sure torchvision imports on this machine."""
    import_torchvision()
    import open_clip
    return open_clip
