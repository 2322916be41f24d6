"""Training the sync classifier with hard negatives only (seed 003 section 1.2).

Per instance, 21 clips shifted by 0.2 s over [-2, 2] s; phi for all 21x21 (audio i, video j)
pairs; loss Eq. 1 = a2v cross-entropy over each row + v2a cross-entropy over each column,
temperature 0.1, averaged over the 21 anchors and the instances of a batch. Negatives are
only the shifted clips of the same instance (easy negatives from other instances are
detrimental, per the seed). AdamW, constant lr 2e-4, weight decay 0.01, batch 32, 40k steps.

Runs on the CPU (small config), one GPU, or several GPUs under ``torchrun`` (DDP, one
process per GPU, ``batch_size`` is the global batch split over ranks and ``accum_steps``
micro-batches: batch 32 x 21 clips fits one GPU as e.g. 8 micro-batches of 4). Mixed
precision with ``torch.autocast`` (``amp``: "auto" = bf16 on CUDA where supported, else fp16
with a grad scaler, and off on the CPU; "bf16", "fp16" or "off" to choose).

Initialisation (``init``): our checkpoint, the released ``modules/`` folder, or the AVID-CMA
AudioSet checkpoint the paper starts from (both encoders; the head fresh). Without it the
paper reports hard-negative training from scratch diverges: ``warmup_steps`` first trains
with easy negatives (the unshifted clip of the other instances in the batch, Eq. 1 over the
batch) before switching to hard negatives.
Checkpoints are atomic; ``<stem>.last.pt`` is written every ``ckpt_every`` steps and a run
resumes from it.

Preprocessing convention (``sync_classifier.conventions``, ``convention``): default the
initialisation's (the released folder and AVID-CMA imply ``released``; our checkpoints carry
theirs), else ``ours``. ``released`` reads the files as the released code does (native
frames, AAC-frame audio windows, random-compact clip starts, each clip flipped on its own);
``ours`` uses the cached 25-fps grid and one flip per instance. The checkpoint records it;
a resumed run keeps it (asking for another one is an error, never a mixed run).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from decoding.media import Grid

from sync_classifier import conventions
from sync_classifier.data import (DEFAULT_CACHE_BYTES, TRAIN_OFFSETS, GeneratedClipDataset,
                                  ReleasedClipDataset, ShiftedClipDataset, collate_instances,
                                  find_sources, released_usable_sources, usable_sources)
from sync_classifier.model import (SyncClassifier, SyncConfig, load_init, model_from_checkpoint,
                                   read_checkpoint, save_checkpoint, small_config)

log = logging.getLogger(__name__)

OUT_OPTION = "--out"   # `curate sync train`'s checkpoint folder (resumed from its last.pt)

TAU = 0.1


@dataclass
class TrainConfig:
    """``data``: a folder of mp4s / a curate output / a manifest parquet, or None for generated
    events. ``out``: the final checkpoint file (``*.pt``) or a folder (then ``sync_classifier.pt``
    inside it)."""

    out: Path
    data: Path | None = None
    init: Path | None = None
    steps: int = 40_000
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.01
    tau: float = TAU
    small: bool = False
    model: SyncConfig | None = None
    ckpt_every: int = 1000
    log_every: int = 50
    num_workers: int = 4
    device: str | None = None
    amp: bool | str = "auto"          # "auto" | "bf16" | "fp16" | "off" (True = "auto")
    accum_steps: int = 1              # micro-batches per optimizer step
    # clip offsets of an instance (s); default the paper's 21 over [-2, 2]
    offsets: tuple[float, ...] = TRAIN_OFFSETS
    warmup_steps: int = 0             # stage 1: easy negatives (other instances) first
    seed: int = 0
    synthetic_duration: float = 8.0
    max_minutes: float | None = None   # stop early (with a checkpoint) after this wall time
    resume: bool = True
    # decoded-source cache per data process (main or each worker), see data.GridCache
    cache_mb: float = DEFAULT_CACHE_BYTES / 2 ** 20
    # with data None: ``make(index, rng) -> Grid`` returning grids of a fixed in-memory set
    # (their whole-audio fbank is kept: ``data.HopMels``); default: fresh synthetic events
    grid_factory: Callable[[int, random.Random], Grid] | None = None
    # preprocessing convention: "released" | "ours" | None (the init's, else ours)
    convention: str | None = None
    # validation videos (like ``data``; the authors' test list) and how often (steps; the
    # released config's test_steps): released convention = 21 clips placed uniformly
    val_data: Path | None = None
    val_every: int = 2500


def checkpoint_paths(out: str | Path) -> tuple[Path, Path]:
    """(final, last) checkpoint paths for ``out``."""
    out = Path(out)
    final = out if out.suffix == ".pt" else out / "sync_classifier.pt"
    return final, final.with_name(final.stem + ".last.pt")


def sync_contrastive_loss(phi: torch.Tensor, tau: float = TAU
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 1 over ``phi [B, K, K]`` (phi[b, i, j] = phi(a_i, v_j)); diagonal = positives.

    Returns (loss, a2v accuracy, v2a accuracy); accuracies are Eq. 2 (argmax == k), detached.
    """
    if phi.dim() == 2:
        phi = phi.unsqueeze(0)
    b, k, k2 = phi.shape
    if k != k2:
        raise ValueError(f"phi must be square per instance, got {tuple(phi.shape)}")
    logits = phi.float() / tau
    target = torch.arange(k, device=phi.device).expand(b, k)
    a2v = nn.functional.cross_entropy(logits.reshape(b * k, k), target.reshape(-1))
    v2a = nn.functional.cross_entropy(logits.transpose(1, 2).reshape(b * k, k), target.reshape(-1))
    with torch.no_grad():
        acc_a2v = (logits.argmax(2) == target).float().mean()
        acc_v2a = (logits.argmax(1) == target).float().mean()
    return a2v + v2a, acc_a2v, acc_v2a


class PairwisePhi(nn.Module):
    """``(mel [B,K,1,F,T], video [B,K,3,T,H,W]) -> phi [B,K,K]`` as one forward (for DDP).

    ``easy=True`` (stage-1 warm-up): only the unshifted middle clip of each instance is
    encoded and phi is ``[1, B, B]`` across instances (negatives = other instances).
    """

    def __init__(self, model: SyncClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, mel: torch.Tensor, video: torch.Tensor, easy: bool = False) -> torch.Tensor:
        b, k = mel.shape[:2]
        if easy:
            c = k // 2
            a = self.model.encode_audio(mel[:, c])
            v = self.model.encode_video(video[:, c])
            return self.model.pairwise(a.float(), v.float()).unsqueeze(0)
        a = self.model.encode_audio(mel.flatten(0, 1)).view(b, k, -1)
        v = self.model.encode_video(video.flatten(0, 1)).view(b, k, -1)
        return self.model.pairwise(a.float(), v.float())


# ---------------------------------------------------------------- setup helpers

def _dist_setup() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return rank, local, world


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device:
        return torch.device(cfg.device)
    return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def _build_model(cfg: TrainConfig) -> SyncClassifier:
    """A fresh model, or the ``init`` weights (strict: a key or shape that differs is an error
    naming ``--init``)."""
    mcfg = cfg.model if cfg.model is not None else (small_config() if cfg.small else None)
    if cfg.init:
        model = load_init(cfg.init, mcfg)
        log.info("init from %s", cfg.init)
        return model.train()
    return SyncClassifier(mcfg or SyncConfig())


def _dataset(cfg: TrainConfig, mcfg: SyncConfig, conv: str | conventions.Convention):
    """(the training instances, the sources skipped): the convention's clips of ``cfg.data``,
    or generated events (no data)."""
    conv = conventions.get_convention(conv)
    conv.require_files(cfg.data)
    if cfg.data is None:
        from sync_classifier.synthetic import make_grid_factory
        n = max(cfg.steps * cfg.batch_size, 1)
        make = cfg.grid_factory or make_grid_factory(cfg.synthetic_duration, mcfg.frame_size)
        return GeneratedClipDataset(make, n, cfg.offsets, mcfg.frame_size, train=True,
                                    seed=cfg.seed, hop_mels=cfg.grid_factory is not None), []
    sources, skipped = conv.usable_sources(find_sources(cfg.data), cfg.offsets)
    if not sources:
        raise ValueError(f"no usable training videos in {cfg.data} ({len(skipped)} skipped, "
                         f"e.g. {skipped[0].reason if skipped else 'none found'})")
    return conv.train_clips(sources, cfg.offsets, mcfg.frame_size,
                            int(cfg.cache_mb * 2 ** 20)), skipped


def _validation_set(cfg: TrainConfig, mcfg: SyncConfig, conv: str | conventions.Convention):
    """(loader, placement) over ``cfg.val_data``, or None: the convention's validation clips
    (released: placed as the released sync training's test set, ``sampling_type="uniform"``,
    evenly over the span, no flip, so the accuracies compare with the authors' logs; ours:
    centred, as ``curate sync eval`` places them)."""
    if cfg.val_data is None:
        return None
    conv = conventions.get_convention(conv)
    sources, skipped = conv.usable_sources(find_sources(cfg.val_data), cfg.offsets)
    placement = conv.validation_placement
    ds = conv.validation_clips(sources, cfg.offsets, mcfg.frame_size)
    if not sources:
        raise ValueError(f"no usable validation videos in {cfg.val_data} ({len(skipped)} skipped, "
                         f"e.g. {skipped[0].reason if skipped else 'none found'}) (--val-data)")
    log.info("sync train: validation on %d videos (%d skipped), %d clips each, %s placement, "
             "every %d steps", len(sources), len(skipped), len(cfg.offsets), placement,
             cfg.val_every)
    loader = DataLoader(ds, batch_size=max(cfg.batch_size, 1), shuffle=False,
                        num_workers=cfg.num_workers, collate_fn=collate_instances)
    return loader, placement


def validate(model: SyncClassifier, loader: DataLoader, device: torch.device, autocast,
             tau: float = TAU) -> dict:
    """Mean contrastive loss and exact-offset accuracies (a2v, v2a: the argmax over the K
    clips is the paired one) per validation instance, in eval mode, as the released
    trainer's test pass reports them; the model is left in train mode."""
    net, tot, n = PairwisePhi(model), [0.0, 0.0, 0.0], 0
    model.eval()
    with torch.no_grad():
        for batch in loader:
            if batch["mel"] is None:
                continue
            with autocast:
                phi = net(batch["mel"].to(device), batch["video"].to(device))
            b = phi.shape[0]
            for i, x in enumerate(sync_contrastive_loss(phi, tau)):
                tot[i] += x.item() * b
            n += b
    model.train()
    if n == 0:
        return {"val_instances": 0, "val_loss": None, "val_acc_a2v": None, "val_acc_v2a": None}
    return {"val_instances": n, "val_loss": tot[0] / n, "val_acc_a2v": tot[1] / n,
            "val_acc_v2a": tot[2] / n}


def amp_dtype(device: torch.device, amp: bool | str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: full precision)."""
    mode = {True: "auto", False: "off", None: "off"}.get(amp, amp)
    if mode not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"amp must be auto, bf16, fp16 or off, got {amp!r}")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 autocast needs CUDA; use bf16 on the CPU")
        return torch.float16
    if mode == "auto" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _amp_context(device: torch.device, amp: bool | str):
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return torch.autocast(device_type=device.type, enabled=False), None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast(device_type=device.type, dtype=dtype), scaler


def _batches(loader: DataLoader, sampler):
    epoch = 0
    warned: set[tuple[str, str]] = set()
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        yielded = False
        for batch in loader:
            for f in batch["failed"]:
                if (f.source, f.reason) not in warned:  # once per source and reason, not per visit
                    warned.add((f.source, f.reason))
                    log.warning("training instances skipped: %s: %s", f.source, f.reason)
            if batch["mel"] is not None:
                yielded = True
                yield batch
        if not yielded:
            raise ValueError("every training instance failed to load in a whole epoch")
        epoch += 1


# ---------------------------------------------------------------- training

def train(config: TrainConfig | None = None, **kwargs) -> Path:
    """Train; returns the final checkpoint path. Keyword arguments override ``TrainConfig``
    fields (``train(out=..., data=..., steps=..., batch_size=..., small=True, init=...)``)."""
    cfg = _normalised(config, kwargs)
    rank, local, world = _dist_setup()
    device = _device(cfg, local)
    torch.manual_seed(cfg.seed + rank)
    random.seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    final, last = checkpoint_paths(cfg.out)
    final.parent.mkdir(parents=True, exist_ok=True)
    model, opt, step = _model_and_optimizer(cfg, last, device)
    net: nn.Module = PairwisePhi(model)
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[local] if device.type == "cuda" else None)

    log.info("sync train: %s convention", model.convention)
    conv = conventions.get_convention(model.convention)
    dataset, skipped = _dataset(cfg, model.config, conv)
    # the global batch is split over ranks, then over accumulated micro-batches
    per_rank = max(cfg.batch_size // (world * cfg.accum_steps), 1)
    sampler = DistributedSampler(dataset, world, rank, shuffle=True) if world > 1 else None
    loader = DataLoader(dataset, batch_size=per_rank, shuffle=sampler is None, sampler=sampler,
                        num_workers=cfg.num_workers, collate_fn=collate_instances,
                        pin_memory=device.type == "cuda", drop_last=False,
                        persistent_workers=cfg.num_workers > 0)
    autocast, scaler = _amp_context(device, cfg.amp)
    loop = _Loop(cfg, model, net, opt, device, autocast, scaler, rank, world, last,
                 val=_validation_set(cfg, model.config, conv) if rank == 0 else None,
                 history=last.with_name(final.stem + ".log.jsonl"),
                 extra={"train_config": _jsonable(cfg), "convention": model.convention,
                        "skipped": [dataclasses.asdict(s) for s in skipped][:1000]})
    step = loop.run(_batches(loader, sampler), step)
    if rank == 0:
        save_checkpoint(final, model, None, step, loop.extra)
        log.info("sync classifier written to %s (step %d)", final, step)
    if world > 1:
        torch.distributed.barrier()
    return final


def _normalised(config: TrainConfig | None, kwargs: dict) -> TrainConfig:
    """The config with ``kwargs`` over it, its paths as ``Path``, checked."""
    cfg = dataclasses.replace(config, **kwargs) if config else TrainConfig(**kwargs)
    cfg.out = Path(cfg.out)
    cfg.data = Path(cfg.data) if cfg.data else None
    cfg.init = Path(cfg.init) if cfg.init else None
    cfg.val_data = Path(cfg.val_data) if cfg.val_data else None
    if cfg.accum_steps < 1:
        raise ValueError(f"accum_steps must be >= 1, got {cfg.accum_steps}")
    return cfg


def _model_and_optimizer(cfg: TrainConfig, last: Path, device: torch.device):
    """(model on ``device``, its optimizer, the step to start from): a new model, or the one
    ``last`` holds when resuming."""
    model = _build_model(cfg)
    if cfg.convention is not None:
        model.convention = conventions.get_convention(cfg.convention).name
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    if cfg.resume and last.exists():
        # the resumed file is found through --out: its errors name that option
        state = read_checkpoint(last, option=OUT_OPTION)
        model = model_from_checkpoint(state, str(last), option=OUT_OPTION)
        if cfg.convention is not None and model.convention != cfg.convention:
            raise ValueError(f"{last} was trained with the {model.convention} convention; "
                             f"{conventions.CONVENTION_OPTION} {cfg.convention} would mix them "
                             "(use another --out)")
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if "optimizer" in state:
            opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log.info("resuming from %s at step %d", last, step)
    model.to(device)
    for g in opt.param_groups:  # constant lr, also after a resume with a new --lr
        g["lr"] = cfg.lr
    _move_optimizer(opt, device)
    return model, opt, step


@dataclass
class _Loop:
    """The training loop's state: one optimizer step at a time, logged, validated and
    checkpointed (rank 0) every so many steps, stopped at ``steps`` or ``max_minutes``."""
    cfg: TrainConfig
    model: SyncClassifier
    net: nn.Module
    opt: torch.optim.Optimizer
    device: torch.device
    autocast: Any
    scaler: Any
    rank: int
    world: int
    last: Path
    val: Any
    history: Path
    extra: dict

    def run(self, batches, step: int) -> int:
        cfg, t_start = self.cfg, time.monotonic()
        pbar = _progress(self.rank, step, cfg.steps)
        self.net.train()
        while step < cfg.steps:
            easy = step < cfg.warmup_steps
            loss, acc_a2v, acc_v2a = _optimizer_step(self.net, self.opt, batches, self.device,
                                                     self.autocast, self.scaler, cfg, easy, self.world)
            step += 1
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {step}")
            rec = {"step": step, "loss": loss, "acc_a2v": acc_a2v, "acc_v2a": acc_v2a,
                   "negatives": "easy" if easy else "hard",
                   "elapsed_s": round(time.monotonic() - t_start, 1)}
            timeout = self._timeout(rec["elapsed_s"])
            if self.rank == 0:
                self._record(pbar, step, rec, timeout)
            if timeout:
                log.info("stopping at step %d after %.1f min (max_minutes)", step, cfg.max_minutes)
                break
        if pbar is not None:
            pbar.close()
        return step

    def _timeout(self, elapsed_s: float) -> bool:
        timeout = self.cfg.max_minutes is not None and elapsed_s > 60 * self.cfg.max_minutes
        if self.world > 1:  # all ranks must stop at the same step
            flag = torch.tensor([int(timeout)], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            timeout = bool(flag.item())
        return timeout

    def _record(self, pbar, step: int, rec: dict, timeout: bool) -> None:
        """Log the step; validate and checkpoint when it is time (rank 0)."""
        cfg = self.cfg
        _log_step(pbar, self.history, rec, cfg.log_every)
        if self.val is not None and (step % cfg.val_every == 0 or step == cfg.steps or timeout):
            _log_validation(self.history, step, self.val[1],
                            validate(self.model, self.val[0], self.device, self.autocast, cfg.tau))
        if step % cfg.ckpt_every == 0 or step == cfg.steps or timeout:
            save_checkpoint(self.last, self.model, self.opt, step, self.extra)


def _optimizer_step(net: nn.Module, opt: torch.optim.Optimizer, batches, device: torch.device,
                    autocast, scaler, cfg: TrainConfig, easy: bool, world: int
                    ) -> tuple[float, float, float]:
    """One optimizer step over ``cfg.accum_steps`` micro-batches; mean loss and accuracies."""
    opt.zero_grad(set_to_none=True)
    tot = [0.0, 0.0, 0.0]
    for micro in range(cfg.accum_steps):
        batch = next(batches)
        if easy and batch["mel"].shape[0] < 2:
            raise ValueError("easy negatives need at least 2 instances per micro-batch "
                             "(raise batch_size or lower accum_steps)")
        mel = batch["mel"].to(device, non_blocking=True)
        video = batch["video"].to(device, non_blocking=True)
        # DDP: all-reduce gradients only on the last micro-batch
        sync = world <= 1 or micro == cfg.accum_steps - 1 or not hasattr(net, "no_sync")
        ctx = contextlib.nullcontext() if sync else net.no_sync()
        with ctx:
            with autocast:
                phi = net(mel, video, easy)
            loss, acc_a2v, acc_v2a = sync_contrastive_loss(phi, cfg.tau)
            scaled = loss / cfg.accum_steps
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        for i, x in enumerate((loss, acc_a2v, acc_v2a)):
            tot[i] += x.item() / cfg.accum_steps
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return tot[0], tot[1], tot[2]


def _move_optimizer(opt: torch.optim.Optimizer, device: torch.device) -> None:
    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k != "step":
                st[k] = v.to(device)


def _progress(rank: int, step: int, total: int):
    if rank != 0:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=step, desc="sync train", dynamic_ncols=True, mininterval=5)


def _log_step(pbar, history: Path, rec: dict, every: int) -> None:
    if pbar is not None:
        pbar.update(1)
    if rec["step"] % every == 0 or rec["step"] == 1:
        if pbar is not None:
            pbar.set_postfix(loss=f"{rec['loss']:.3f}", a2v=f"{rec['acc_a2v']:.2f}",
                             v2a=f"{rec['acc_v2a']:.2f}")
        log.info("step %(step)d loss %(loss).4f acc a2v %(acc_a2v).3f v2a %(acc_v2a).3f", rec)
        with history.open("a") as f:
            f.write(json.dumps(rec) + "\n")


def _log_validation(history: Path, step: int, placement: str, res: dict) -> None:
    rec = {"step": step, "validation": placement, **res}
    if res["val_loss"] is None:
        log.warning("validation at step %d (%s placement): no instance could be read", step, placement)
    else:
        log.info("validation at step %(step)d (%(validation)s placement, %(val_instances)d "
                 "videos): loss %(val_loss).4f acc a2v %(val_acc_a2v).3f v2a %(val_acc_v2a).3f", rec)
    with history.open("a") as f:
        f.write(json.dumps(rec) + "\n")


def _jsonable(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    return json.loads(json.dumps(d, default=str))
