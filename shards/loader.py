"""Trainer-side loader: WebDataset shards -> AVSyncD's inputs.

Imports webdataset, PyAV, torch, ``decoding.media`` and ``decoding.mel`` only (no ray, no engine),
so a training job needs nothing else from curate.

Each sample's mp4 is decoded in memory (``av.open(io.BytesIO(...))``, no temp files) onto
AVSyncD's grid (lzhangbj/ASVA ``avgen/data/base.py``; DESIGN section 7):

* window: 2 s (12 frames at 6 fps). Train: start uniform in ``[0, D - 2]``, from a random
  generator seeded by (seed, epoch, key, how often this process has seen the key), so a run
  is reproducible and a clip gets a new window each epoch. Test: centred, ``(D - 2) / 2``.
  ``D = min(video duration, audio duration)``, as AVSyncD does.
* video: ``float32 [12, 3, 256, 256]``, short side 256 then centre crop 256x256. Value range
  **[0, 1]** by default, which is what AVSyncD's dataset returns (its loader calls the
  transform with ``normalize=False``); ``normalize=True`` gives [-1, 1]. Frame k is the frame
  shown at ``start + k / 6`` (``decoding.media`` convention).
* audio: the 2-s window, 16 kHz mono -> ``decoding.mel.imagebind_mel`` -> ``float32 [1, 128, 204]``.
* clips shorter than 2 s (AVSync15 has clips down to 2 s, and a 2.0-s clip can decode a few
  ms short): the window starts at 0; missing frames repeat the last frame (AVSyncD does the
  same); the audio is the samples that exist, and ``imagebind_mel`` pads the fbank with zero
  frames to 204 (what ImageBind's ``waveform2melspec`` does to a short waveform). A clip
  without an audio stream is an error (handled by ``handler``: skipped with a warning by default).

Conventions (``convention=``):

* ``"exact"`` (default): the above. Frame k is the frame on screen at ``start + k / 6``, the
  audio is exactly ``[start, start + 2)`` (mono downmix, resampled by libswresample), and the
  window is placed on the true stream durations. Use it to train new models: what the
  model sees is what the clip plays at those times.
* ``"released"``: the tensors the paper's own generation dataset (lzhangbj/ASVA
  ``avgen/data/base.py`` ``BaseAudioVideoDataset`` with ``avgen/data/utils.py``, torchvision's
  ``video_reader``) gives for the same clip, layout included: video ``float32 [3, 12, S, S]``
  (channels first, then frames). Use it to compare with, fine-tune or evaluate the released
  checkpoints, whose inputs were made this way. What differs from ``exact``:

  - placement: ``D`` is the shorter stream duration as torchvision reports it (whole
    microseconds); train ``max(0, uniform(0, D - 2))``, test ``max(0, (D - 2) / 2)``;
  - frames (``released_frame_picks``): pts are whole microseconds (``pts_us * 1e-6``); a
    target time starts at the window start and grows by ``1/6`` in float64 each time a frame
    is taken; the taken frame is the first decoded frame with ``pts >= target`` (the next
    source frame, not the one on screen), among frames with ``pts <= start + 2 + 1/12``;
    missing frames repeat the last. With float drift a 30-fps source gets the frame after
    the exact one at several k;
  - pixels (``generation_pixels``): centre crop to the target aspect first (``int`` sizes,
    offset ``(w - h) // 2``), then bilinear antialiased resize to ``S x S`` on floats in [0, 1];
  - audio: whole AAC frames whose pts lie in ``[start, start + 2]`` (so it starts at the first
    frame boundary at or after the window start), all channels joined, resampled to 16 kHz
    with torchaudio's sinc resampler (``decoding.native.sinc_resample``), then
    ``decoding.mel.released_mel``: centre crop to 32000 samples, the fbank of channel 0 (the
    left channel), padded to 204 frames, ImageBind's normalisation.

Sharding: ``nodesplitter=wds.split_by_node`` then ``workersplitter=wds.split_by_worker``, so
every (rank, worker) reads a disjoint set of shards; a worker with no shard yields nothing
(``empty_check`` is off, because a test split may have fewer shards than workers). For DDP
training use at least ``world_size * num_workers`` shards, or ``resampled=True`` with
``.with_epoch(n)`` so every rank sees the same number of samples.
"""
from __future__ import annotations

import hashlib
import io
import logging
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from dataclasses import dataclass

import av
import numpy as np
import torch
import webdataset as wds

from decoding import native
from decoding.media import DecodeError, decode_open
from decoding.mel import imagebind_mel, released_mel

log = logging.getLogger(__name__)

WINDOW_S = 2.0
FPS = 6
NUM_FRAMES = 12
SIZE = 256
SAMPLE_RATE = 16000
CONVENTIONS = ("exact", "released")


def _rng(*parts: Any) -> random.Random:
    """A generator seeded by a stable hash of ``parts`` (Python's hash() is salted per process)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def _durations(c) -> tuple[float, float | None]:
    """(video duration, audio duration or None) of an open file, in seconds."""
    if not c.streams.video:
        raise DecodeError("no video stream")
    total = float(c.duration / av.time_base) if c.duration else None

    def dur(s) -> float | None:
        if s.duration:
            return float(s.duration * s.time_base)
        return total

    v = dur(c.streams.video[0])
    a = dur(c.streams.audio[0]) if c.streams.audio else None
    if v is None:
        raise DecodeError("unknown video duration")
    return v, a


def window_start(duration: float, train: bool, rng: random.Random, window: float = WINDOW_S) -> float:
    """AVSyncD's window start: uniform in train, centred in test, 0 when the clip is short."""
    slack = duration - window
    if slack <= 0:
        return 0.0
    return rng.uniform(0.0, slack) if train else slack / 2.0


# ---------------------------------------------------------------- the released convention

def released_start(av_duration: float, train: bool, rng: random.Random,
                   window: float = WINDOW_S) -> float:
    """The released window start: ``max(0, uniform(0, D - 2))`` in train (``uniform`` with
    ``b < a`` draws in ``[b, a]``, so short clips start at 0), ``max(0, (D - 2) / 2)`` in test."""
    if train:
        return max(0.0, rng.uniform(0.0, av_duration - window))
    return max(0.0, (av_duration - window) / 2.0)


def released_frame_picks(pts: np.ndarray, start: float, window: float = WINDOW_S,
                         fps: int = FPS, num_frames: int = NUM_FRAMES) -> list[int]:
    """Positions in ``pts`` (ascending seconds, whole microseconds) of the frames the
    released ``load_video_clip_from_videoreader`` takes for a window at ``start``: among the
    frames with ``pts <= start + window + 1 / (2 fps)`` (its ``takewhile``), the stepped
    choice of ``decoding.native.stepped_frames``. Empty when no frame qualifies."""
    step = 1.0 / fps
    pts = np.asarray(pts, np.float64)
    pts = pts[:int(np.searchsorted(pts, start + window + step / 2.0, side="right"))]
    try:
        return [int(i) for i in native.stepped_frames(pts, start, step, num_frames)]
    except DecodeError:
        return []


def generation_pixels(frames: np.ndarray, size: int = SIZE) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> float32 ``[N, 3, size, size]`` in [0, 1] as the released
    ``load_and_transform_images_stable_diffusion`` (square target): centre crop the long side
    to the short one, then bilinear antialiased resize (no clamping, no re-quantising).
    ``sync_classifier.generated_eval.metrics_video`` starts from these pixels too."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    if h <= w:  # target aspect 1 >= h / w: trim the width
        x0 = (w - h) // 2
        x = x[..., x0:x0 + h]
    else:
        y0 = (h - w) // 2
        x = x[..., y0:y0 + w, :]
    if tuple(x.shape[-2:]) != (size, size):   # a same-size resize is the identity: skipped
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                            align_corners=False, antialias=True)
    return x.contiguous()


def released_frames(data: bytes | str | Path, start: float, window: float = WINDOW_S,
                    fps: int = FPS, num_frames: int = NUM_FRAMES, decode_from: float | None = None
                    ) -> tuple[native.NativeFrames, list[int]]:
    """(the decoded frames with ``decode_from <= pts <= start + window + 1 / (2 fps)``, the
    positions of the ``num_frames`` taken, ``released_frame_picks``) of the window at
    ``start`` of an mp4 (bytes or a path). ``decode_from`` defaults to ``start``
    (``sync_classifier.generated_eval.released_clip`` passes ``max(start, 0)``)."""
    step = 1.0 / fps
    t0 = start if decode_from is None else decode_from
    vf = native.decode_native_frames(data, t0, start + window + step / 2.0)
    picks = released_frame_picks(vf.pts, start, window, fps, num_frames)
    if not picks:
        raise DecodeError(f"no video frame at or after {start:.3f} s")
    return vf, picks


def released_wave(data: bytes | str | Path, start: float, window: float = WINDOW_S,
                  sample_rate: int = SAMPLE_RATE
                  ) -> tuple[torch.Tensor, native.AudioFrames, np.ndarray]:
    """(the ``[C, N]`` wave at ``sample_rate``, the decoded audio frames, the positions of
    those joined) of the window at ``start``: the whole AAC frames with pts in
    ``[start, start + window]``, joined, sinc resampled (``decoding.native.sinc_resample``)."""
    af = native.decode_audio_frames(data, start, start + window)
    wave, used = native.join_audio_frames(af, start, start + window)
    return native.sinc_resample(torch.from_numpy(wave), af.sample_rate, sample_rate), af, used


@dataclass
class ReleasedClip:
    """One window as the released generation dataset loads it."""
    video: torch.Tensor        # float32 [3, T, S, S] in [0, 1]
    mel: torch.Tensor          # float32 [1, 128, 204]
    start: float
    frame_index: list[int]     # decoded-frame index (display order, from 0) per output frame
    audio_frames: list[int]    # decode indices of the AAC frames joined


def decode_released(data: bytes, start: float, size: int = SIZE, flip: bool = False,
                    window: float = WINDOW_S, fps: int = FPS, num_frames: int = NUM_FRAMES,
                    sample_rate: int = SAMPLE_RATE) -> ReleasedClip:
    """The released dataset's video and mel of the window at ``start`` of an in-memory mp4."""
    vf, picks = released_frames(data, start, window, fps, num_frames)
    video = generation_pixels(vf.frames[picks], size)
    if flip:
        video = video.flip(-1)
    wave, af, used = released_wave(data, start, window, sample_rate)
    mel = released_mel(wave, sample_rate=sample_rate)
    return ReleasedClip(video=video.permute(1, 0, 2, 3).contiguous(), mel=mel, start=start,
                        frame_index=[int(vf.index[i]) for i in picks],
                        audio_frames=[int(af.index[i]) for i in used])


class ClipDecoder:
    """Turns a raw WebDataset sample (bytes per member) into AVSyncD's tensors.

    A plain class (not a closure) so the pipeline pickles into DataLoader workers.
    """

    def __init__(self, train: bool, seed: int = 0, epoch: int = 0, normalize: bool = False,
                 random_flip: bool = False, window: float = WINDOW_S, fps: int = FPS,
                 size: int = SIZE, sample_rate: int = SAMPLE_RATE,
                 convention: str = "exact") -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        self.convention = convention
        self.train, self.seed, self.epoch = train, seed, epoch
        self.normalize, self.random_flip = normalize, random_flip
        self.window, self.fps, self.size, self.sample_rate = window, fps, size, sample_rate
        self._seen: dict[str, int] = {}

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        key = sample["__key__"]
        for ext in ("mp4", "cls", "txt"):
            if ext not in sample:
                raise ValueError(f"sample {key} has no .{ext} member")
        n = self._seen.get(key, 0)
        self._seen[key] = n + 1
        rng = _rng(self.seed, self.epoch, key, n)
        video, audio, start = self.decode(sample["mp4"], rng)
        return {"video": video, "audio": audio, "label": int(sample["cls"].decode().strip()),
                "text": sample["txt"].decode("utf-8"), "key": key, "start": start}

    def decode(self, data: bytes, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(video [T,3,S,S] (released: [3,T,S,S]), mel [1,128,204], window start) of one mp4
        given as bytes."""
        if self.convention == "released":
            return self._decode_released(data, rng)
        # one open: the durations, then the window's frames and only the window's audio
        try:
            with av.open(io.BytesIO(data)) as c:
                v_dur, a_dur = _durations(c)
                if a_dur is None:
                    raise DecodeError("clip has no audio stream")
                start = window_start(min(v_dur, a_dur), self.train, rng, self.window)
                grid = decode_open(c, start, start + self.window, self.fps, self.size, self.size,
                                   self.sample_rate, mono=True)
        except av.error.FFmpegError as e:
            raise DecodeError(f"cannot decode the sample's mp4: {e}") from e
        if not grid.has_audio:
            raise DecodeError("clip has no decodable audio")
        frames, wave = grid.frames, grid.audio
        # a short clip: keep only real samples; imagebind_mel pads the fbank (ImageBind's way)
        n_real = int(round(max(a_dur - start, 0.0) * self.sample_rate))
        wave = wave[:max(min(n_real, wave.shape[0]), int(0.025 * self.sample_rate))]
        # channels first on the bytes, then one float pass (the same values as converting first)
        video = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
        video = video.to(torch.float32).div_(255.0)
        if self.train and self.random_flip and rng.random() < 0.5:
            video = video.flip(-1)
        if self.normalize:
            video = video.mul_(2.0).sub_(1.0)
        mel = imagebind_mel(wave, sample_rate=self.sample_rate)
        return video, mel, start

    def _decode_released(self, data: bytes, rng: random.Random
                         ) -> tuple[torch.Tensor, torch.Tensor, float]:
        meta = native.released_metadata(data)
        if meta["audio_duration"] is None:
            raise DecodeError("clip has no audio stream")
        start = released_start(meta["av_duration"], self.train, rng, self.window)
        flip = self.train and self.random_flip and rng.random() < 0.5
        clip = decode_released(data, start, self.size, flip, self.window, self.fps,
                               int(round(self.window * self.fps)), self.sample_rate)
        video = clip.video.mul_(2.0).sub_(1.0) if self.normalize else clip.video
        return video, clip.mel, start


class _SeededShuffle:
    """Sample shuffle buffer whose generator is made when iteration starts, inside the worker,
    from (seed, epoch, rank, worker, pass): workers do not repeat each other's order, and a
    run is reproducible. (``wds.shuffle(seed=...)`` would give every worker and epoch the
    same permutation.)"""

    def __init__(self, bufsize: int, seed: int, epoch: int) -> None:
        self.bufsize, self.seed, self.epoch = bufsize, seed, epoch
        self._passes = 0

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        rng = _rng("shuffle", self.seed, self.epoch, rank, worker, self._passes)
        self._passes += 1
        yield from wds.filters._shuffle(iter(src), bufsize=self.bufsize,
                                        initial=min(100, self.bufsize), rng=rng)


def make_dataset(urls: str | list[str], split: str = "train", seed: int = 0,
                 shuffle: bool | None = None, resampled: bool = False, epoch: int = 0,
                 shuffle_buffer: int = 500, normalize: bool = False, random_flip: bool = False,
                 handler: Callable = wds.warn_and_continue,
                 convention: str = "exact") -> wds.WebDataset:
    """A WebDataset pipeline yielding dicts ``{video [12,3,256,256] float32 in [0,1] (or
    [-1,1] with normalize), audio [1,128,204] float32, label int, text str, key str,
    start float}``.

    ``urls``: tar paths/URLs or a brace pattern (``shards.writer.shard_urls`` lists a folder).
    ``split``: "train" (random windows, shuffled by default) or "test" (centred windows, in
    shard order by default). ``epoch``: pass the epoch number (or rebuild the dataset) so
    windows and orders change between epochs when DataLoader workers are not persistent.
    ``handler``: what to do with a sample that fails to decode (default: log and skip).
    ``convention``: ``"exact"`` (default) or ``"released"`` (the paper's generation dataset's
    tensors, video ``[3, 12, 256, 256]``; see the module doc for which to use when).
    Batch with ``torch.utils.data.DataLoader(ds, batch_size=..., num_workers=...)``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    train = split == "train"
    shuffle = train if shuffle is None else shuffle
    ds = wds.WebDataset(
        urls, resampled=resampled, handler=handler,
        shardshuffle=(100 if shuffle else False) if not resampled else False,
        detshuffle=True, seed=seed * 1_000_003 + epoch,
        nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker, empty_check=False)
    if shuffle and shuffle_buffer > 1:
        ds = ds.compose(_SeededShuffle(shuffle_buffer, seed, epoch))
    decoder = ClipDecoder(train=train, seed=seed, epoch=epoch, normalize=normalize,
                          random_flip=random_flip, convention=convention)
    return ds.map(decoder, handler=handler)
