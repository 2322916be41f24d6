"""Shifted audio/video clips for the sync classifier, and dataset readers.

Timing decisions (seed 003 section 1):

* Clips are 2 s: 12 video frames at 6 fps and 32000 audio samples -> the 1x128x204 mel of
  ``decoding.mel.imagebind_mel``.
* Training instances: 21 clips at offsets -2.0, -1.8, ..., 2.0 s around a centre, so a source
  needs 2 + 4 = 6 s. Evaluation instances: 31 clips at -0.60, -0.56, ..., 0.60 s (3.2 s).
  Clip k's audio and video come from the same window (positive pair); audio k with video j
  is shifted by offset_j - offset_k.
* Sources are decoded once at ``DECODE_FPS = 25`` (and 16 kHz): 0.04 s is exactly one frame
  and 0.2 s five, so every shift moves the sampled frames by whole source frames. The 6-fps
  clip frames are the nearest decoded frames to ``start + j / 6`` (the analysis grid's
  12 fps could not represent a 0.04-s shift). Any ``decoding.media.Grid`` works: a 12-fps grid
  gives nearest-frame quantisation (used for the 0.25-s P_sync shifts, where 0.25 s = 3 frames).
* Video preprocessing (``video_tensor``, as the released model): short side to the model's
  frame size (bicubic, antialiased), centre crop, CLIP mean/std (``VIDEO_MEAN``/``VIDEO_STD``)
  on RGB in [0, 1]. Random horizontal flip is the only
  augmentation, for training only, and is the same for all clips of an instance.
* Training reads each source many times (one random centre per visit), so
  ``ShiftedClipDataset`` decodes a source's whole usable span once and keeps it in a
  ``GridCache``: an LRU bounded by bytes, one per process (each DataLoader worker holds its
  own copy, so the memory bound is ``cache_bytes x max(num_workers, 1)``). Cached frames are
  stored already resized to the model's ``frame_size`` (32x32 for the small model: ~0.8 MB of
  frames + 0.64 MB of mono audio per 10-s source, instead of 38 MB at 224x224); the resize is
  the one ``video_tensor`` applies, rounded to uint8 (<= 0.5/255 difference).
"""
from __future__ import annotations

import logging
import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from decoding.media import DecodeError, Grid, decode_clip, probe
from decoding.mel import imagebind_mel

log = logging.getLogger(__name__)

DECODE_FPS = 25
CLIP_FPS = 6
CLIP_LEN = 2.0
SAMPLE_RATE = 16000
# the released model's normalisation: CLIP's mean/std on RGB in [0, 1]
VIDEO_MEAN = (0.48145466, 0.4578275, 0.40821073)
VIDEO_STD = (0.26862954, 0.26130258, 0.27577711)
TRAIN_OFFSETS = tuple(round(0.2 * i, 2) for i in range(-10, 11))   # 21 clips, 0.2 s apart
EVAL_OFFSETS = tuple(round(0.04 * i, 2) for i in range(-15, 16))   # 31 clips, 0.04 s apart
EVAL_TOLERANCE = 5                                                   # +-5 offsets = +-0.2 s
DEFAULT_CACHE_BYTES = 1 << 30   # per process; see GridCache


def span_needed(offsets: Sequence[float], clip_len: float = CLIP_LEN) -> float:
    """Seconds of source that clips at ``offsets`` around a centre cover."""
    return clip_len + (max(offsets) - min(offsets))


def video_tensor(frames: np.ndarray, size: int | None = None, flip: bool = False) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` RGB -> normalised float ``[3, T, S, S]``: the released model's
    preprocessing, the one definition for scoring, training, evaluation and metrics.

    Frames in [0, 1] are resized on the short side to ``size`` (bicubic, antialiased), centre
    cropped to ``size x size`` and normalised with the CLIP mean/std (``VIDEO_MEAN`` /
    ``VIDEO_STD``). ``size`` None keeps square frames as they are (the full model's 224 grid).
    ``flip`` mirrors horizontally (training augmentation).
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div_(255.0)
    if size is None and x.shape[2] != x.shape[3]:
        size = min(x.shape[2], x.shape[3])
    if size is not None:
        # clamped like torchvision's uint8 / PIL output: bicubic overshoots past [0, 1]
        x = _resize(x, size).clamp_(0.0, 1.0)
    if flip:
        x = x.flip(-1)
    mean = torch.tensor(VIDEO_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(VIDEO_STD).view(3, 1, 1, 1)
    return (x - mean) / std


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[C, T, H, W]`` float -> ``[C, T, size, size]``: short side to ``size`` (bicubic,
    antialiased, as torchvision's ``Resize(size, BICUBIC, antialias=True)``), centre crop."""
    h, w = x.shape[2], x.shape[3]
    if (h, w) != (size, size):
        if min(h, w) != size:
            # torchvision's rule: the long side is truncated, not rounded
            nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
            x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bicubic",
                                                align_corners=False, antialias=True)
        top = int(round((x.shape[2] - size) / 2.0))
        left = int(round((x.shape[3] - size) / 2.0))
        x = x[:, :, top:top + size, left:left + size]
    return x


def resize_frames(frames: np.ndarray, size: int, chunk: int = 64) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> uint8 ``[T, size, size, 3]`` with ``video_tensor``'s resize
    and crop (rounded back to uint8), ``chunk`` frames at a time to bound the float copy."""
    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i in range(0, len(frames), chunk):
        x = torch.from_numpy(np.ascontiguousarray(frames[i:i + chunk])).permute(3, 0, 1, 2).float()
        y = _resize(x, size).round_().clamp_(0, 255).to(torch.uint8)
        out[i:i + chunk] = y.permute(1, 2, 3, 0).numpy()
    return out


def valid_centres(grid: Grid, offsets: Sequence[float], clip_len: float = CLIP_LEN) -> tuple[float, float]:
    """Range [lo, hi] of centres for which every shifted clip lies inside the grid."""
    lo = grid.start + clip_len / 2 - min(offsets)
    hi = grid.start + len(grid.frames) / grid.fps - clip_len / 2 - max(offsets)
    return lo, hi


def shifted_clips(grid: Grid, center: float, offsets: Sequence[float], clip_len: float = CLIP_LEN,
                  fps: int = CLIP_FPS, frame_size: int | None = None, flip: bool = False,
                  mels: "HopMels | None" = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips at ``center + offset`` for each offset: mels ``[K,1,128,204]``, videos ``[K,3,T,H,W]``.

    Raises ValueError when a clip would reach outside the decoded grid (no silent padding:
    padded clips would be trivially distinguishable).
    """
    lo, hi = valid_centres(grid, offsets, clip_len)
    tol = 0.5 / grid.fps
    if not lo - tol <= center <= hi + tol:
        raise ValueError(f"centre {center:.3f}s with offsets [{min(offsets)}, {max(offsets)}] "
                         f"needs {span_needed(offsets, clip_len):.2f}s inside "
                         f"[{grid.start:.2f}, {grid.end:.2f}]s")
    n_frames = int(round(clip_len * fps))
    n_samples = int(round(clip_len * grid.sample_rate))
    audio = grid.audio
    out_mels, videos = [], []
    for off in offsets:
        t0 = center + off - clip_len / 2
        idx = [grid.frame_index(t0 + j / fps) for j in range(n_frames)]
        videos.append(video_tensor(grid.frames[idx], frame_size, flip))
        i0 = min(max(grid.sample_index(t0), 0), max(len(audio) - n_samples, 0))
        wave = audio[i0:i0 + n_samples]
        if len(wave) < n_samples:
            raise ValueError(f"audio shorter than a {clip_len}s clip")
        out_mels.append(imagebind_mel(wave, sample_rate=grid.sample_rate) if mels is None
                        else mels.clip(i0, n_samples))
    return torch.stack(out_mels), torch.stack(videos)


class HopMels:
    """Training-speed mels of one source: the fbank of the whole audio once, clips sliced from it.

    A clip's ``imagebind_mel`` is the 198 fbank frames of its 2 s (Kaldi frames remove their
    own DC, so ImageBind's global mean removal changes nothing), zero padded to 204 and
    normalised. Slicing the whole-audio fbank gives exactly that when the clip starts on the
    10-ms hop; other starts are rounded to the nearest hop (<= 5 ms, far below the 0.2-s
    training offsets). Computing 21 mels per instance was most of a CPU training step.
    Scoring and evaluation always use the exact ``imagebind_mel``.
    """

    HOP = 160

    def __init__(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        from decoding.mel import NUM_MEL_BINS, fbank
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"HopMels needs {SAMPLE_RATE} Hz audio, got {sample_rate}")
        self.n_bins = NUM_MEL_BINS
        self.fb = fbank(torch.from_numpy(np.ascontiguousarray(audio, np.float32)),
                        sample_rate=sample_rate).T.to(torch.float32)   # [bins, frames]

    def clip(self, i0: int, n_samples: int) -> torch.Tensor:
        from decoding.mel import IMAGEBIND_MEAN, IMAGEBIND_STD, TARGET_LENGTH
        n = 1 + (n_samples - 400) // self.HOP
        j = min(max(int(round(i0 / self.HOP)), 0), self.fb.shape[1] - n)
        fb = self.fb[:, j:j + n]
        if n < TARGET_LENGTH:
            fb = torch.nn.functional.pad(fb, (0, TARGET_LENGTH - n), value=0.0)
        return ((fb[:, :TARGET_LENGTH] - IMAGEBIND_MEAN) / IMAGEBIND_STD).unsqueeze(0)


# ---------------------------------------------------------------- sources

@dataclass
class VideoSource:
    """A span of a media file usable for shifted clips."""

    path: Path
    start: float = 0.0
    end: float | None = None
    source_id: str = ""


@dataclass
class Skipped:
    source: str
    reason: str


def _sources_from_manifest(out: Path, table: str) -> list[VideoSource]:
    from manifests.schemas import read_rows
    from manifests.source_lists import safe_id

    downloads = {}
    for r in read_rows(out, "downloads"):
        if r["status"] == "ok":
            downloads[r["source_id"]] = r
    srcs = []
    for r in read_rows(out, table):
        if r.get("status") != "ok" or r["source_id"] not in downloads:
            continue
        try:
            sid = safe_id(r["source_id"])
        except ValueError as e:
            log.warning("skipping row: %s", e)
            continue
        path = out / "media" / "raw" / f"{sid}.mp4"
        # rows hold segment times; a stream-copied download keeps its source's clock, on
        # which the segment starts at seg_start (None: the file starts with the segment)
        off = float(downloads[r["source_id"]].get("seg_start") or 0.0)
        srcs.append(VideoSource(path, off + float(r["start"]), off + float(r["end"]), sid))
    return srcs


def find_sources(data: str | Path) -> list[VideoSource]:
    """Sources from a directory of mp4s (recursive), a curate output directory (its
    ``selected`` table, else ``windows``) or a ``<out>/manifests/<table>.parquet`` file.
    Manifest paths are rebuilt as ``<out>/media/raw/<safe source_id>.mp4``."""
    data = Path(data)
    if data.is_file() and data.suffix == ".parquet":
        return _sources_from_manifest(data.parent.parent, data.stem)
    if not data.is_dir():
        raise FileNotFoundError(f"sync data not found: {data} (a folder of mp4s or a curate output)")
    for table in ("selected", "windows"):
        if (data / "manifests" / f"{table}.parquet").exists():
            return _sources_from_manifest(data, table)
    return [VideoSource(p, source_id=p.stem) for p in sorted(data.rglob("*.mp4"))]


def usable_sources(sources: Sequence[VideoSource], offsets: Sequence[float],
                   clip_len: float = CLIP_LEN) -> tuple[list[VideoSource], list[Skipped]]:
    """Sources long enough for the shifted clips (end filled from probe); the rest with a reason."""
    need = span_needed(offsets, clip_len)
    ok, skipped = [], []
    for s in sources:
        try:
            info = probe(s.path)
        except (DecodeError, OSError) as e:
            skipped.append(Skipped(str(s.path), f"probe failed: {e}"))
            continue
        if not info["has_audio"]:
            skipped.append(Skipped(str(s.path), "no audio stream"))
            continue
        end = info["duration"] if s.end is None else min(s.end, info["duration"] or s.end)
        if end is None or end - s.start < need - 1e-6:
            skipped.append(Skipped(str(s.path), f"too short: {0 if end is None else end - s.start:.2f}s "
                                                f"< {need:.2f}s needed for offsets"))
            continue
        ok.append(VideoSource(s.path, s.start, end, s.source_id))
    for sk in skipped:
        log.info("sync data: skipped %s: %s", sk.source, sk.reason)
    return ok, skipped


SILENT_PEAK = 1e-3        # -60 dBFS: below this the audio is silence (all mels alike)
STATIC_LEVEL = 1.0        # mean |frame - first frame| in uint8 levels: below this, a still


def degenerate_reason(grid: Grid) -> str | None:
    """Why a source cannot teach synchronisation, or None.

    Silent audio (peak below ``SILENT_PEAK``) or a still picture (every frame within
    ``STATIC_LEVEL`` of the first) makes the 21 clips of one modality the same input, so the
    contrastive targets are unreachable: such an instance only adds a zero or conflicting
    gradient. Training skips them (evaluation does not)."""
    if grid.audio.size == 0 or float(np.abs(grid.audio).max()) < SILENT_PEAK:
        return "no sync cue: silent audio"
    f = grid.frames
    if len(f) < 2:
        return "no sync cue: a single frame"
    diff = np.abs(f[1:].astype(np.int16) - f[0].astype(np.int16)).mean(axis=(1, 2, 3))
    if float(diff.max()) < STATIC_LEVEL:
        return "no sync cue: still picture"
    return None


def grid_bytes(grid: Grid) -> int:
    """Memory held by a grid's arrays."""
    return int(grid.frames.nbytes + grid.audio_channels.nbytes)


class GridCache:
    """Decoded grids by key, least recently used evicted first, bounded by ``max_bytes``.

    A grid larger than the whole budget is not kept. Counts ``hits``/``misses`` (a miss is a
    decode by the caller). Not shared between processes: each DataLoader worker has its own.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key, make: Callable[[], Grid]) -> Grid:
        """The cached grid for ``key``, else ``make()`` (cached when it fits)."""
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        grid = make()
        size = grid_bytes(grid)
        if size > self.max_bytes:
            return grid
        while self.bytes + size > self.max_bytes and self._items:
            _, old = self._items.popitem(last=False)
            self.bytes -= grid_bytes(old)
        self._items[key] = grid
        self.bytes += size
        return grid


class ShiftedClipDataset(Dataset):
    """One item per source: ``{"mel": [K,1,128,204], "video": [K,3,T,S,S]}``, or
    ``{"failed": Skipped}`` when decoding or clipping failed.

    ``train=True`` picks a random centre (on the decoded frame grid, so every offset moves
    whole frames) and flip per item; otherwise the centre of the usable range and no flip.

    ``cache_bytes`` (default: ``DEFAULT_CACHE_BYTES`` when training, 0 otherwise): with a
    budget, a source's whole usable span is decoded once at ``DECODE_FPS`` (frames resized to
    ``frame_size``, audio mixed to mono) and kept in a per-process ``GridCache``, so later
    visits cost only clip slicing and mels. With 0, each item decodes just the span it needs
    (evaluation reads each source once). A failed decode is not cached: it is retried and
    reported again on the next visit.

    ``skip_degenerate`` (default: ``train``): sources with silent audio or a still picture
    (``degenerate_reason``) give ``{"failed": ...}`` instead of an instance.
    """

    def __init__(self, sources: Sequence[VideoSource], offsets: Sequence[float],
                 frame_size: int | None, train: bool, clip_len: float = CLIP_LEN,
                 fps: int = CLIP_FPS, seed: int = 0, cache_bytes: int | None = None,
                 skip_degenerate: bool | None = None) -> None:
        self.sources = list(sources)
        self.offsets = tuple(offsets)
        self.frame_size = frame_size
        self.train = train
        self.clip_len = clip_len
        self.fps = fps
        self.seed = seed
        if cache_bytes is None:
            cache_bytes = DEFAULT_CACHE_BYTES if train else 0
        self.cache = GridCache(cache_bytes) if cache_bytes > 0 else None
        self.skip_degenerate = train if skip_degenerate is None else skip_degenerate
        self._verdicts: dict[int, str | None] = {}

    def __len__(self) -> int:
        return len(self.sources)

    def _decode(self, s: VideoSource, t0: float, t1: float) -> Grid:
        grid = decode_clip(s.path, t0, t1, fps=DECODE_FPS, short_side=224, crop=224,
                           sample_rate=SAMPLE_RATE)
        if self.cache is None:
            return grid
        frames = grid.frames if self.frame_size is None else resize_frames(grid.frames, self.frame_size)
        return Grid(frames=frames, audio_channels=grid.audio[None], start=grid.start,
                    fps=grid.fps, sample_rate=grid.sample_rate, has_audio=grid.has_audio)

    def _instance_grid(self, i: int, rng: random.Random) -> tuple[Grid, float]:
        """A grid holding the instance's span and the clips' centre inside it."""
        s = self.sources[i]
        need = span_needed(self.offsets, self.clip_len)
        end = s.end if s.end is not None else s.start + need
        if self.cache is None:
            t0 = s.start + (rng.uniform(0, end - s.start - need) if self.train
                            else (end - s.start - need) / 2)
            grid = self._decode(s, t0, t0 + need)
            return grid, valid_centres(grid, self.offsets, self.clip_len)[0]  # the span fits exactly
        key = (str(s.path), s.start, end)
        grid = self.cache.get(key, lambda: self._decode(s, s.start, end))
        lo, hi = valid_centres(grid, self.offsets, self.clip_len)
        if not self.train:
            centre = (lo + hi) / 2
        else:
            # whole frames from the grid start, inside [lo, hi]
            k_lo = math.ceil((lo - grid.start) * grid.fps - 1e-6)
            k_hi = math.floor((hi - grid.start) * grid.fps + 1e-6)
            if k_hi < k_lo:
                raise ValueError(f"decoded span {grid.duration:.2f}s too short for the offsets")
            centre = grid.start + rng.randint(k_lo, k_hi) / grid.fps
        return grid, centre

    def _degenerate(self, i: int, grid: Grid) -> str | None:
        # once per source and process: silence or stillness does not depend on the centre
        if i not in self._verdicts:
            self._verdicts[i] = degenerate_reason(grid)
        return self._verdicts[i]

    def __getitem__(self, i: int) -> dict:
        s = self.sources[i]
        # training draws from torch's generator, which train() seeds and DataLoader seeds per
        # worker: a seeded run samples the same centres and flips again
        rng = (random.Random(int(torch.randint(0, 2 ** 62, (1,)).item())) if self.train
               else random.Random(self.seed * 1_000_003 + i))
        try:
            grid, centre = self._instance_grid(i, rng)
            reason = self._degenerate(i, grid) if self.skip_degenerate else None
            if reason is not None:
                return {"failed": Skipped(str(s.path), reason)}
            flip = self.train and rng.random() < 0.5
            mel, video = shifted_clips(grid, centre, self.offsets, self.clip_len, self.fps,
                                       self.frame_size, flip)
        except (DecodeError, ValueError, OSError) as e:
            log.warning("sync data: %s failed: %s", s.path, e)
            return {"failed": Skipped(str(s.path), str(e))}
        return {"mel": mel, "video": video}


class GeneratedClipDataset(Dataset):
    """Items from a callable ``make(index, rng) -> Grid`` (synthetic media, no decoding)."""

    def __init__(self, make: Callable[[int, random.Random], Grid], n: int,
                 offsets: Sequence[float], frame_size: int | None, train: bool,
                 clip_len: float = CLIP_LEN, fps: int = CLIP_FPS, seed: int = 0,
                 hop_mels: bool = False) -> None:
        self.make, self.n, self.offsets = make, n, tuple(offsets)
        self.frame_size, self.train, self.clip_len, self.fps, self.seed = frame_size, train, clip_len, fps, seed
        # hop_mels: ``make`` returns a fixed set of grids; their whole-audio fbank is kept
        self.hop_mels = hop_mels
        self._mels: dict[int, tuple[Grid, HopMels]] = {}

    def _mel_source(self, grid: Grid) -> "HopMels | None":
        if not self.hop_mels:
            return None
        key = id(grid)
        if key not in self._mels:
            if len(self._mels) >= 4096:   # ``make`` is not returning a fixed set: stay bounded
                self._mels.clear()
            self._mels[key] = (grid, HopMels(grid.audio, grid.sample_rate))
        return self._mels[key][1]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        rng = random.Random(self.seed * 1_000_003 + i) if not self.train else random.Random()
        grid = self.make(i, rng)
        lo, hi = valid_centres(grid, self.offsets, self.clip_len)
        # centre snapped to the grid so all offsets land on whole frames
        centre = rng.uniform(lo, hi) if self.train else (lo + hi) / 2
        centre = grid.start + math.floor((centre - grid.start) * grid.fps) / grid.fps
        centre = min(max(centre, lo), hi)
        flip = self.train and rng.random() < 0.5
        mel, video = shifted_clips(grid, centre, self.offsets, self.clip_len, self.fps,
                                   self.frame_size, flip, self._mel_source(grid))
        return {"mel": mel, "video": video}


def collate_instances(items: list[dict]) -> dict:
    """Stack instances; failed ones go to ``"failed"`` (``mel``/``video`` None if all failed)."""
    ok = [x for x in items if "mel" in x]
    failed = [x["failed"] for x in items if "failed" in x]
    if not ok:
        return {"mel": None, "video": None, "failed": failed}
    return {"mel": torch.stack([x["mel"] for x in ok]),
            "video": torch.stack([x["video"] for x in ok]), "failed": failed}


# ---------------------------------------------------------------- the released convention

def released_usable_sources(sources: Sequence[VideoSource], offsets: Sequence[float],
                            clip_len: float = CLIP_LEN) -> tuple[list[VideoSource], list[Skipped]]:
    """``usable_sources`` as the released code judges a video (``sync_classifier.released.usable_span``):
    the shorter stream's duration, and videos under 12 fps skipped with that reason."""
    from sync_classifier.released import usable_span
    need = span_needed(offsets, clip_len)
    ok, skipped = [], []
    for s in sources:
        try:
            start, end = usable_span(s.path, s.start, s.end, need)
        except (DecodeError, ValueError, OSError) as e:
            skipped.append(Skipped(str(s.path), str(e)))
            continue
        ok.append(VideoSource(s.path, start, end, s.source_id))
    for sk in skipped:
        log.info("sync data (released convention): skipped %s: %s", sk.source, sk.reason)
    return ok, skipped


class ReleasedClipDataset(Dataset):
    """``ShiftedClipDataset`` under the released convention (``sync_classifier.conventions``):
    each item decodes the source's native frames and AAC frames for its clips. Evaluation
    centres the clips on the usable span; training draws random-compact starts and flips
    each clip independently; ``placement="uniform"`` (evaluation only) spreads them over the
    span as the released sync training validates. Items are ``{"mel", "video"}`` or
    ``{"failed": Skipped}``."""

    def __init__(self, sources: Sequence[VideoSource], offsets: Sequence[float],
                 frame_size: int | None, train: bool, clip_len: float = CLIP_LEN,
                 fps: int = CLIP_FPS, placement: str = "compact") -> None:
        from sync_classifier.released import offsets_spacing
        offsets_spacing(offsets)          # evenly spaced, else a clear error now
        if train and placement != "compact":
            raise ValueError(f"{placement} placement is for evaluation, not training")
        self.sources, self.offsets = list(sources), tuple(offsets)
        self.frame_size = frame_size or 224
        self.train, self.clip_len, self.fps, self.placement = train, clip_len, fps, placement

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> dict:
        from sync_classifier.released import released_instance
        s = self.sources[i]
        # training: torch's generator (seeded by train() and per DataLoader worker)
        rng = random.Random(int(torch.randint(0, 2 ** 62, (1,)).item())) if self.train else None
        try:
            rc = released_instance(s.path, self.offsets, self.frame_size, rng, s.start, s.end,
                                   self.clip_len, self.fps, self.placement)
        except (DecodeError, ValueError, OSError) as e:
            log.warning("sync data: %s failed: %s", s.path, e)
            return {"failed": Skipped(str(s.path), str(e))}
        return {"mel": rc.mel, "video": rc.video}
