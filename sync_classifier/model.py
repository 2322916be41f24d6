"""The audio-visual synchronisation classifier of seed 003 (section 1.1), as released.

The layout is the one of the paper's released code (``avsync/models/{audio,video,head}.py``
of lzhangbj/ASVA), so its weights load key for key (``../shared/reference/asva_sync``):

* ``audio_encoder``: ``conv1`` = Conv2d 1->64 7x7 s2 p3, BN, ReLU; ``block1..block4``
  (64 s2, 128 s2, 256 s2, 512 s1), each ``relu(bn1(conv1 x))`` then ``relu(bn2(conv2 .))``
  with 3x3 convs and **no residual**; mean over mel and time -> 512.
* ``video_encoder``: ``conv1`` = a full 3-D stem Conv3d 3->64 3x7x7 s1x2x2 p1x3x3, BN, ReLU,
  MaxPool 1x3x3 s1x2x2 p0x1x1; ``conv2x..conv5x`` two (2+1)D blocks each (64, 128, 256, 512;
  the first block of conv3x..conv5x has stride 2x2x2). A block is
  spt_conv1 (1x3x3) BN ReLU tmp_conv1 (3x1x1) BN ReLU spt_conv2 BN ReLU tmp_conv2, plus a
  1x1x1 ``res_conv`` when channels or stride change, out ``relu(out_bn(main + residual))``;
  no mid-plane widening. Mean over T, H, W -> 512.
* ``head``: ``fc`` = Linear 1024->512, Dropout, ReLU, Linear 512->256, Dropout, ReLU,
  Linear 256->1 on ``concat(audio, video)``: the unbounded av-sync score phi.

Widths, depths and the head are parameters (``SyncConfig``) with the same block types, so a
small model trains on a CPU. The first head layer acts on a concatenation, so it splits into
an audio part and a video part; ``pairwise`` uses that to score all N x M pairs without
materialising N*M concatenations.

Weights come from three places (``load_sync_classifier`` / ``load_init``):
our own checkpoints (``save_checkpoint``), the released ``modules/`` folder (diffusers
layout: ``audio_encoder/``, ``video_encoder/``, ``head/``, each a ``config.json`` and
``diffusion_pytorch_model.bin`` or ``.safetensors``) and the AVID-CMA AudioSet checkpoint
(keys ``module.video_model.<k>`` / ``module.audio_model.<k>``, the paper's initialisation).
Every load is strict: a missing, unexpected or mis-shaped key is an error naming the option.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from manifests.atomic import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_OPTION = "--sync-checkpoint"
INIT_OPTION = "--init"
MODULES = ("audio_encoder", "video_encoder", "head")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
AVID_PREFIXES = {"audio_encoder": "module.audio_model.", "video_encoder": "module.video_model."}
#: the small classifier the demo gates with, trained by ``benchmarks/train_sync_small.py --demo``
#: on generated flash/beep events (package data; see that script for the command and seed)
DEMO_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "sync_demo_small.pt"
#: preprocessing conventions (``sync_classifier.conventions``): what the weights were trained on.
#: Our checkpoints record it (older ones and the shipped demo classifier: ``ours``); the
#: released ``modules/`` folder and the AVID-CMA initialisation imply ``released``.
OURS, RELEASED = "ours", "released"


@dataclass
class SyncConfig:
    """Architecture. The defaults are the released model (seed Table 1)."""

    audio_widths: tuple[int, ...] = (64, 128, 256, 512)
    audio_strides: tuple[int, ...] = (2, 2, 2, 1)
    audio_stem: int = 64
    video_widths: tuple[int, ...] = (64, 128, 256, 512)
    video_blocks: tuple[int, ...] = (2, 2, 2, 2)
    video_stem: int = 64
    head_hidden: tuple[int, ...] = (512, 256)
    dropout: float = 0.0
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
        if not self.head_hidden:
            raise ValueError("head_hidden needs at least one layer")

    @property
    def audio_dim(self) -> int:
        return self.audio_widths[-1]

    @property
    def video_dim(self) -> int:
        return self.video_widths[-1]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "SyncConfig":
        """Known fields only (older checkpoints and released configs carry other keys)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def small_config() -> SyncConfig:
    """A CPU-trainable model: same block types, narrow layers, one block a stage, 32x32 frames."""
    return SyncConfig(audio_widths=(8, 16, 32, 32), audio_stem=8,
                      video_widths=(8, 16, 32, 32), video_blocks=(1, 1, 1, 1), video_stem=8,
                      head_hidden=(64, 32), frame_size=32)


def demo_config() -> SyncConfig:
    """The demo's shipped classifier: ``small_config`` on 16x16 frames (a CPU training step is
    dominated by the encoders; 16x16 quarters the video encoder's cost, and the demo's flash
    still covers ~40 pixels of it)."""
    return dataclasses.replace(small_config(), frame_size=16)


def tiny_config() -> SyncConfig:
    """For unit tests: the smallest sensible model, 32x32 frames."""
    return SyncConfig(audio_widths=(4, 8, 8, 16), audio_stem=4,
                      video_widths=(4, 8, 8, 16), video_blocks=(1, 1, 1, 1), video_stem=4,
                      head_hidden=(16, 8), frame_size=32)


# ---------------------------------------------------------------- audio encoder

class AudioBlock(nn.Module):
    """Two 3x3 conv-BN-ReLU layers, the first with the stride; no residual (as released)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


class AudioEncoder(nn.Module):
    """``[B, 1, 128, 204]`` mel -> ``[B, audio_widths[-1]]``; modules ``conv1``, ``block1..``."""

    def __init__(self, cfg: SyncConfig) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, cfg.audio_stem, 7, 2, 3, bias=False),
                                   nn.BatchNorm2d(cfg.audio_stem), nn.ReLU(inplace=True))
        cin = cfg.audio_stem
        self.block_names = []
        for i, (w, s) in enumerate(zip(cfg.audio_widths, cfg.audio_strides), start=1):
            self.add_module(f"block{i}", AudioBlock(cin, w, s))
            self.block_names.append(f"block{i}")
            cin = w

    def stages(self, mel: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output (conv1, block1..), for shape checks."""
        outs = [self.conv1(mel)]
        for n in self.block_names:
            outs.append(getattr(self, n)(outs[-1]))
        return outs

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.stages(mel)[-1].mean(dim=(2, 3))


# ---------------------------------------------------------------- video encoder

class R2Plus1dBlock(nn.Module):
    """(2+1)D block as released: no mid-plane widening, BN after the residual sum."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.spt_conv1 = nn.Conv3d(cin, cout, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)
        self.spt_bn1 = nn.BatchNorm3d(cout)
        self.tmp_conv1 = nn.Conv3d(cout, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False)
        self.tmp_bn1 = nn.BatchNorm3d(cout)
        self.spt_conv2 = nn.Conv3d(cout, cout, (1, 3, 3), 1, (0, 1, 1), bias=False)
        self.spt_bn2 = nn.BatchNorm3d(cout)
        self.tmp_conv2 = nn.Conv3d(cout, cout, (3, 1, 1), 1, (1, 0, 0), bias=False)
        self.out_bn = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.res_conv = (nn.Conv3d(cin, cout, 1, stride, bias=False)
                         if cin != cout or stride != 1 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.tmp_bn1(self.tmp_conv1(self.relu(self.spt_bn1(self.spt_conv1(x))))))
        y = self.tmp_conv2(self.relu(self.spt_bn2(self.spt_conv2(y))))
        res = x if self.res_conv is None else self.res_conv(x)
        return self.relu(self.out_bn(y + res))


class VideoEncoder(nn.Module):
    """``[B, 3, T, H, W]`` -> ``[B, video_widths[-1]]``; modules ``conv1``, ``conv2x..``."""

    def __init__(self, cfg: SyncConfig) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv3d(3, cfg.video_stem, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
            nn.BatchNorm3d(cfg.video_stem), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
        cin = cfg.video_stem
        self.stage_names = []
        for i, (w, n) in enumerate(zip(cfg.video_widths, cfg.video_blocks)):
            stride = 1 if i == 0 else 2
            blocks = [R2Plus1dBlock(cin, w, stride)] + [R2Plus1dBlock(w, w, 1) for _ in range(n - 1)]
            self.add_module(f"conv{i + 2}x", nn.Sequential(*blocks))
            self.stage_names.append(f"conv{i + 2}x")
            cin = w

    def stages(self, video: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output (stem incl. pool, conv2x..), for shape checks."""
        outs = [self.conv1(video)]
        for n in self.stage_names:
            outs.append(getattr(self, n)(outs[-1]))
        return outs

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.stages(video)[-1].mean(dim=(2, 3, 4))


# ---------------------------------------------------------------- head

class SyncHead(nn.Module):
    """``fc``: Linear, Dropout, ReLU per hidden layer, then Linear -> 1 (released ``FCHead``)."""

    def __init__(self, cfg: SyncConfig) -> None:
        super().__init__()
        self.audio_dim = cfg.audio_dim
        dims = [cfg.audio_dim + cfg.video_dim, *cfg.head_hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.Dropout(cfg.dropout), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-1], 1))
        self.fc = nn.Sequential(*layers)

    def forward(self, a_feat: torch.Tensor, v_feat: torch.Tensor) -> torch.Tensor:
        """Matched pairs: ``[B, Da], [B, Dv] -> [B]``."""
        return self.fc(torch.cat([a_feat, v_feat], dim=-1)).squeeze(-1)

    def pairwise(self, a_feat: torch.Tensor, v_feat: torch.Tensor) -> torch.Tensor:
        """All pairs: ``[..., N, Da], [..., M, Dv] -> [..., N, M]`` (phi[i, j] = phi(a_i, v_j))."""
        first: nn.Linear = self.fc[0]
        w_a, w_v = first.weight[:, :self.audio_dim], first.weight[:, self.audio_dim:]
        h = (nn.functional.linear(a_feat, w_a, first.bias).unsqueeze(-2)
             + nn.functional.linear(v_feat, w_v).unsqueeze(-3))
        return self.fc[1:](h).squeeze(-1)


# ---------------------------------------------------------------- classifier

class SyncClassifier(nn.Module):
    """Modules ``audio_encoder``, ``video_encoder``, ``head``: the released state-dict keys."""

    def __init__(self, cfg: SyncConfig | None = None) -> None:
        super().__init__()
        self.config = cfg or SyncConfig()
        # the preprocessing convention the weights expect (not a weight: set by the loaders)
        self.convention = OURS
        self.audio_encoder = AudioEncoder(self.config)
        self.video_encoder = VideoEncoder(self.config)
        self.head = SyncHead(self.config)

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 128, 204] -> [B, Da]``."""
        return self.audio_encoder(mel)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W] -> [B, Dv]``."""
        return self.video_encoder(video)

    def pairwise(self, a_feat: torch.Tensor, v_feat: torch.Tensor) -> torch.Tensor:
        return self.head.pairwise(a_feat, v_feat)

    def forward(self, mel: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """phi for matched (audio, video) pairs, ``[B]``."""
        return self.head(self.encode_audio(mel), self.encode_video(video))


def parameter_counts(model: SyncClassifier) -> dict[str, int]:
    """Trainable parameters per module."""
    return {m: sum(p.numel() for p in getattr(model, m).parameters()) for m in MODULES}


# ---------------------------------------------------------------- strict loading

def strict_load(module: nn.Module, state: Mapping[str, torch.Tensor], source: str, option: str) -> None:
    """``module.load_state_dict(state)`` that names every missing, unexpected and mis-shaped
    key, the file and the option in one ValueError."""
    check_state_fits(module, state, source, option)
    module.load_state_dict(state, strict=True)


def check_state_fits(module: nn.Module, state: Mapping[str, torch.Tensor], source: str, option: str,
                     what: str = "the sync classifier") -> None:
    """The ValueError of ``strict_load`` when ``state``'s keys or shapes do not fit
    ``module`` (which may live on the meta device: only keys and shapes are read); ``what``
    names the model in the message (Synchformer's loader uses it too)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for name, items in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", shapes)):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                parts.append(f"{name}: {', '.join(items[:8])}{more}")
        raise ValueError(f"{source} does not fit {what} ({option}): " + "; ".join(parts))


#: set to 1 (``--trust-checkpoint``) to read checkpoint files that need full unpickling
TRUST_ENV = "CURATE_TRUST_CHECKPOINT"


def _numpy_scalars() -> list:
    """The numpy objects a training script's checkpoint may hold beside its tensors (a best
    metric saved as a numpy float): reconstructing them runs no code of the file's choosing."""
    import numpy as np
    core = getattr(np, "_core", None) or np.core
    extra = [core.multiarray.scalar, np.dtype]
    extra += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return extra


class Inert:
    """Stands in for every object of a checkpoint beyond its tensors when the caller reads
    only tensors (``_torch_load(inert=True)``): a training script's config (an OmegaConf
    ``DictConfig``), numpy metrics, optimizer settings. It is made, filled and kept as data;
    none of the code the file names is imported or run, so the library that wrote those
    objects need not be installed either."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        self.args = args

    def __setstate__(self, state) -> None:
        self.state = state

    def __setitem__(self, key, value) -> None:
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value) -> None:
        self.__dict__.setdefault("values", []).append(value)

    def extend(self, values) -> None:
        for v in values:
            self.append(v)


def _mapped(path: Path | io.BytesIO, mmap: bool) -> bool:
    """Whether to map the file instead of reading it (``torch.load(mmap=True)``: a zip file
    only): a training checkpoint's optimizer state, twice the weights, is then never read."""
    import zipfile
    return mmap and not isinstance(path, io.BytesIO) and zipfile.is_zipfile(path)


def _inert_load(path: Path | io.BytesIO, name: object, option: str, refused: Exception,
                mapped: bool = False):
    """After torch's weights-only reader ``refused`` the file: the same reader with every
    global it refuses standing for ``Inert``. Still no code of the file's choosing runs, and
    its tensors come back as they are; an error names the option."""
    try:
        if isinstance(path, io.BytesIO):
            path.seek(0)
        unsafe = _unsafe_globals(path)
        if isinstance(path, io.BytesIO):
            path.seek(0)
        with torch.serialization.safe_globals([(Inert, n) for n in unsafe]):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except Exception as e:  # noqa: BLE001  (torch raises several types)
        raise ValueError(f"cannot read {name} ({e}); it holds Python objects beyond weights "
                         f"({str(refused).strip().splitlines()[0][:200]}). If you trust the "
                         f"file, pass --trust-checkpoint ({option})") from e
    log.info("%s: read its tensors; %d kinds of object beside them kept inert (%s)", name,
             len(unsafe), ", ".join(sorted(unsafe)[:6]) + (" ..." if len(unsafe) > 6 else ""))
    return obj


def _unsafe_globals(path: Path | io.BytesIO) -> list[str]:
    """The globals of a checkpoint torch's weights-only reader refuses: torch's own answer for
    a zip file; for the legacy format (torch < 1.6, pickles in a row: the released AVID-CMA
    file's era) the names its pickles reference, less those torch's reader allows."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except ValueError:
        if isinstance(path, io.BytesIO):
            path.seek(0)
    from torch import _weights_only_unpickler as wou   # the lists torch's reader itself checks
    safe = set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
    return sorted(_pickle_globals(path) - safe)


def _pickle_globals(path: Path | io.BytesIO, pickles: int = 4) -> set[str]:
    """Every global the first ``pickles`` pickles of a file name, read as opcodes (nothing is
    unpickled); the legacy format's four: magic number, protocol, system info, the object."""
    import contextlib
    import pickletools
    names: set[str] = set()
    with (contextlib.nullcontext(path) if isinstance(path, io.BytesIO) else open(path, "rb")) as f:
        for _ in range(pickles):
            strings: list[str] = []
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    names.add(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.add(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    return names


def _torch_load(path: Path | io.BytesIO, option: str, extras: tuple = (), source: str | None = None,
                inert: bool = False, mmap: bool = False):
    """``torch.load(weights_only=True)``: tensors and plain data only, so a checkpoint file
    cannot run code when read; ``extras`` are further globals allowed explicitly (the
    AVID-CMA file's numpy scalars). ``inert``: the caller reads only the file's tensors, so
    other objects it holds (a training checkpoint's config, optimizer, metrics) are kept as
    ``Inert`` data instead of refused. ``$CURATE_TRUST_CHECKPOINT=1`` (``--trust-checkpoint``)
    reads a file that needs full unpickling, for files the user trusts. ``path`` may be the
    file's bytes already read (``source`` then names the file in errors). ``mmap``: map a zip
    file instead of reading it (``_mapped``), for a caller that copies the tensors it keeps."""
    import os
    import pickle
    name = source or path
    _require_checkpoint(path, option, name)
    trusted = os.environ.get(TRUST_ENV) == "1"
    mapped = _mapped(path, mmap)
    try:
        if trusted:
            return torch.load(path, map_location="cpu", weights_only=False, mmap=mapped)
        with torch.serialization.safe_globals(list(extras)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        if "weights only" not in str(e).lower():     # torch's refusal says so; garbage does not
            raise ValueError(f"{name} is not a checkpoint ({first}): check {option}") from e
        if inert:
            return _inert_load(path, name, option, e, mapped)
        raise ValueError(f"{name} holds Python objects beyond weights, which could run code when "
                         f"read ({first}); curate reads weights only. If you trust the file, pass "
                         f"--trust-checkpoint ({option})") from e
    except Exception as e:  # torch raises several types for a corrupt file
        raise ValueError(f"cannot read {name}: {e} (check {option})") from e


#: how a torch.save file starts: a zip archive (torch >= 1.6), else a pickle's PROTO opcode
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


def _require_checkpoint(path: Path | io.BytesIO, option: str, name=None) -> None:
    """A file that is not what ``torch.save`` writes is "not a checkpoint", before any
    unpickling (and never a hint to trust it). ``path`` may be the bytes already read."""
    name = name or path
    try:
        if isinstance(path, io.BytesIO):
            head = path.getvalue()[:4]
        else:
            with open(path, "rb") as f:
                head = f.read(4)
    except OSError as e:
        raise ValueError(f"cannot read {name} ({e.strerror or e}): check {option}") from e
    if not head.startswith(_CHECKPOINT_MAGIC):
        raise ValueError(f"{name} is not a checkpoint (neither a torch zip archive nor a "
                         f"pickle): check {option}")


# ---------------------------------------------------------------- released modules/ folder

def _read_module_folder(folder: Path, option: str) -> tuple[dict, dict]:
    """(config.json dict, state dict) of one diffusers ``save_pretrained`` folder."""
    cfg_path = folder / "config.json"
    config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    for name in WEIGHT_FILES:
        f = folder / name
        if not f.is_file():
            continue
        if f.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError as e:
                raise ValueError(f"{f} needs the safetensors package (pip install safetensors), "
                                 f"or save it as {WEIGHT_FILES[1]} ({option})") from e
            return config, load_file(str(f))
        state = _torch_load(f, option)
        if not isinstance(state, dict):
            raise ValueError(f"{f} is not a state dict ({option})")
        return config, state
    raise FileNotFoundError(f"no {' or '.join(WEIGHT_FILES)} in {folder} ({option})")


def _blocks(state: Mapping[str, torch.Tensor], fmt: str) -> int:
    n = 0
    while any(k.startswith(fmt.format(n + 1) + ".") for k in state):
        n += 1
    return n


def config_from_state(states: Mapping[str, Mapping[str, torch.Tensor]],
                      base: SyncConfig | None = None) -> SyncConfig:
    """The architecture a set of module state dicts was saved from (widths, depths, head).

    Strides are not stored in weights: audio blocks take stride 2 except the last (released
    layout), video stages stride 1 then 2. ``base`` supplies the input geometry.
    """
    base = base or SyncConfig()
    a, v, h = states["audio_encoder"], states["video_encoder"], states["head"]
    try:
        na = _blocks(a, "block{}")
        a_w = tuple(int(a[f"block{i}.conv1.weight"].shape[0]) for i in range(1, na + 1))
        # stages are conv2x, conv3x, ... (conv1 is the stem)
        nv = 0
        while any(k.startswith(f"conv{nv + 2}x.") for k in v):
            nv += 1
        v_w, v_b = [], []
        for i in range(nv):
            idx = {int(k.split(".")[1]) for k in v if k.startswith(f"conv{i + 2}x.")}
            v_b.append(max(idx) + 1)
            v_w.append(int(v[f"conv{i + 2}x.0.spt_conv1.weight"].shape[0]))
        lin = sorted(int(k.split(".")[1]) for k in h if k.startswith("fc.") and k.endswith(".weight"))
        hidden = tuple(int(h[f"fc.{i}.weight"].shape[0]) for i in lin[:-1])
        return dataclasses.replace(
            base, audio_widths=a_w, audio_strides=(2,) * (na - 1) + (1,),
            audio_stem=int(a["conv1.0.weight"].shape[0]), video_widths=tuple(v_w),
            video_blocks=tuple(v_b), video_stem=int(v["conv1.0.weight"].shape[0]),
            head_hidden=hidden)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"cannot read the architecture from the weights: missing {e}") from e


def load_released(path: str | Path, option: str = CHECKPOINT_OPTION) -> SyncClassifier:
    """The classifier from a released ``modules/`` folder (or the folder above it), eval mode."""
    root = Path(path)
    if not all((root / m).is_dir() for m in MODULES) and (root / "modules").is_dir():
        root = root / "modules"
    missing = [m for m in MODULES if not (root / m).is_dir()]
    if missing:
        raise FileNotFoundError(f"{path} is not a released sync classifier folder: no "
                                f"{', '.join(missing)}/ subfolder ({option})")
    configs, states = {}, {}
    for m in MODULES:
        configs[m], states[m] = _read_module_folder(root / m, option)
    ours = configs["head"].get("curate_config")   # written by save_released
    cfg = SyncConfig.from_dict(ours) if ours else config_from_state(states)
    cfg.dropout = float(configs["head"].get("dropout", cfg.dropout) or 0.0)
    model = SyncClassifier(cfg)
    # the released layout implies the released convention unless we wrote another one
    model.convention = str(configs["head"].get("curate_convention") or RELEASED)
    for m in MODULES:
        strict_load(getattr(model, m), states[m], str(root / m), option)
    log.info("loaded released sync classifier %s", root)
    return model.eval()


def save_released(path: str | Path, model: SyncClassifier, safetensors: bool = False) -> Path:
    """Write ``model`` in the released layout (tests, and handing weights to the ASVA code)."""
    root = Path(path)
    released_cls = {"audio_encoder": ("AudioConv2DNet", {"pretrained": False}),
                    "video_encoder": ("VideoR2Plus1DNet", {"pretrained": False}),
                    "head": ("FCHead", {"dim": model.config.head_hidden[0], "out_dim": 1,
                                        "dropout": model.config.dropout})}
    for m in MODULES:
        d = root / m
        d.mkdir(parents=True, exist_ok=True)
        cls, cfg = released_cls[m]
        cfg = {"_class_name": cls, **cfg}
        if m == "head":
            cfg["curate_config"] = model.config.to_dict()
            cfg["curate_convention"] = getattr(model, "convention", OURS)
        with atomic_path(d / "config.json") as tmp:
            Path(tmp).write_text(json.dumps(cfg, indent=2))
        state = {k: v.detach().cpu().contiguous() for k, v in getattr(model, m).state_dict().items()}
        if safetensors:
            from safetensors.torch import save_file
            with atomic_path(d / WEIGHT_FILES[0]) as tmp:
                save_file(state, str(tmp))
        else:
            with atomic_path(d / WEIGHT_FILES[1]) as tmp:
                torch.save(state, tmp)
    return root


# ---------------------------------------------------------------- AVID-CMA initialisation

def avid_state(checkpoint: Mapping, source: str, option: str = INIT_OPTION) -> dict[str, dict]:
    """``{"audio_encoder": {...}, "video_encoder": {...}}`` from an AVID-CMA checkpoint dict."""
    model = checkpoint.get("model") if isinstance(checkpoint, Mapping) else None
    if not isinstance(model, Mapping):
        raise ValueError(f"{source} has no 'model' entry: not an AVID-CMA checkpoint ({option})")
    out = {}
    for m, prefix in AVID_PREFIXES.items():
        out[m] = {k[len(prefix):]: v for k, v in model.items() if k.startswith(prefix)}
        if not out[m]:
            raise ValueError(f"{source} has no '{prefix}*' keys: not an AVID-CMA checkpoint ({option})")
    return out


def is_avid_checkpoint(state) -> bool:
    m = state.get("model") if isinstance(state, Mapping) else None
    return isinstance(m, Mapping) and any(str(k).startswith(tuple(AVID_PREFIXES.values())) for k in m)


def _load_avid_states(model: SyncClassifier, checkpoint, path: Path, option: str) -> None:
    for m, st in avid_state(checkpoint, str(path), option).items():
        strict_load(getattr(model, m), st, f"{path} [{AVID_PREFIXES[m]}*]", option)
    log.info("initialised both encoders from AVID-CMA %s (head fresh)", path)


# ---------------------------------------------------------------- our checkpoints

def save_checkpoint(path: str | Path, model: nn.Module, optimizer=None, step: int = 0,
                    extra: dict | None = None) -> Path:
    """Atomic save (temp file + rename) of weights, config, optimizer state and step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inner = model.module if hasattr(model, "module") else model
    state = {"format": "curate-sync-classifier/2", "config": inner.config.to_dict(),
             "model": inner.state_dict(), "step": int(step), "extra": extra or {},
             "convention": getattr(inner, "convention", OURS)}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def read_checkpoint(path: str | Path, option: str = CHECKPOINT_OPTION) -> dict:
    path = Path(path) if path else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"sync classifier checkpoint not found: {path!s}; train one with `curate sync train` "
            f"and pass it (or the released modules/ folder) with {option}")
    state = _torch_load(_source(path), option, source=str(path))
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise ValueError(f"{path} is not a curate sync classifier checkpoint (check {option})")
    return state


def _source(path: str | Path) -> Path | io.BytesIO:
    """What ``_torch_load`` reads: a small file's bytes, read once per process and file
    version (``manifests.smallfiles``: one open serves every question asked of it), else
    the path."""
    from manifests import smallfiles
    data = smallfiles.read(path)
    return Path(path) if data is None else io.BytesIO(data)


def model_from_checkpoint(state: dict, source: str, option: str = CHECKPOINT_OPTION) -> SyncClassifier:
    """A model from a ``read_checkpoint`` dict, loaded strictly."""
    model = SyncClassifier(SyncConfig.from_dict(state["config"]))
    strict_load(model, state["model"], source, option)
    model.convention = str(state.get("convention") or OURS)   # older checkpoints: ours
    return model


def load_sync_classifier(path: str | Path, device: str | torch.device = "cpu",
                         option: str = CHECKPOINT_OPTION) -> SyncClassifier:
    """Model in eval mode from our checkpoint file or a released ``modules/`` folder."""
    if path and Path(path).is_dir():
        return load_released(path, option).to(device).eval()
    state = read_checkpoint(path, option)
    model = model_from_checkpoint(state, str(path), option)
    log.info("loaded sync classifier %s (step %s)", path, state.get("step"))
    return model.to(device).eval()


def weights_convention(path: str | Path, option: str = CHECKPOINT_OPTION) -> str:
    """The preprocessing convention the weights at ``path`` expect, without building the
    model: a released ``modules/`` folder says ``released`` (unless ``save_released`` wrote
    ours into its head config), our checkpoint says what it recorded (older ones: ``ours``),
    an AVID-CMA file ``released``."""
    p = Path(path)
    if p.is_dir():
        root = p if all((p / m).is_dir() for m in MODULES) else p / "modules"
        cfg_path = root / "head" / "config.json"
        try:
            head = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read {cfg_path}: {e} ({option})") from e
        return str(head.get("curate_convention") or RELEASED)
    if not p.is_file():
        raise FileNotFoundError(f"sync classifier weights not found: {p} ({option})")
    st = p.stat()
    return _file_convention(str(p.resolve()), st.st_size, st.st_mtime_ns, option)


@functools.lru_cache(maxsize=16)
def _file_summary(path: str, size: int, mtime_ns: int, option: str) -> tuple[str, str]:
    """(kind: ``curate`` / ``avid`` / ``other``, convention) of a checkpoint file, read once per
    file version: every stage asks (``resolve_models``), and the answer needs the whole file
    unpickled. Our checkpoint's keys and shapes are checked by the same read."""
    state = _torch_load(_source(path), option, source=path)   # the bytes hashed already, when small
    if is_avid_checkpoint(state):
        return "avid", RELEASED
    if isinstance(state, dict) and "config" in state and "model" in state:
        with torch.device("meta"):       # the architecture, no weights allocated
            model = SyncClassifier(SyncConfig.from_dict(state["config"]))
        check_state_fits(model, state["model"], path, option)
        return "curate", str(state.get("convention") or OURS)
    return "other", str(state.get("convention") or OURS) if isinstance(state, dict) else OURS


def _file_convention(path: str, size: int, mtime_ns: int, option: str) -> str:
    return _file_summary(path, size, mtime_ns, option)[1]


def inspect_weights(path: str | Path, option: str = CHECKPOINT_OPTION) -> dict:
    """What the driver needs of the scoring weights at ``path``, without building the model:
    their convention, after checking our checkpoint's keys and shapes against its
    architecture (one read of the file per process, shared with ``weights_convention``). A
    released folder is loaded (``load_released`` checks its modules); a file that is not our
    checkpoint raises ValueError naming ``option``."""
    p = Path(path)
    if p.is_dir():
        load_released(p, option)
        return {"convention": weights_convention(p, option)}
    if not p.is_file():
        raise FileNotFoundError(f"sync classifier checkpoint not found: {p}; train one with `curate "
                                f"sync train` and pass it (or the released modules/ folder) with {option}")
    st = p.stat()
    kind, conv = _file_summary(str(p.resolve()), st.st_size, st.st_mtime_ns, option)
    if kind != "curate":
        raise ValueError(f"{p} is not a curate sync classifier checkpoint (check {option})")
    return {"convention": conv}


def load_init(path: str | Path, cfg: SyncConfig | None = None,
              option: str = INIT_OPTION) -> SyncClassifier:
    """The starting model for training from ``path``: our checkpoint, a released folder, or
    the AVID-CMA checkpoint (encoders only, the head fresh, architecture ``cfg`` or full)."""
    path = Path(path)
    if path.is_dir():
        return load_released(path, option).train()
    if not path.is_file():
        raise FileNotFoundError(f"initialisation not found: {path} ({option})")
    # our file or AVID-CMA's (whose optimizer and criterion states are kept inert if odd)
    state = _torch_load(path, option, extras=tuple(_numpy_scalars()), inert=True)
    if is_avid_checkpoint(state):
        model = SyncClassifier(cfg or SyncConfig())
        _load_avid_states(model, state, path, option)
        model.convention = RELEASED   # the paper's initialisation, trained on released inputs
        return model
    if isinstance(state, dict) and "config" in state and "model" in state:
        return model_from_checkpoint(state, str(path), option)
    raise ValueError(f"{path} is neither a curate sync checkpoint nor an AVID-CMA checkpoint "
                     f"(keys module.video_model.*, module.audio_model.*) ({option})")
