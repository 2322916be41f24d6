"""Preprocessing conventions: objects whose methods do the preprocessing, one vocabulary.

A classifier is calibrated to the inputs it was trained on, so the convention travels with
the weights (``model.convention``; our checkpoints record it, the released ``modules/``
folder and the AVID-CMA initialisation imply ``released``). Scoring, training, evaluation,
the metrics and the trainer-side loader take a ``Convention`` (``get_convention(name)``, or
``convention_of(model)`` from the weights; an option may override it and every run records
the name used) and call its methods; none of them branches on the name. Nothing mixes them:
each object does every step its own way.

The two, by name (the names checkpoints, run.json and fingerprints record):

``ours`` (``Ours``): this package's exact decode. A grid decoded once (25 fps for the sync
classifier, 6 fps for the loader), the frame on screen at each time (last at or before it),
swscale to uint8 at decode and a clamped bicubic resize (short side + centre crop), the
exact samples from swresample (mean of all channels), container durations, all 31x31
anchors at evaluation, one flip per instance in training. The loader called it ``exact``;
that spelling is still accepted, with a DeprecationWarning.

``released`` (``Released``): what lzhangbj/ASVA's code does (``avsync/data.py``,
``scripts/avsync_eval.py``, ``avgen/data``, ``avgen/evaluations``; facts in
``../shared/reference/asva_eval``; the functions are ``sync_classifier.released`` and
``shards.clip_decode``): the shorter stream's duration, videos under 12 fps skipped, the
native frame nearest each time (sync classifier) or the first at or after it (generation
and metrics), float pixels resized without clamp, whole AAC frames joined, torchaudio sinc
resampling, centre crop to 32000 samples, the left channel's mel, one anchor per video at
evaluation, each clip flipped independently in training.

Each method says which step it does: ``segment_phi`` (scoring: where the clips come from),
``loader_window`` (the loader's placement, frames, pixels, audio, flip and layout),
``require_files`` / ``usable_sources`` / ``eval_clips`` / ``train_clips`` /
``validation_clips`` (the classifier's data: placement, frame choice, crop, resample,
flips), ``eval_protocol`` (how accuracy is read), ``generated_starts`` / ``score_generated``
(the metrics of generated videos).
"""
from __future__ import annotations

import logging
import random
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from decoding import native
from decoding.media import probe
from shards import clip_decode
from sync_classifier import data, generated_clips
from sync_classifier.model import OURS, RELEASED  # the names checkpoints record
# the released functions, importable from here as before
from sync_classifier.released import (CLIP_MEAN, CLIP_STD, COMPACT, EDGE, MIN_FPS,  # noqa: F401
                                      PLACEMENTS, UNIFORM, ReleasedClips, center_crop,
                                      clip_starts, clip_time_grid, offsets_spacing,
                                      released_accuracy, released_clips, released_instance,
                                      released_pixels, uniform_starts, usable_span)

log = logging.getLogger(__name__)

CONVENTION_OPTION = "--convention"
PROTOCOL_OPTION = "--protocol"
ALL_ANCHORS = "all-anchors"
PROTOCOLS = (RELEASED, ALL_ANCHORS)
#: older spellings still accepted (with a DeprecationWarning): the loader's ``exact``
ALIASES = {"exact": OURS}
FILES_NEEDED = "the released convention reads video files: pass --data "


@dataclass(frozen=True)
class Convention(ABC):
    """One named set of preprocessing choices; the subclasses do them."""

    name: str
    #: how ``curate sync eval`` reads accuracy unless ``--protocol`` says otherwise
    eval_protocol: str
    #: the placement of ``validation_clips`` (logged by training)
    validation_placement: str

    @abstractmethod
    def segment_phi(self, seg: Any, scorer: Any, pairs: list[tuple[Any, int]],
                    clip: tuple[float, int, int], primary: int | None = None) -> dict:
        """Scoring: phi of each (audio key, video key) pair of a ``filters.segment`` segment
        (audio keys as ``Segment.audio_time`` reads them);
        ``clip``: (audio seconds, grid frames between video frames, video frames) of a clip
        (``filters.sampling``; this package does not import ``filters``)."""

    @abstractmethod
    def loader_window(self, mp4: bytes, rng: random.Random, d: Any) -> tuple[Any, Any, float]:
        """The loader: (video, mel, window start) of one in-memory mp4; ``d`` holds the
        ``shards.loader.ClipDecoder`` settings."""

    def require_files(self, source: Any) -> None:
        """Raise when the classifier's data ``source`` (None: generated events) cannot be read."""

    @abstractmethod
    def usable_sources(self, sources: Sequence[data.VideoSource], offsets: Sequence[float]
                       ) -> tuple[list[data.VideoSource], list[data.Skipped]]:
        """(the sources long enough for clips at ``offsets``, those skipped and why)."""

    @abstractmethod
    def eval_clips(self, sources: Sequence[data.VideoSource], offsets: Sequence[float],
                   size: int, seed: int) -> Any:
        """Evaluation instances: clips centred on each source."""

    @abstractmethod
    def train_clips(self, sources: Sequence[data.VideoSource], offsets: Sequence[float],
                    size: int, cache_bytes: int) -> Any:
        """Training instances: random placements and flips."""

    @abstractmethod
    def validation_clips(self, sources: Sequence[data.VideoSource], offsets: Sequence[float],
                         size: int) -> Any:
        """Validation instances, placed as ``validation_placement`` says, no flip."""

    @abstractmethod
    def generated_starts(self, reference: Path) -> dict[str, float]:
        """Head, centre and tail clip starts of a reference video for the metrics."""

    @abstractmethod
    def score_generated(self, ref: Path, gen: Path, start: float, text: str | None,
                        sync_model: Any, scorer: Any, image_size: int) -> dict:
        """RelSync (and with an ImageBind ``scorer`` IA, IT, AlignSync) of one generated clip."""


@dataclass(frozen=True)
class Ours(Convention):
    """This package's exact decode (the module doc says what it does)."""

    name: str = OURS
    eval_protocol: str = ALL_ANCHORS
    validation_placement: str = "centred"

    def segment_phi(self, seg, scorer, pairs, clip, primary=None):
        """Clips cut from the segment's decoded grid (``SyncScorer.phi_pairs``)."""
        secs, step, frames = clip
        audio, mels = seg.audio_inputs(list(dict.fromkeys(a for a, _ in pairs)), secs)
        video = {v: seg.frames(v + step * i for i in range(frames))
                 for v in dict.fromkeys(v for _, v in pairs)}
        return scorer.phi_pairs(audio, video, pairs, mels=mels, primary=primary)

    def loader_window(self, mp4, rng, d):
        return clip_decode.ours_window(mp4, rng, d)

    def usable_sources(self, sources, offsets):
        return data.usable_sources(sources, offsets)

    def eval_clips(self, sources, offsets, size, seed):
        return data.ShiftedClipDataset(sources, offsets, size, train=False, seed=seed)

    def train_clips(self, sources, offsets, size, cache_bytes):
        return data.ShiftedClipDataset(sources, offsets, size, train=True, cache_bytes=cache_bytes)

    def validation_clips(self, sources, offsets, size):
        return data.ShiftedClipDataset(sources, offsets, size, train=False)

    def generated_starts(self, reference):
        return generated_clips.clip_starts(probe(reference)["duration"] or 0.0)

    def score_generated(self, ref, gen, start, text, sync_model, scorer, image_size):
        return generated_clips.score_ours(ref, gen, start, text, sync_model, scorer)


@dataclass(frozen=True)
class Released(Convention):
    """What the released code does (the module doc and ``sync_classifier.released``)."""

    name: str = RELEASED
    eval_protocol: str = RELEASED
    validation_placement: str = UNIFORM

    def segment_phi(self, seg, scorer, pairs, clip, primary=None):
        """The same clip starts read from the segment's file as the released code reads them
        (native frames, AAC-frame audio, left channel; ``SyncScorer.phi_released``)."""
        if seg.path is None:
            raise ValueError("the released sync convention reads the segment's file; none given")
        if primary is not None and 0 < primary < len(pairs):
            # the file is read per call and the clips depend on the span read (the resampler
            # starts at the earliest clip): P_sync's clips are read on their own, as before
            # the offset search existed, so their bits do not move
            return {**self.segment_phi(seg, scorer, pairs[:primary], clip),
                    **self.segment_phi(seg, scorer, pairs[primary:], clip)}
        g, off = seg.grid, float(seg.offset or 0.0)
        a_keys = list(dict.fromkeys(a for a, _ in pairs))
        v_keys = list(dict.fromkeys(v for _, v in pairs))
        ia, iv = {a: i for i, a in enumerate(a_keys)}, {v: j for j, v in enumerate(v_keys)}
        # the file's own clock: a stream-copied segment starts ``offset`` s into it
        phi = scorer.phi_released(seg.path, [off + seg.audio_time(a) for a in a_keys],
                                  [off + g.start + v / g.fps for v in v_keys],
                                  [(ia[a], iv[v]) for a, v in pairs], primary=primary)
        return dict(zip(pairs, phi))

    def loader_window(self, mp4, rng, d):
        return clip_decode.released_window(mp4, rng, d)

    def require_files(self, source):
        if source is None:
            raise ValueError(FILES_NEEDED + f"(or {CONVENTION_OPTION} {OURS} for generated events)")

    def usable_sources(self, sources, offsets):
        return data.released_usable_sources(sources, offsets)

    def eval_clips(self, sources, offsets, size, seed):
        return data.ReleasedClipDataset(sources, offsets, size, train=False)

    def train_clips(self, sources, offsets, size, cache_bytes):
        return data.ReleasedClipDataset(sources, offsets, size, train=True)

    def validation_clips(self, sources, offsets, size):
        return data.ReleasedClipDataset(sources, offsets, size, train=False,
                                        placement=self.validation_placement)

    def generated_starts(self, reference):
        return generated_clips.released_clip_starts(
            native.released_metadata(reference)["av_duration"] or 0.0)

    def score_generated(self, ref, gen, start, text, sync_model, scorer, image_size):
        return generated_clips.score_released(ref, gen, start, text, sync_model, scorer,
                                              image_size)


CONVENTIONS: dict[str, Convention] = {OURS: Ours(), RELEASED: Released()}


def get_convention(name: str | Convention | None, option: str = CONVENTION_OPTION) -> Convention:
    """The convention called ``name`` (a Convention passes through); None means ``ours``. An
    older spelling (``ALIASES``) gives its convention with a DeprecationWarning naming ``option``."""
    if isinstance(name, Convention):
        return name
    key = OURS if name is None else str(name)
    if key in ALIASES:
        warnings.warn(f"convention {key!r} ({option}) is now called {ALIASES[key]!r}",
                      DeprecationWarning, stacklevel=2)
        key = ALIASES[key]
    if key not in CONVENTIONS:
        raise ValueError(f"unknown convention {name!r} ({option}): choose {' or '.join(CONVENTIONS)}")
    return CONVENTIONS[key]


def convention_of(model, override: str | Convention | None = None) -> Convention:
    """The override when given, else the convention the weights carry (``ours`` if none)."""
    if override is not None:
        return get_convention(override)
    return get_convention(getattr(model, "convention", None) or OURS)


def get_protocol(name: str | None, conv: Convention, option: str = PROTOCOL_OPTION) -> str:
    """The evaluation protocol: ``name``, else the convention's own."""
    p = conv.eval_protocol if name is None else str(name)
    if p not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r} ({option}): choose {' or '.join(PROTOCOLS)}")
    return p
