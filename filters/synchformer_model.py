"""Our Synchformer (Iashin et al., 2024) in plain torch, key-compatible with the authors' weights.

Written from the architecture, not copied. Module *attribute names* follow the authors'
model so that their checkpoints load with ``strict=True``: the training checkpoint
``24-01-04T16-39-21.pt`` (and the other offset checkpoints of their README: a dict whose
``model`` entry is the state dict) and MMAudio's ``synchformer_state_dict.pth`` (that state dict
saved alone). ``tests/filters/test_synchformer.py`` checks every key and shape against the
authors' full-size model and the logits against their forward pass at a reduced size, with
fixtures their own code produced (``tests/fixtures/synchformer/``).

The model, for one 4.8-s context cut into S segments of 16 frames (0.64 s, 50% overlap):
- video: per segment, MotionFormer (ViT-B/16 with divided space-time attention on 2x16x16
  tubelets, so 8 x 14 x 14 tokens), its final LayerNorm, then one encoder layer with a CLS
  token pooling each of the 8 time steps over space -> 8 tokens per segment;
- audio: per segment, AST (ViT-B on a 128 x 66 log-mel, 16x16 patches with stride 10, so
  12 x 6 patches behind a CLS and a distillation token), then one encoder layer pooling each
  of the 6 time steps over frequency -> 6 tokens per segment;
- both projected, concatenated as ``[OFF, video tokens, MOD, audio tokens]`` with learned
  positions, a 3-layer pre-norm transformer, and a linear head on OFF: 21 offset classes.

Inference only: dropout and drop path are identities in eval mode and are not modelled.
Weights: the authors' code and weights are MIT licensed; curate never downloads them.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

CHECKPOINT_OPTION = "--synchformer-checkpoint"
CHECKPOINT_ENV = "CURATE_SYNCHFORMER_CKPT"
WEIGHTS_LICENSE = "MIT (v-iashin/Synchformer)"
#: the small Synchformer-shaped model the demo certifies with, trained by
#: ``benchmarks/train_synchformer_small.py`` on generated flash/beep events (package data; that
#: script's docstring gives the command and seed). Our saved form names its sizes.
DEMO_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "synchformer_demo_small.pt"
#: where the weights are published (never fetched by curate: the user places the file)
CHECKPOINT_SOURCES = ("the Synchformer README's 24-01-04T16-39-21.pt",
                      "MMAudio's release ext_weights/synchformer_state_dict.pth")


@dataclass(frozen=True)
class SynchformerConfig:
    """Sizes. Defaults are the released model (configs/sync.yaml of the authors)."""

    video_dim: int = 768
    video_depth: int = 12
    video_heads: int = 12
    audio_dim: int = 768
    audio_depth: int = 12
    audio_heads: int = 12
    dim: int = 768
    layers: int = 3
    heads: int = 8
    n_classes: int = 21
    n_segments: int = 14
    mlp_ratio: int = 4
    #: frame size the video encoder takes (the released model: 224; our small demo model
    #: takes the 224 crop reduced by area averaging)
    image: int = 224

    @property
    def n_tokens(self) -> int:
        """OFF + 8 video tokens per segment + MOD + 6 audio tokens per segment."""
        return 1 + self.n_segments * VIDEO_T + 1 + self.n_segments * AUDIO_T


IMAGE = 224
PATCH = 16
TUBELET = 2
FRAMES = 16
VIDEO_T = FRAMES // TUBELET           # time tokens per video segment
MELS = 128
SPEC_T = 66                           # spectrogram frames per audio segment
AUDIO_STRIDE = 10
AUDIO_F = (MELS - PATCH) // AUDIO_STRIDE + 1     # 12
AUDIO_T = (SPEC_T - PATCH) // AUDIO_STRIDE + 1   # 6


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention over the last two dims (scale 1/sqrt(head dim))."""
    return F.scaled_dot_product_attention(q, k, v)


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _PatchEmbed(nn.Module):
    """A projection kept only so the released state dict loads (MotionFormer embeds
    tubelets with ``patch_embed_3d``; this 2-D one is never applied)."""

    def __init__(self, dim: int, kernel: tuple[int, ...]):
        super().__init__()
        conv = nn.Conv3d if len(kernel) == 3 else nn.Conv2d
        self.proj = conv(3, dim, kernel_size=kernel, stride=kernel)


class _DividedAttention(nn.Module):
    """Attention within groups of tokens (the same patch over time, or one frame over space).

    The CLS token (index 0) attends to every token; each patch token attends to its group
    plus the CLS token."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, over_time: bool) -> torch.Tensor:
        b, n, d = x.shape
        h, hd = self.heads, d // self.heads
        q, k, v = (t.reshape(b, n, h, hd).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        cls_out = _attend(q[:, :, :1], k, v)                       # (b, h, 1, hd)
        # patch tokens are ordered (frame, patch): group them by frame (attention over space)
        # or by patch (attention over time); each group also sees the CLS key and value
        rest = [t[:, :, 1:].reshape(b, h, VIDEO_T, (n - 1) // VIDEO_T, hd) for t in (q, k, v)]
        if over_time:
            rest = [t.transpose(2, 3) for t in rest]
        groups = rest[0].shape[2]
        ck, cv = (t[:, :, :1].unsqueeze(2).expand(b, h, groups, 1, hd) for t in (k, v))
        out = _attend(rest[0], torch.cat((ck, rest[1]), 3), torch.cat((cv, rest[2]), 3))
        if over_time:
            out = out.transpose(2, 3)
        out = torch.cat((cls_out, out.reshape(b, h, n - 1, hd)), dim=2)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _DividedBlock(nn.Module):
    """Time attention, then space attention, then the MLP; pre-norm with residuals."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _DividedAttention(dim, heads)
        self.timeattn = _DividedAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, mlp_ratio * dim)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x), over_time=True)
        x = x + self.attn(self.norm1(x), over_time=False)
        return x + self.mlp(self.norm2(x))


class _PoolingLayer(nn.TransformerEncoderLayer):
    """One pre-norm encoder layer (torch's) behind a learned CLS token; returns the CLS output."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__(d_model=dim, nhead=heads, dim_feedforward=mlp_ratio * dim, dropout=0.0,
                         activation=nn.GELU(), batch_first=True, norm_first=True,
                         layer_norm_eps=1e-6)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return super().forward(x)[:, 0]


class MotionFormer(nn.Module):
    """Video encoder: (N, 3, 16, 224, 224) -> (N, 8, D), one token per tubelet time step."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: int, image: int = IMAGE):
        super().__init__()
        self.patches = (image // PATCH) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patches + 1, dim))
        self.temp_embed = nn.Parameter(torch.zeros(1, VIDEO_T, dim))
        self.patch_embed = _PatchEmbed(dim, (PATCH, PATCH))
        self.patch_embed_3d = _PatchEmbed(dim, (TUBELET, PATCH, PATCH))
        self.blocks = nn.ModuleList(_DividedBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.spatial_attn_agg = _PoolingLayer(dim, heads, mlp_ratio)

    def _positions(self) -> torch.Tensor:
        # the same spatial position for every frame plus the frame's own temporal embedding
        space = self.pos_embed[:, 1:].repeat(1, VIDEO_T, 1)
        time = self.temp_embed.repeat_interleave(self.patches, dim=1)
        return torch.cat((self.pos_embed[:, :1], space + time), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.patch_embed_3d.proj(x).flatten(2).transpose(1, 2)    # (N, 8*196, D)
        x = torch.cat((self.cls_token.expand(n, -1, -1), x), dim=1) + self._positions()
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x[:, 1:])                                        # (N, 8*196, D)
        d = x.shape[-1]
        x = x.reshape(n * VIDEO_T, self.patches, d)
        return self.spatial_attn_agg(x).reshape(n, VIDEO_T, d)


class _ASTEmbeddings(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position_embeddings = nn.Parameter(torch.zeros(1, AUDIO_F * AUDIO_T + 2, dim))
        self.patch_embeddings = nn.Module()
        self.patch_embeddings.projection = nn.Conv2d(1, dim, PATCH, stride=AUDIO_STRIDE)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """spec (N, 128 mels, 66 frames) -> (N, 2 + 12*6, D), patches in (freq, time) order."""
        x = self.patch_embeddings.projection(spec.unsqueeze(1)).flatten(2).transpose(1, 2)
        n = x.shape[0]
        aux = (self.cls_token.expand(n, -1, -1), self.distillation_token.expand(n, -1, -1))
        return torch.cat((*aux, x), dim=1) + self.position_embeddings


class _ASTLayer(nn.Module):
    """A pre-norm ViT layer with the Hugging Face AST attribute names."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.attention = nn.Module()
        for name in ("query", "key", "value"):
            setattr(self.attention.attention, name, nn.Linear(dim, dim))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(dim, dim)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(dim, mlp_ratio * dim)
        self.output = nn.Module()
        self.output.dense = nn.Linear(mlp_ratio * dim, dim)
        self.layernorm_before = nn.LayerNorm(dim, eps=1e-12)
        self.layernorm_after = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        y = self.layernorm_before(x)
        att = self.attention.attention
        q, k, v = (getattr(att, m)(y).reshape(b, n, self.heads, -1).transpose(1, 2)
                   for m in ("query", "key", "value"))
        y = _attend(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.attention.output.dense(y)
        y = F.gelu(self.intermediate.dense(self.layernorm_after(x)))
        return x + self.output.dense(y)


class AST(nn.Module):
    """Audio encoder: (N, 128, 66) log-mel -> (N, 6, D), one token per time patch."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.ast = nn.Module()
        self.ast.embeddings = _ASTEmbeddings(dim)
        self.ast.encoder = nn.Module()
        self.ast.encoder.layer = nn.ModuleList(_ASTLayer(dim, heads, mlp_ratio) for _ in range(depth))
        self.ast.layernorm = nn.LayerNorm(dim, eps=1e-12)
        self.freq_attn_agg = _PoolingLayer(dim, heads, mlp_ratio)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.ast.embeddings(spec)
        for layer in self.ast.encoder.layer:
            x = layer(x)
        x = self.ast.layernorm(x)[:, 2:]                           # drop CLS and distillation
        n, _, d = x.shape
        # (N, f*t, D) in (freq, time) order -> one sequence over frequency per time step
        x = x.reshape(n, AUDIO_F, AUDIO_T, d).transpose(1, 2).reshape(n * AUDIO_T, AUDIO_F, d)
        return self.freq_attn_agg(x).reshape(n, AUDIO_T, d)


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.key = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (m(x).reshape(b, n, self.heads, -1).transpose(1, 2)
                   for m in (self.query, self.key, self.value))
        return self.proj(_attend(q, k, v).transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.attn = _SelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GlobalTransformer(nn.Module):
    """``[OFF, video, MOD, audio]`` -> offset logits from the OFF token."""

    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        d = cfg.dim
        self.vis_in_lnorm = nn.LayerNorm(d)
        self.aud_in_lnorm = nn.LayerNorm(d)
        self.OFF_tok = nn.Parameter(torch.zeros(1, 1, d))
        self.MOD_tok = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_emb_cfg = nn.Module()   # the authors' attribute name, kept for the keys
        self.pos_emb_cfg.pos_emb = nn.Parameter(torch.zeros(1, cfg.n_tokens, d))
        self.blocks = nn.Sequential(*(_Block(d, cfg.heads) for _ in range(cfg.layers)))
        self.ln_f = nn.LayerNorm(d)
        self.off_head = nn.Linear(d, cfg.n_classes)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        b = v.shape[0]
        x = torch.cat((self.OFF_tok.expand(b, -1, -1), self.vis_in_lnorm(v),
                       self.MOD_tok.expand(b, -1, -1), self.aud_in_lnorm(a)), dim=1)
        x = self.ln_f(self.blocks(x + self.pos_emb_cfg.pos_emb))
        return self.off_head(x[:, 0])


class Synchformer(nn.Module):
    """video (B, S, 16, 3, 224, 224) normalised, audio (B, S, 1, 128, 66) -> logits (B, 21)."""

    def __init__(self, cfg: SynchformerConfig | None = None):
        super().__init__()
        cfg = cfg or SynchformerConfig()
        self.cfg = cfg
        self.vfeat_extractor = MotionFormer(cfg.video_dim, cfg.video_depth, cfg.video_heads,
                                            cfg.mlp_ratio, cfg.image)
        self.afeat_extractor = AST(cfg.audio_dim, cfg.audio_depth, cfg.audio_heads, cfg.mlp_ratio)
        self.vproj = nn.Linear(cfg.video_dim, cfg.dim)
        self.aproj = nn.Linear(cfg.audio_dim, cfg.dim)
        self.transformer = GlobalTransformer(cfg)

    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, S, 16, 3, H, W) -> (B, S, 8, D_video); segments are encoded independently."""
        b, s = video.shape[:2]
        x = video.flatten(0, 1).transpose(1, 2)                       # (BS, 3, 16, H, W)
        return self.vfeat_extractor(x).reshape(b, s, VIDEO_T, -1)

    def audio_features(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, S, 1, 128, 66) -> (B, S, 6, D_audio)."""
        b, s = spec.shape[:2]
        return self.afeat_extractor(spec.reshape(b * s, MELS, SPEC_T)).reshape(b, s, AUDIO_T, -1)

    def compare(self, vfeat: torch.Tensor, afeat: torch.Tensor) -> torch.Tensor:
        """Offset logits from per-segment features (what av-benchmark's DeSync calls)."""
        v = self.vproj(vfeat).flatten(1, 2)
        a = self.aproj(afeat).flatten(1, 2)
        return self.transformer(v, a)

    def forward(self, video: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        return self.compare(self.video_features(video), self.audio_features(spec))


# ------------------------------------------------------------------------------- loading

def resolve_checkpoint(path: str | os.PathLike | None) -> Path:
    """The path from the argument, else ``$CURATE_SYNCHFORMER_CKPT``; a clear error naming
    the option when neither points at a file."""
    raw = path if path not in (None, "") else os.environ.get(CHECKPOINT_ENV) or None
    hint = (f"Set {CHECKPOINT_OPTION} (or {CHECKPOINT_ENV}) to {' or '.join(CHECKPOINT_SOURCES)}; "
            "curate never downloads it.")
    if raw is None:
        raise FileNotFoundError(f"no Synchformer checkpoint given. {hint}")
    p = Path(raw).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"Synchformer checkpoint not found: {p}. {hint}")
    return p


def state_dict_of(obj: object, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside either public form: the authors' training checkpoint (its
    ``model`` entry) or MMAudio's bare state dict."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source} holds no Synchformer state dict ({CHECKPOINT_OPTION})")
    return obj


def check_keys(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict: every missing or extra key and every shape mismatch is an error naming the option."""
    from sync_classifier.model import check_state_fits
    check_state_fits(model, state, source, CHECKPOINT_OPTION, what="Synchformer")


#: the key under which our own (small, locally trained) checkpoints carry their sizes beside
#: ``model``; the public files have none and are the released sizes
CONFIG_KEY = "synchformer_config"


def save_synchformer(model: Synchformer, path: str | os.PathLike) -> None:
    """Our checkpoint form: the authors' (``model`` = the state dict) plus the sizes."""
    from dataclasses import asdict
    torch.save({"model": model.state_dict(), CONFIG_KEY: asdict(model.cfg)}, path)


def load_synchformer(path: str | os.PathLike | None, device: str | torch.device = "cpu",
                     cfg: SynchformerConfig | None = None) -> Synchformer:
    """Load either public form (or ours, which names its sizes) strictly; returns the model
    in eval mode on ``device``."""
    from sync_classifier.model import _torch_load
    p = resolve_checkpoint(path)
    # the authors' file holds their config and optimizer too: kept inert, and mapped, not read
    obj = _torch_load(p, CHECKPOINT_OPTION, inert=True, mmap=True)
    if cfg is None and isinstance(obj, dict) and isinstance(obj.get(CONFIG_KEY), dict):
        try:
            cfg = SynchformerConfig(**obj[CONFIG_KEY])
        except TypeError as e:
            raise ValueError(f"{p}: bad {CONFIG_KEY} ({CHECKPOINT_OPTION}): {e}") from e
    state = state_dict_of(obj, str(p))
    model = Synchformer(cfg)
    check_keys(model, state, str(p))
    model.load_state_dict(state, strict=True)
    log.info("loaded Synchformer from %s; weights licence: %s", p, WEIGHTS_LICENSE)
    return model.to(device).eval()
