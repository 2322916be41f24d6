"""Our ImageBind (Girdhar et al., 2023) in plain torch, key-compatible with Meta's checkpoint.

Written from the architecture, not copied: the module *attribute names* follow Meta's model
so that the unchanged official ``imagebind_huge.pth`` state dict loads with ``strict=True``
(``tests/filters/test_imagebind.py`` checks keys and shapes against the reference at full size and
embeddings against it at a small size).

All six towers are built (vision, text, audio, depth, thermal, IMU) because strict loading of
the official file needs every key; curate uses vision, audio and text.

Per modality: preprocessor (patch stem or token embedding, CLS token, learned positions) ->
pre-norm transformer trunk -> head (final LayerNorm, CLS or end-of-text token, linear
projection to ``out_embed_dim``) -> postprocessor (L2 normalisation, then a logit scale:
learnable for text, fixed 20 for audio, 5 depth, 10 thermal, 5 IMU, none for vision).
``forward_modality`` returns what Meta's model returns (scaled); ``embed_*`` return the
L2-normalised embeddings, which is all that cosine similarities need.

Inference only: drop path (stochastic depth, 0.1 audio / 0.7 IMU in training) and dropout are
identities in eval mode and are not implemented.

Weights: Meta's ImageBind weights are licensed CC BY-NC 4.0 (non-commercial use only). This
module never downloads them; see ``load_imagebind``.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

CHECKPOINT_ENV = "CURATE_IMAGEBIND_CKPT"
CHECKPOINT_OPTION = "--imagebind-checkpoint"
CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
WEIGHTS_LICENSE = "CC BY-NC 4.0 (non-commercial use only)"

MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")
# Fixed logit scales of the postprocessors (Meta's values); text's is learned (init 1/0.07).
_FIXED_LOGIT_SCALE = {"audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0}
_MAX_LOGIT_SCALE = 100.0
_LN_EPS = 1e-6


@dataclass(frozen=True)
class ImageBindConfig:
    """Sizes of every tower. Defaults are ImageBind-huge (Meta's ``imagebind_huge()``)."""

    out_embed_dim: int = 1024
    vision_embed_dim: int = 1280
    vision_num_blocks: int = 32
    vision_num_heads: int = 16
    text_embed_dim: int = 1024
    text_num_blocks: int = 24
    text_num_heads: int = 16
    audio_embed_dim: int = 768
    audio_num_blocks: int = 12
    audio_num_heads: int = 12
    depth_embed_dim: int = 384
    depth_num_blocks: int = 12
    depth_num_heads: int = 8
    thermal_embed_dim: int = 768
    thermal_num_blocks: int = 12
    thermal_num_heads: int = 12
    imu_embed_dim: int = 512
    imu_num_blocks: int = 6
    imu_num_heads: int = 8
    # input geometry (fixed in the released model)
    image_size: int = 224
    video_frames: int = 2
    kernel_size: tuple[int, int, int] = (2, 14, 14)
    audio_kernel_size: int = 16
    audio_stride: int = 10
    audio_num_mel_bins: int = 128
    audio_target_len: int = 204
    depth_kernel_size: int = 16
    thermal_kernel_size: int = 16
    imu_kernel_size: int = 8
    imu_channels: int = 6
    imu_length: int = 2000
    context_length: int = 77
    vocab_size: int = 49408

    def __post_init__(self) -> None:
        for m in MODALITIES:
            dim, heads = getattr(self, f"{m}_embed_dim"), getattr(self, f"{m}_num_heads")
            if dim % heads:
                raise ValueError(f"{m}: embed dim {dim} not divisible by {heads} heads")

    @classmethod
    def tiny(cls) -> "ImageBindConfig":
        """A few-hundred-k-parameter model with the real input geometry, for tests and demos."""
        small = {}
        for m in MODALITIES:
            small.update({f"{m}_embed_dim": 32, f"{m}_num_blocks": 2, f"{m}_num_heads": 4})
        return cls(out_embed_dim=24, **small)


def _conv_out(n: int, kernel: int, stride: int) -> int:
    return (n - kernel) // stride + 1


# ---------------------------------------------------------------- small building blocks


class _RepeatToFrames(nn.Module):
    """Images [B,C,H,W] -> clips [B,C,T,H,W] by repeating the image T times (ImageBind's
    'repeat' padding), so the 2x14x14 conv stem treats a still image as a 2-frame video."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        elif x.ndim != 5:
            raise ValueError(f"vision input must be [B,3,H,W] or [B,3,T,H,W], got {tuple(x.shape)}")
        if x.shape[2] == 1:
            x = x.repeat(1, 1, self.frames, 1, 1)
        return x


class _PatchStem(nn.Module):
    """Projection (conv or linear) to tokens [B, L, D], optionally LayerNorm-ed."""

    def __init__(self, proj: nn.Module, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.proj = proj
        self.norm_layer = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return x if self.norm_layer is None else self.norm_layer(x)


class _Positions(nn.Module):
    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))


class _PatchPreprocessor(nn.Module):
    """Patch tokens with a CLS token in front and learned positions added.

    ``stem_name`` is the attribute holding the stem ('rgbt_stem', or 'depth_stem' for depth)
    because the checkpoint's keys use those names.
    """

    def __init__(self, stem: _PatchStem, stem_name: str, num_patches: int, dim: int) -> None:
        super().__init__()
        self.add_module(stem_name, stem)
        self._stem_name = stem_name
        self.num_patches = num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding_helper = _Positions(num_patches + 1, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        tokens = getattr(self, self._stem_name)(x)
        if tokens.shape[1] != self.num_patches:
            # no position interpolation: the released model has one input geometry per tower
            raise ValueError(f"input {tuple(x.shape)} gives {tokens.shape[1]} patches, "
                             f"the model expects {self.num_patches}")
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embedding_helper.pos_embed
        return tokens, {}


class _ImuPreprocessor(nn.Module):
    """IMU [B, 6, 2000] cut into 8-sample chunks -> 250 tokens of 48 values, linear + LN."""

    def __init__(self, cfg: ImageBindConfig) -> None:
        super().__init__()
        dim, k = cfg.imu_embed_dim, cfg.imu_kernel_size
        self.kernel_size = k
        self.num_patches = cfg.imu_length // k
        self.imu_stem = _PatchStem(nn.Linear(cfg.imu_channels * k, dim, bias=False),
                                   nn.LayerNorm(dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if x.ndim != 3:
            raise ValueError(f"imu input must be [B, channels, samples], got {tuple(x.shape)}")
        chunks = x.unfold(-1, self.kernel_size, self.kernel_size)  # [B, C, L, k]
        chunks = chunks.permute(0, 2, 1, 3).reshape(x.shape[0], chunks.shape[2], -1)
        if chunks.shape[1] != self.num_patches:
            raise ValueError(f"imu input {tuple(x.shape)} gives {chunks.shape[1]} chunks, "
                             f"the model expects {self.num_patches}")
        tokens = self.imu_stem.norm_layer(self.imu_stem.proj(chunks))
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embed, {}


class _TextPreprocessor(nn.Module):
    """CLIP-style: token embedding + learned positions; the head pools the end-of-text token,
    which has the highest id (49407) in every row, hence ``argmax``."""

    def __init__(self, cfg: ImageBindConfig) -> None:
        super().__init__()
        n, dim = cfg.context_length, cfg.text_embed_dim
        self.context_length = n
        self.token_embedding = nn.Embedding(cfg.vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, n, dim))
        # Meta's model keeps its additive causal mask as a (persistent) buffer, so the
        # checkpoint holds it; we keep it for strict loading but attend with is_causal.
        self.register_buffer("mask", torch.full((n, n), float("-inf")).triu_(1))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if tokens.ndim != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"text tokens must be [B, {self.context_length}], "
                             f"got {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"text tokens must be integer ids, got {tokens.dtype}")
        x = self.token_embedding(tokens) + self.pos_embed
        return x, {"eot": tokens.argmax(dim=-1)}


class _SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter layout (packed
    in-projection; optional learned extra key/value token appended after projection)."""

    def __init__(self, dim: int, heads: int, add_bias_kv: bool) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, dim))
            self.bias_v = nn.Parameter(torch.empty(1, 1, dim))
        else:
            self.bias_k = self.bias_v = None

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(b, 1, d)], dim=1)
            v = torch.cat([v, self.bias_v.expand(b, 1, d)], dim=1)
        q, k, v = (t.reshape(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2)
                   for t in (q, k, v))
        if causal and self.bias_k is not None:
            # no ImageBind tower combines the two (only text is causal, it has no bias k/v)
            raise ValueError("causal attention with a bias key/value token is not supported")
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, heads: int, add_bias_kv: bool) -> None:
        super().__init__()
        self.attn = _SelfAttention(dim, heads, add_bias_kv)
        self.norm_1 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.mlp = _Mlp(dim, 4 * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=_LN_EPS)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x), causal)
        return x + self.mlp(self.norm_2(x))


class _Trunk(nn.Module):
    def __init__(self, dim: int, blocks: int, heads: int, pre_ln: bool, add_bias_kv: bool) -> None:
        super().__init__()
        # a Sequential so the LayerNorm's keys are 'pre_transformer_layer.0.*' as in Meta's
        self.pre_transformer_layer = nn.Sequential(
            nn.LayerNorm(dim, eps=_LN_EPS) if pre_ln else nn.Identity())
        self.blocks = nn.Sequential(*[_Block(dim, heads, add_bias_kv) for _ in range(blocks)])

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = self.pre_transformer_layer(x)
        for block in self.blocks:
            x = block(x, causal)
        return x


class _SelectToken(nn.Module):
    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]


class _ClsHead(nn.Sequential):
    """LayerNorm -> CLS token -> (dropout, IMU only) -> linear projection."""

    def __init__(self, dim: int, out_dim: int, dropout: bool = False) -> None:
        layers = [nn.LayerNorm(dim, eps=_LN_EPS), _SelectToken(0)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        super().__init__(*layers, nn.Linear(dim, out_dim, bias=False))

    def forward(self, x: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


class _EotHead(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=_LN_EPS),
                                  nn.Linear(dim, out_dim, bias=False))

    def forward(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        return self.proj(x[torch.arange(x.shape[0], device=x.device), eot])


class _Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


class _LogitScale(nn.Module):
    """Multiplies by exp(log_logit_scale), capped at 100; a parameter when learnable (text),
    a persistent buffer otherwise (audio 20, depth 5, thermal 10, IMU 5)."""

    def __init__(self, init: float, learnable: bool) -> None:
        super().__init__()
        value = torch.full((), math.log(init))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=_MAX_LOGIT_SCALE) * x


# ---------------------------------------------------------------- the model


def _image_preprocessor(cfg: ImageBindConfig) -> _PatchPreprocessor:
    kt, kh, kw = cfg.kernel_size
    conv = nn.Conv3d(3, cfg.vision_embed_dim, kernel_size=cfg.kernel_size,
                     stride=cfg.kernel_size, bias=False)
    stem = _PatchStem(nn.Sequential(_RepeatToFrames(cfg.video_frames), conv))
    n = ((cfg.video_frames // kt) * (cfg.image_size // kh) * (cfg.image_size // kw))
    return _PatchPreprocessor(stem, "rgbt_stem", n, cfg.vision_embed_dim)


def _audio_preprocessor(cfg: ImageBindConfig) -> _PatchPreprocessor:
    dim, k, s = cfg.audio_embed_dim, cfg.audio_kernel_size, cfg.audio_stride
    stem = _PatchStem(nn.Conv2d(1, dim, kernel_size=k, stride=s, bias=False), nn.LayerNorm(dim))
    n = _conv_out(cfg.audio_num_mel_bins, k, s) * _conv_out(cfg.audio_target_len, k, s)
    return _PatchPreprocessor(stem, "rgbt_stem", n, dim)


def _single_channel_preprocessor(dim: int, k: int, size: int, stem_name: str) -> _PatchPreprocessor:
    stem = _PatchStem(nn.Conv2d(1, dim, kernel_size=k, stride=k, bias=False), nn.LayerNorm(dim))
    return _PatchPreprocessor(stem, stem_name, (size // k) ** 2, dim)


class ImageBind(nn.Module):
    """ImageBind with Meta's module layout (``modality_preprocessors``, ``modality_trunks``,
    ``modality_heads``, ``modality_postprocessors``, each a ModuleDict over the six
    modalities), so Meta's state dict loads strictly."""

    def __init__(self, config: ImageBindConfig | None = None) -> None:
        super().__init__()
        cfg = config or ImageBindConfig()
        self.config = cfg
        self.modality_preprocessors = nn.ModuleDict({
            "vision": _image_preprocessor(cfg),
            "text": _TextPreprocessor(cfg),
            "audio": _audio_preprocessor(cfg),
            "depth": _single_channel_preprocessor(cfg.depth_embed_dim, cfg.depth_kernel_size,
                                                  cfg.image_size, "depth_stem"),
            "thermal": _single_channel_preprocessor(cfg.thermal_embed_dim,
                                                    cfg.thermal_kernel_size, cfg.image_size,
                                                    "rgbt_stem"),
            "imu": _ImuPreprocessor(cfg),
        })
        self.modality_trunks = nn.ModuleDict({
            m: _Trunk(getattr(cfg, f"{m}_embed_dim"), getattr(cfg, f"{m}_num_blocks"),
                      getattr(cfg, f"{m}_num_heads"), pre_ln=(m == "vision"),
                      add_bias_kv=m not in ("vision", "text"))
            for m in MODALITIES})
        heads: dict[str, nn.Module] = {
            m: _ClsHead(getattr(cfg, f"{m}_embed_dim"), cfg.out_embed_dim, dropout=(m == "imu"))
            for m in MODALITIES if m != "text"}
        heads["text"] = _EotHead(cfg.text_embed_dim, cfg.out_embed_dim)
        self.modality_heads = nn.ModuleDict({m: heads[m] for m in MODALITIES})
        post: dict[str, nn.Module] = {"vision": _Normalize(),
                                      "text": nn.Sequential(_Normalize(), _LogitScale(1 / 0.07, True))}
        post.update({m: nn.Sequential(_Normalize(), _LogitScale(s, False))
                     for m, s in _FIXED_LOGIT_SCALE.items()})
        self.modality_postprocessors = nn.ModuleDict({m: post[m] for m in MODALITIES})
        self._init_random()
        self.eval()

    @torch.no_grad()
    def _init_random(self) -> None:
        """A usable random initialisation (tests, demo); a checkpoint overwrites all of it."""
        for name, p in self.named_parameters():
            if name.endswith(("pos_embed", "cls_token", "bias_k", "bias_v")):
                nn.init.normal_(p, std=0.02)
            elif name.endswith("in_proj_weight"):
                nn.init.xavier_uniform_(p)
            elif name.endswith("token_embedding.weight"):
                nn.init.normal_(p, std=0.02)

    def forward_modality(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Meta's forward for one modality: output as Meta's model returns it (normalised,
        then scaled by the modality's logit scale). Inputs with ndim >= 5 are
        [B, clips, ...]: clips are embedded separately and their outputs averaged."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        clips = x.ndim >= 5
        if clips:
            b, s = x.shape[:2]
            x = x.reshape(b * s, *x.shape[2:])
        if x.is_floating_point():
            x = x.to(next(self.modality_trunks[modality].parameters()).dtype)
        tokens, head_kw = self.modality_preprocessors[modality](x)
        tokens = self.modality_trunks[modality](tokens, causal=(modality == "text"))
        out = self.modality_heads[modality](tokens, **head_kw)
        out = self.modality_postprocessors[modality](out)
        if clips:
            out = out.reshape(b, s, -1).mean(dim=1)
        return out

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Same contract as Meta's ``ImageBindModel.forward``: {modality: input} -> outputs."""
        return {m: self.forward_modality(m, x) for m, x in inputs.items()}

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 embeddings [B, out_embed_dim]."""
        return F.normalize(self.forward_modality(modality, x).float(), dim=-1)

    def embed_vision(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: [N,3,224,224] CLIP-normalised (or [N,clips,3,224,224], averaged)."""
        return self.embed("vision", pixels)

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: [N,1,128,204] normalised log-mel (or [N,clips,1,128,204], averaged)."""
        return self.embed("audio", mel)

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [N,77] CLIP BPE ids (start token, text, end token, zero padding)."""
        return self.embed("text", tokens)


# ---------------------------------------------------------------- loading


def resolve_checkpoint(path: str | os.PathLike | None) -> Path:
    """The checkpoint path from the argument, else ``$CURATE_IMAGEBIND_CKPT``; a clear error
    naming both when neither points at a file."""
    raw = path if path not in (None, "") else os.environ.get(CHECKPOINT_ENV) or None
    hint = (f"Set {CHECKPOINT_OPTION} or {CHECKPOINT_ENV} to Meta's imagebind_huge.pth "
            f"(get it yourself from {CHECKPOINT_URL}; the weights are {WEIGHTS_LICENSE}). "
            "curate never downloads it.")
    if raw is None:
        raise FileNotFoundError(f"no ImageBind checkpoint given. {hint}")
    p = Path(raw).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"ImageBind checkpoint not found: {p}. {hint}")
    return p


def _read_state_dict(path: Path) -> dict:
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            # files in torch's legacy (non-zip) format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a file it cannot read
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"cannot read {path} as weights ({first}); check {CHECKPOINT_OPTION}") from e
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__} "
                         f"(check {CHECKPOINT_OPTION})")
    return state


def _fitted(path: Path, config: ImageBindConfig | None) -> ImageBind:
    """The model built on the meta device with the checkpoint's (memory-mapped) tensors
    assigned: strict on keys and shapes, no weight read or copied yet."""
    with torch.device("meta"):
        model = ImageBind(config)
    state = _read_state_dict(path)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"{path} is not an ImageBind checkpoint for this configuration "
                         f"({CHECKPOINT_OPTION}): {e}") from e
    return model


def check_checkpoint(checkpoint_path: str | os.PathLike | None,
                     config: ImageBindConfig | None = None) -> None:
    """``load_imagebind``'s checks (the file, its keys and shapes) without loading it."""
    _fitted(resolve_checkpoint(checkpoint_path), config)


def load_imagebind(checkpoint_path: str | os.PathLike | None, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32,
                   config: ImageBindConfig | None = None) -> ImageBind:
    """Load ImageBind from an unchanged ``imagebind_huge.pth`` state dict (strict).

    ``checkpoint_path`` None falls back to ``$CURATE_IMAGEBIND_CKPT``. Meta's ImageBind
    weights are licensed CC BY-NC 4.0: non-commercial use only; curate does not ship or
    download them (the official file is at ``CHECKPOINT_URL``). The model is built on the
    meta device and the checkpoint tensors are assigned, so no time or memory goes into a
    random initialisation of 1.2 B parameters. Returns the model in eval mode.
    """
    path = resolve_checkpoint(checkpoint_path)
    model = _fitted(path, config)
    model = model.to(device=device, dtype=dtype).eval()
    log.info("loaded ImageBind from %s (%s, %s); weights licence: %s",
             path, device, dtype, WEIGHTS_LICENSE)
    return model
