"""The audio-visual synchronisation classifier of seed 003, section 1.1 (Table 1).

* audio encoder: 2D ResNet-style conv net over the 1x128x204 mel:
  conv1 7x7/64 s2 -> 64x64x102; block1 (64, s2) -> 64x32x51; block2 (128, s2) -> 128x16x26;
  block3 (256, s2) -> 256x8x13; block4 (512, s1) -> 512x8x13; global average pool -> 512.
* video encoder: R(2+1)D-18 over 3x12x224x224: (2+1)D stem 3x7x7/64 stride 1x2x2
  (-> 64x12x112x112), max pool 1x3x3 s1x2x2 (-> 64x12x56x56), four stages of two R(2+1)D
  blocks 64/128/256/512 with stride 2x2x2 at stages 2-4 (-> 128x6x28x28, 256x3x14x14,
  512x2x7x7), global average pool -> 512.
* head: concat(512, 512) -> 1024 -> 512 -> 256 -> 1, the unbounded av-sync score phi.

Widths, depths and the head are parameters (``SyncConfig``) so a small model trains on a CPU.
The first head layer acts on a concatenation, so it splits into an audio part and a video
part; ``pairwise`` uses that to score all N x M pairs without materialising N*M concatenations.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from manifests.atomic import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_OPTION = "--sync-checkpoint"


@dataclass
class SyncConfig:
    """Architecture. The defaults are the paper's model (seed Table 1)."""

    audio_widths: tuple[int, ...] = (64, 128, 256, 512)
    audio_strides: tuple[int, ...] = (2, 2, 2, 1)
    audio_stem: int = 64
    video_widths: tuple[int, ...] = (64, 128, 256, 512)
    video_blocks: tuple[int, ...] = (2, 2, 2, 2)
    video_stem: int = 64
    head_hidden: tuple[int, ...] = (512, 256)
    # input geometry the data pipeline produces for this model
    num_frames: int = 12
    frame_size: int = 224
    num_mel_bins: int = 128
    mel_frames: int = 204

    def __post_init__(self) -> None:
        # tuples survive a round trip through a checkpoint dict as lists
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                setattr(self, f.name, tuple(v))
        if len(self.audio_widths) != len(self.audio_strides):
            raise ValueError("audio_widths and audio_strides differ in length")
        if len(self.video_widths) != len(self.video_blocks):
            raise ValueError("video_widths and video_blocks differ in length")

    @property
    def audio_dim(self) -> int:
        return self.audio_widths[-1]

    @property
    def video_dim(self) -> int:
        return self.video_widths[-1]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def small_config() -> SyncConfig:
    """A CPU-trainable model: same topology, narrow layers, 32x32 frames."""
    return SyncConfig(audio_widths=(8, 16, 32, 32), audio_stem=8,
                      video_widths=(8, 16, 32, 32), video_blocks=(1, 1, 1, 1), video_stem=8,
                      head_hidden=(64, 32), frame_size=32)


def tiny_config() -> SyncConfig:
    """For unit tests: the smallest sensible model, 32x32 frames."""
    return SyncConfig(audio_widths=(4, 8, 8, 16), audio_stem=4,
                      video_widths=(4, 8, 8, 16), video_blocks=(1, 1, 1, 1), video_stem=4,
                      head_hidden=(16, 8), frame_size=32)


# ---------------------------------------------------------------- audio encoder

class BasicBlock2d(nn.Module):
    """ResNet basic block: 3x3 conv (stride s) -> 3x3 conv, projection shortcut when needed."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + idt)


class AudioEncoder(nn.Module):
    def __init__(self, cfg: SyncConfig) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, cfg.audio_stem, 7, 2, 3, bias=False),
                                  nn.BatchNorm2d(cfg.audio_stem), nn.ReLU(inplace=True))
        blocks, cin = [], cfg.audio_stem
        for w, s in zip(cfg.audio_widths, cfg.audio_strides):
            blocks.append(BasicBlock2d(cin, w, s))
            cin = w
        self.blocks = nn.ModuleList(blocks)

    def stages(self, mel: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output (conv1, block1..4), for shape checks."""
        outs = [self.stem(mel)]
        for b in self.blocks:
            outs.append(b(outs[-1]))
        return outs

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.stem(mel)
        for b in self.blocks:
            x = b(x)
        return x.mean(dim=(2, 3))


# ---------------------------------------------------------------- video encoder

def _midplanes(cin: int, cout: int) -> int:
    """R(2+1)D paper: keep the parameter count of the full 3x3x3 conv."""
    return max(1, (cin * cout * 27) // (cin * 9 + 3 * cout))


class Conv2Plus1d(nn.Sequential):
    """1x3x3 spatial conv (stride 1xsxs) -> BN -> ReLU -> 3x1x1 temporal conv (stride t)."""

    def __init__(self, cin: int, cout: int, mid: int, stride: int) -> None:
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
            nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False))


class R2Plus1dBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = _midplanes(cin, cout)  # torchvision uses the block-input count for both convs
        self.conv1 = nn.Sequential(Conv2Plus1d(cin, cout, mid, stride),
                                   nn.BatchNorm3d(cout), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(Conv2Plus1d(cout, cout, mid, 1),
                                   nn.BatchNorm3d(cout))
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        return self.relu(self.conv2(self.conv1(x)) + idt)


class VideoEncoder(nn.Module):
    def __init__(self, cfg: SyncConfig) -> None:
        super().__init__()
        # torchvision's R(2+1)D-18 stem uses 45 middle channels for 64 outputs
        stem_mid = max(1, round(45 * cfg.video_stem / 64))
        self.stem = nn.Sequential(
            nn.Conv3d(3, stem_mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
            nn.BatchNorm3d(stem_mid), nn.ReLU(inplace=True),
            nn.Conv3d(stem_mid, cfg.video_stem, (3, 1, 1), 1, (1, 0, 0), bias=False),
            nn.BatchNorm3d(cfg.video_stem), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        stages, cin = [], cfg.video_stem
        for i, (w, n) in enumerate(zip(cfg.video_widths, cfg.video_blocks)):
            stride = 1 if i == 0 else 2
            blocks = [R2Plus1dBlock(cin, w, stride)] + [R2Plus1dBlock(w, w, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages_ = nn.ModuleList(stages)

    def stages(self, video: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output (stem, pool, stage1..4), for shape checks."""
        outs = [self.stem(video)]
        outs.append(self.pool(outs[-1]))
        for s in self.stages_:
            outs.append(s(outs[-1]))
        return outs

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(video))
        for s in self.stages_:
            x = s(x)
        return x.mean(dim=(2, 3, 4))


# ---------------------------------------------------------------- classifier

class SyncHead(nn.Module):
    """MLP over concat(audio, video); the first layer is split into audio and video halves."""

    def __init__(self, cfg: SyncConfig) -> None:
        super().__init__()
        h = cfg.head_hidden
        self.fc_audio = nn.Linear(cfg.audio_dim, h[0])
        self.fc_video = nn.Linear(cfg.video_dim, h[0], bias=False)
        layers: list[nn.Module] = []
        for a, b in zip(h[:-1], h[1:]):
            layers += [nn.ReLU(inplace=True), nn.Linear(a, b)]
        layers += [nn.ReLU(inplace=True), nn.Linear(h[-1], 1)]
        self.rest = nn.Sequential(*layers)

    def forward(self, a_feat: torch.Tensor, v_feat: torch.Tensor) -> torch.Tensor:
        """Matched pairs: ``[B, Da], [B, Dv] -> [B]``."""
        return self.rest(self.fc_audio(a_feat) + self.fc_video(v_feat)).squeeze(-1)

    def pairwise(self, a_feat: torch.Tensor, v_feat: torch.Tensor) -> torch.Tensor:
        """All pairs: ``[..., N, Da], [..., M, Dv] -> [..., N, M]`` (phi[i, j] = phi(a_i, v_j))."""
        h = self.fc_audio(a_feat).unsqueeze(-2) + self.fc_video(v_feat).unsqueeze(-3)
        return self.rest(h).squeeze(-1)


class SyncClassifier(nn.Module):
    def __init__(self, cfg: SyncConfig | None = None) -> None:
        super().__init__()
        self.config = cfg or SyncConfig()
        self.audio = AudioEncoder(self.config)
        self.video = VideoEncoder(self.config)
        self.sync_head = SyncHead(self.config)

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 128, 204] -> [B, Da]``."""
        return self.audio(mel)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W] -> [B, Dv]``."""
        return self.video(video)

    def head(self, a_feat: torch.Tensor, v_feat: torch.Tensor) -> torch.Tensor:
        return self.sync_head(a_feat, v_feat)

    def pairwise(self, a_feat: torch.Tensor, v_feat: torch.Tensor) -> torch.Tensor:
        return self.sync_head.pairwise(a_feat, v_feat)

    def forward(self, mel: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """phi for matched (audio, video) pairs, ``[B]``."""
        return self.head(self.encode_audio(mel), self.encode_video(video))


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | Path, model: nn.Module, optimizer=None, step: int = 0,
                    extra: dict | None = None) -> Path:
    """Atomic save (temp file + rename) of weights, config, optimizer state and step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inner = model.module if hasattr(model, "module") else model
    state = {"format": "curate-sync-classifier/1", "config": inner.config.to_dict(),
             "model": inner.state_dict(), "step": int(step), "extra": extra or {}}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path) if path else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"sync classifier checkpoint not found: {path!s}; train one with `curate sync train` "
            f"and pass it with {CHECKPOINT_OPTION}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for a corrupt file
        raise ValueError(f"cannot read sync classifier checkpoint {path}: {e} "
                         f"(check {CHECKPOINT_OPTION})") from e
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise ValueError(f"{path} is not a curate sync classifier checkpoint "
                         f"(check {CHECKPOINT_OPTION})")
    return state


def load_sync_classifier(path: str | Path, device: str | torch.device = "cpu") -> SyncClassifier:
    """Model in eval mode from a checkpoint written by ``save_checkpoint``."""
    state = read_checkpoint(path)
    model = SyncClassifier(SyncConfig(**state["config"]))
    model.load_state_dict(state["model"])
    log.info("loaded sync classifier %s (step %s)", path, state.get("step"))
    return model.to(device).eval()
