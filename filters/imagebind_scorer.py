"""ImageBind's preprocessing and the scorer the ``imagebind`` filter uses (``ImageBindScorer``):
frames, 2-s waveforms and class names in, L2-normalised ImageBind embeddings out. The
architecture is ``filters.imagebind_model``; the filter (sampling, math) is ``filters.imagebind``.

Weights: Meta's ImageBind-huge checkpoint is licensed CC BY-NC 4.0 (non-commercial use only)
and is never downloaded by curate; see ``filters.imagebind_model.load_imagebind``.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from filters import precision as precision_mod
from filters.imagebind_model import ImageBind, ImageBindConfig, load_imagebind
from decoding.mel import imagebind_mel

log = logging.getLogger(__name__)

# ImageBind's vision transform (CLIP's normalisation constants)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224
SAMPLE_RATE = 16000
CONTEXT_LENGTH = 77


# ---------------------------------------------------------------- preprocessing


def preprocess_frames(frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB [N,H,W,3] -> float [N,3,224,224] as ImageBind's vision transform: resize the
    short side to 224 (bicubic, antialiased, like PIL), centre crop 224, scale to [0,1],
    CLIP mean/std. Frames of the decode grid are already 224x224, so only the last two steps
    change them."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [N,H,W,3], got {frames.dtype} {frames.shape}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    if (h, w) != (IMAGE_SIZE, IMAGE_SIZE):
        scale = IMAGE_SIZE / min(h, w)
        size = (max(IMAGE_SIZE, round(h * scale)), max(IMAGE_SIZE, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        top, left = (size[0] - IMAGE_SIZE) // 2, (size[1] - IMAGE_SIZE) // 2
        x = x[..., top:top + IMAGE_SIZE, left:left + IMAGE_SIZE].clamp(0.0, 1.0)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def preprocess_audio(waves: np.ndarray | Sequence[np.ndarray],
                     sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Mono float waveforms (2 s at 16 kHz each, [N, 32000] or a list) -> [N,1,128,204]
    normalised mel, through the shared Kaldi fbank ``decoding.mel.imagebind_mel``."""
    if isinstance(waves, np.ndarray) and waves.ndim != 2:
        raise ValueError(f"waves must be [N, samples], got shape {waves.shape}")
    if len(waves) == 0:
        raise ValueError("no waveforms given")
    mels = []
    for i, w in enumerate(waves):
        w = np.asarray(w)
        if not np.all(np.isfinite(w)):
            raise ValueError(f"waveform {i} has non-finite samples")
        mels.append(imagebind_mel(w.astype(np.float32, copy=False), sample_rate=sample_rate))
    return torch.stack(mels)


# ---------------------------------------------------------------- model wrapper


class ImageBindScorer:
    """ImageBind embeddings for the filter: frames, 2-s audio clips and class names in,
    L2-normalised float32 numpy [N, D] out. Batched, no grad; ``precision`` (``auto``: bf16
    autocast on CUDA, fp32 on CPU; see ``filters.precision``)."""

    #: inputs per forward: CPU as before; on CUDA large enough to fill the GPU (an image is
    #: 335 GFLOP: 128 of them are ~43 TFLOP a forward)
    CPU_BATCH, CUDA_BATCH = 32, 128

    def __init__(self, model: ImageBind, device: str | torch.device = "cpu", precision: str = "auto",
                 batch_size: int | None = None, is_random: bool = False) -> None:
        self.device = torch.device(device)
        self.precision = precision_mod.resolve(precision, self.device)
        if batch_size is None:
            batch_size = self.CUDA_BATCH if self.device.type == "cuda" else self.CPU_BATCH
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # fp32 weights: autocast casts them per op on CUDA (filters.precision)
        self.model = model.to(device=self.device, dtype=torch.float32).eval()
        self.batch_size = batch_size
        self.is_random = is_random
        self._tokenizer = None
        self._text_cache: dict[str, np.ndarray] = {}

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None, device: str | torch.device = "cpu",
                        precision: str = "auto", batch_size: int | None = None,
                        config: ImageBindConfig | None = None) -> "ImageBindScorer":
        """Meta's imagebind_huge.pth (CC BY-NC 4.0 weights); ``path`` None reads
        $CURATE_IMAGEBIND_CKPT. ``precision`` ``auto``: bf16 autocast on CUDA. ``config``:
        another architecture than ImageBind-huge (small test models)."""
        model = load_imagebind(path, device=torch.device(device), dtype=torch.float32, config=config)
        return cls(model, device=device, precision=precision, batch_size=batch_size)

    @classmethod
    def random(cls, config: ImageBindConfig | None = None, seed: int = 0,
               device: str | torch.device = "cpu", batch_size: int | None = None,
               precision: str = "auto") -> "ImageBindScorer":
        """RANDOM WEIGHTS (tiny config by default): for tests and the demo only; its scores
        mean nothing. ``is_random`` is True so callers can record it."""
        torch.manual_seed(seed)
        model = ImageBind(config or ImageBindConfig.tiny())
        log.warning("ImageBind scorer with RANDOM weights (seed %d): scores are meaningless", seed)
        return cls(model, device=device, batch_size=batch_size, is_random=True, precision=precision)

    @property
    def dim(self) -> int:
        return self.model.config.out_embed_dim

    def _batched(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> np.ndarray:
        out = []
        with torch.inference_mode(), precision_mod.compute(self.precision, self.device):
            for i in range(0, x.shape[0], self.batch_size):
                # (no channels-last: a ViT's one convolution is its patch embedding)
                chunk = precision_mod.to_device(x[i:i + self.batch_size], self.device)
                out.append(fn(chunk).float().cpu())
        return torch.cat(out).numpy()

    def embed_images(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB frames [N,H,W,3] (the 224x224 decode grid) -> [N, D]."""
        if len(frames) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self._batched(self.model.embed_vision, preprocess_frames(frames))

    def embed_audio(self, waves: np.ndarray | Sequence[np.ndarray],
                    sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """float32 mono waveforms [N, 32000] (2 s at 16 kHz) -> [N, D]."""
        return self._batched(self.model.embed_audio, preprocess_audio(waves, sample_rate))

    def tokenize(self, names: Sequence[str]) -> torch.Tensor:
        """CLIP BPE ids [M, 77] (open_clip's tokenizer, the one ImageBind uses)."""
        if self._tokenizer is None:
            from filters.torch_compat import import_open_clip

            self._tokenizer = import_open_clip().tokenizer.SimpleTokenizer(
                context_length=CONTEXT_LENGTH)
        return self._tokenizer(list(names), context_length=CONTEXT_LENGTH)

    def embed_text(self, names: Sequence[str]) -> np.ndarray:
        """Texts (class names as prompts, e.g. 'dog barking') -> [M, D]; cached per text."""
        if isinstance(names, str):
            raise ValueError("embed_text takes a list of strings, not a string")
        todo = [n for n in dict.fromkeys(names) if n not in self._text_cache]
        if todo:
            emb = self._batched(self.model.embed_text, self.tokenize(todo))
            self._text_cache.update(zip(todo, emb))
        if not names:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._text_cache[n] for n in names])
