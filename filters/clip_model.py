"""CLIP image features for ``clip_diff``, through open_clip.

The seed does not name the CLIP model; the default is ``ViT-B-32`` with the ``openai``
weights (the common choice of that period), and both are options (``--clip-model``,
``--clip-pretrained``). These machines reach no model hub, so a weight download fails:
that is turned into an error naming the options, including ``--clip-checkpoint`` for a local
checkpoint file. ``ClipScorer.random`` builds a randomly initialised model (ViT-B-32 or a
tiny ViT) for the demo and tests: its scores mean nothing.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from filters import precision as precision_mod
from filters.torch_compat import import_open_clip

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
TINY = "tiny"
OPTIONS_HINT = ("set --clip-model/--clip-pretrained to weights available offline, or pass a "
                "local checkpoint file with --clip-checkpoint")


class ClipWeightsError(RuntimeError):
    """CLIP weights could not be found or loaded."""


def _tiny_clip(open_clip):
    """A 2-layer ViT CLIP (patch 32, width 64): same code path as ViT-B-32, ~100x smaller."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    vision = CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=32, image_size=224)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=1)
    return CLIP(embed_dim=64, vision_cfg=vision, text_cfg=text)


def resize_crop_like_open_clip(frame: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> ``[size, size, 3]`` as torchvision's ``Resize(size, BICUBIC)`` +
    ``CenterCrop(size)`` do on a PIL image (open_clip's eval transform, resize_mode
    "shortest"): long side ``int(size * long / short)``, crop offsets rounded."""
    from PIL import Image
    h, w = frame.shape[:2]
    short, long = min(h, w), max(h, w)
    new_long = int(size * long / short)
    nw, nh = (size, new_long) if w <= h else (new_long, size)
    img = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return np.asarray(img)[top:top + size, left:left + size]


class ClipScorer:
    """Batched CLIP image embeddings of uint8 frames."""

    #: frames per forward: CPU as before; on CUDA large enough to fill the GPU (ViT-B/32 is
    #: 8.8 GFLOP a frame). Scoring embeds one segment's frames per call (``curate.ops.scoring``
    #: runs per-segment forward passes for determinism), chunked by this size
    CPU_BATCH, CUDA_BATCH = 64, 512

    def __init__(self, model, device: str = "cpu", batch_size: int | None = None, precision: str = "auto"):
        import torch
        open_clip = import_open_clip()
        self.torch = torch
        self.device = torch.device(device)
        # bf16 autocast on CUDA, fp32 on CPU (filters.precision)
        self.precision = precision_mod.resolve(precision, self.device)
        self.model = model.to(self.device).eval()
        self.batch_size = int(batch_size or (self.CUDA_BATCH if self.device.type == "cuda" else self.CPU_BATCH))
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        pp = getattr(model.visual, "preprocess_cfg", None) or {}
        mean = pp.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = pp.get("std", open_clip.OPENAI_DATASET_STD)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model: str = DEFAULT_MODEL, pretrained: str = DEFAULT_PRETRAINED,
                        device: str = "cpu", cache_dir: str | None = None,
                        batch_size: int | None = None, precision: str = "auto") -> "ClipScorer":
        """open_clip model ``model`` with weights ``pretrained`` (a tag or a local file path)."""
        open_clip = import_open_clip()
        if model not in open_clip.list_models():
            raise ClipWeightsError(f"unknown CLIP model {model!r} (--clip-model); "
                                   f"open_clip knows e.g. {open_clip.list_models()[:8]}")
        try:
            m = open_clip.create_model(model, pretrained=pretrained, device="cpu",
                                       cache_dir=cache_dir, require_pretrained=True)
        except Exception as e:  # hub/network/file errors come in many types
            where = f"file {pretrained}" if os.path.sep in str(pretrained) else f"tag {pretrained!r}"
            raise ClipWeightsError(
                f"cannot load CLIP {model} weights ({where}, cache_dir={cache_dir}): "
                f"{type(e).__name__}: {e}. No model hub is reachable here: {OPTIONS_HINT}") from e
        log.info("CLIP %s loaded with weights %s", model, pretrained)
        return cls(m, device=device, batch_size=batch_size, precision=precision)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, model: str = DEFAULT_MODEL, device: str = "cpu",
                        batch_size: int | None = None, precision: str = "auto") -> "ClipScorer":
        """A local checkpoint file (open_clip / OpenAI format) for architecture ``model``.

        ``model="tiny"``: a state dict saved from ``ClipScorer.random().model`` (tests, demo).
        """
        p = Path(path)
        if not p.is_file():
            raise ClipWeightsError(f"CLIP checkpoint {p} does not exist (--clip-checkpoint)")
        if model != TINY:
            return cls.from_pretrained(model, str(p), device=device, batch_size=batch_size,
                                       precision=precision)
        import torch
        m = _tiny_clip(import_open_clip())
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
            m.load_state_dict(state.get("state_dict", state))
        except Exception as e:  # corrupt file, wrong architecture...
            raise ClipWeightsError(f"cannot load CLIP checkpoint {p} for model {model!r}: {e} "
                                   f"(check --clip-checkpoint / --clip-model)") from e
        return cls(m, device=device, batch_size=batch_size, precision=precision)

    @classmethod
    def random(cls, model: str = TINY, seed: int = 0, device: str = "cpu",
               batch_size: int | None = None, precision: str = "auto") -> "ClipScorer":
        """Randomly initialised CLIP (``"tiny"`` or any open_clip model name): demo/tests only."""
        import torch
        open_clip = import_open_clip()
        torch.manual_seed(seed)
        m = _tiny_clip(open_clip) if model == TINY else open_clip.create_model(model, pretrained=None)
        return cls(m, device=device, batch_size=batch_size, precision=precision)

    # -- embedding ----------------------------------------------------------------------
    def _prep(self, frames: np.ndarray):
        """open_clip's own preprocessing (``create_model_and_transforms``'s ``preprocess``):
        short side to ``image_size`` (PIL bicubic, antialiased), centre crop, /255, mean/std.

        Grid frames are already ``image_size`` square and skip the resize (PIL returns them
        unchanged too); other sizes go through the same PIL resize, so the tensors are equal
        (``tests/filters/test_clip_preproc.py``).
        """
        if frames.shape[1:3] != (self.image_size, self.image_size):
            frames = np.stack([resize_crop_like_open_clip(f, self.image_size) for f in frames])
        x = precision_mod.to_device(self.torch.from_numpy(np.ascontiguousarray(frames)), self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - self.mean) / self.std
        return x

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``[N, H, W, 3]`` RGB -> float32 ``[N, D]`` (unnormalised image features)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"CLIP needs uint8 frames [N, H, W, 3], got {frames.dtype} {frames.shape}")
        out = []
        with self.torch.inference_mode(), precision_mod.compute(self.precision, self.device):
            for i in range(0, len(frames), self.batch_size):
                f = self.model.encode_image(self._prep(frames[i:i + self.batch_size]))
                out.append(f.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(out).astype(np.float32)

    @property
    def dim(self) -> int:
        return int(self.model.visual.output_dim)
