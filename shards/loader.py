"""Trainer-side loader: WebDataset shards -> AVSyncD's inputs.

Imports webdataset, torch, ``shards.clip_decode`` (PyAV and ``decoding``) and
``sync_classifier.conventions`` only (no ray, no engine), so a training job needs nothing else
from curate.

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

Conventions (``convention=``, a name or a ``sync_classifier.conventions.Convention``, whose
``loader_window`` decodes the window; ``shards.clip_decode`` holds both decoders):

* ``"ours"`` (default; ``"exact"``, its older name here, still works with a
  DeprecationWarning): the above. Frame k is the frame on screen at ``start + k / 6``, the
  audio is exactly ``[start, start + 2)`` (mono downmix, resampled by libswresample), and the
  window is placed on the true stream durations. Use it to train new models: what the
  model sees is what the clip plays at those times.
* ``"released"``: the tensors the paper's own generation dataset (lzhangbj/ASVA
  ``avgen/data/base.py`` ``BaseAudioVideoDataset`` with ``avgen/data/utils.py``, torchvision's
  ``video_reader``) gives for the same clip, layout included: video ``float32 [3, 12, S, S]``
  (channels first, then frames). Use it to compare with, fine-tune or evaluate the released
  checkpoints, whose inputs were made this way. What differs from ``ours``:

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
import logging
import random
from typing import Any, Callable, Iterable, Iterator

import torch
import webdataset as wds

# the window decoders live in ``shards.clip_decode``; their names stay importable from here
from shards.clip_decode import (FPS, NUM_FRAMES, SAMPLE_RATE, SIZE, WINDOW_S,  # noqa: F401
                                ReleasedClip, decode_released, generation_pixels,
                                released_frame_picks, released_frames, released_start,
                                released_wave, window_start)
from sync_classifier.conventions import Convention, get_convention

log = logging.getLogger(__name__)


def _rng(*parts: Any) -> random.Random:
    """A generator seeded by a stable hash of ``parts`` (Python's hash() is salted per process)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))



class ClipDecoder:
    """Turns a raw WebDataset sample (bytes per member) into AVSyncD's tensors.

    A plain class (not a closure) so the pipeline pickles into DataLoader workers.
    """

    def __init__(self, train: bool, seed: int = 0, epoch: int = 0, normalize: bool = False,
                 random_flip: bool = False, window: float = WINDOW_S, fps: int = FPS,
                 size: int = SIZE, sample_rate: int = SAMPLE_RATE,
                 convention: str | Convention | None = None) -> None:
        self.convention = get_convention(convention, "convention=")
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
        given as bytes, as the convention decodes a window."""
        return self.convention.loader_window(data, rng, self)


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
                 convention: str | Convention | None = None) -> wds.WebDataset:
    """A WebDataset pipeline yielding dicts ``{video [12,3,256,256] float32 in [0,1] (or
    [-1,1] with normalize), audio [1,128,204] float32, label int, text str, key str,
    start float}``.

    ``urls``: tar paths/URLs or a brace pattern (``shards.writer.shard_urls`` lists a folder).
    ``split``: "train" (random windows, shuffled by default) or "test" (centred windows, in
    shard order by default). ``epoch``: pass the epoch number (or rebuild the dataset) so
    windows and orders change between epochs when DataLoader workers are not persistent.
    ``handler``: what to do with a sample that fails to decode (default: log and skip).
    ``convention``: ``"ours"`` (default) or ``"released"`` (the paper's generation dataset's
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
