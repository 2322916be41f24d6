"""Audio-video synchronisation (seed 003, sections 2.1 and 5.2).

For the middle 2 s of a window the sync classifier gives phi for three audio-fixed /
video-shifted pairs (a2v) and three video-fixed / audio-shifted pairs (v2a), shifts
-0.25 / 0 / +0.25 s (``filters.sampling``). P_sync is the softmax mass on the unshifted pair,
with no temperature (seed Eq. 4), via ``sync_classifier.metrics.p_sync``; chance is 1/3.
Keep when both directions are ``>= 0.341``.

The classifier's own offset (seed 003 section 1.3, its test protocol): the window's in-sync
12 frames against 31 audio clips shifted 0.04 s apart over [-0.6, +0.6] s
(``sampling.offset_shifts_s``), cut from the decode's kept audio margins
(``decoding.media.Grid.wide_audio``: the one decode, no second read of the source); the
softmax over their phi and its argmax give ``sync_offset_s`` (Synchformer's sign: positive =
the audio runs ahead) and ``sync_offset_p``. A merged clip carries the mode of its windows'
offsets (``sync_offset_s``), the share of windows at it (``sync_offset_agree``) and the mean
probability (``sync_offset_p``); they go to the selected manifest and the sample JSON's
``sync_certificate``. They only record: no bound, so no recipe's funnel moves.

``SyncScorer`` wraps a ``sync_classifier.model.SyncClassifier`` (the released layout);
``from_checkpoint`` takes our checkpoint file or the released ``modules/`` folder. ``phi_pairs`` takes the
distinct audio clips and video clips of a whole segment and the (audio, video) pairs needed;
when the model exposes separate encoders it encodes every distinct clip once and runs only
the head per pair, else it runs ``forward`` once per distinct pair.
"""
from __future__ import annotations

import logging
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from filters import sampling
from filters.spec import Bound, ClipColumn, FilterSpec, ModelSpec

log = logging.getLogger(__name__)

def _p_sync(phi3: Sequence[float]) -> float:
    # lazy: keeps select/registry free of torch; p_sync validates shape and finiteness
    from sync_classifier.metrics import p_sync
    return p_sync(np.asarray(phi3, dtype=np.float64))


def score(phi_a2v: Sequence[float], phi_v2a: Sequence[float]) -> tuple[float, float]:
    """P_sync in both directions from phi for shifts (-0.25, 0, +0.25) s (middle = in sync)."""
    return _p_sync(phi_a2v), _p_sync(phi_v2a)


def window_phi(phi: Mapping[tuple[Hashable, Hashable], float], audio_keys: Sequence[Hashable],
               video_keys: Sequence[Hashable]) -> tuple[list[float], list[float]]:
    """Arrange pair scores into the (a2v, v2a) triples of one window.

    ``audio_keys`` / ``video_keys``: the clip keys for shifts -1, 0, +1 (``SYNC_SHIFTS`` order).
    """
    a0, v0 = audio_keys[1], video_keys[1]
    return [phi[(a0, v)] for v in video_keys], [phi[(a, v0)] for a in audio_keys]


class SyncScorer:
    """Batched phi over (audio, video) pairs with a SyncClassifier.

    Audio clips are float32 ``[32000]`` (2 s at 16 kHz), turned into the 1x128x204 mel by
    ``decoding.mel.imagebind_mel``; video clips are uint8 ``[12, H, W, 3]``, turned into the
    model's input by ``sync_classifier.data.video_tensor`` (the released preprocessing: short
    side to the model's frame size, bicubic antialiased, centre crop, CLIP mean/std).
    """

    #: clips / pairs per forward: CPU as before; on CUDA large enough to fill the GPU (a video
    #: clip is 37 GFLOP). Scoring passes one segment's clips per call (``curate.ops.scoring``
    #: runs per-segment forward passes for determinism), chunked by this size
    CPU_BATCH, CUDA_BATCH = 16, 64

    def __init__(self, model, device: str = "cpu", batch_size: int | None = None, precision: str = "auto",
                 channels_last: bool | None = None, convention: str | None = None):
        import torch
        from filters import precision as precision_mod
        from sync_classifier.conventions import convention_of
        self.torch, self.prec = torch, precision_mod
        self.device = torch.device(device)
        # bf16 autocast on CUDA, fp32 on CPU (filters.precision); channels-last (cuDNN's NHWC
        # kernels) on CUDA unless asked otherwise: the classifier is all convolutions
        self.precision = precision_mod.resolve(precision, self.device)
        self.channels_last = self.device.type == "cuda" if channels_last is None else bool(channels_last)
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self._to_channels_last(self.model)
        self.batch_size = int(batch_size or (self.CUDA_BATCH if self.device.type == "cuda" else self.CPU_BATCH))
        self.split = self._split_api(model)
        self.frame_size = getattr(getattr(model, "config", None), "frame_size", None)
        # the name of the preprocessing the weights expect (``sync_classifier.conventions``;
        # its ``segment_phi`` says where the clips come from)
        self.convention = convention_of(model, convention).name

    def _to_channels_last(self, model) -> None:
        """4-D weights (the audio encoder's Conv2d) NHWC, 5-D (the video encoder's Conv3d) NDHWC."""
        for p in model.parameters():
            if p.dim() in (4, 5):
                fmt = self.torch.channels_last if p.dim() == 4 else self.torch.channels_last_3d
                p.data = p.data.contiguous(memory_format=fmt)

    def _input(self, x):
        x = self.prec.to_device(x, self.device)
        if self.channels_last:
            fmt = self.torch.channels_last if x.dim() == 4 else self.torch.channels_last_3d
            x = x.contiguous(memory_format=fmt)
        return x

    @staticmethod
    def _split_api(model):
        """(encode_audio, encode_video, head) when the model has them, else None (use forward)."""
        names = ("encode_audio", "encode_video", "head")
        if all(callable(getattr(model, n, None)) for n in names):
            return tuple(getattr(model, n) for n in names)
        return None

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "cpu", batch_size: int | None = None,
                        precision: str = "auto", channels_last: bool | None = None,
                        convention: str | None = None) -> "SyncScorer":
        """Our checkpoint file, or the released ``modules/`` folder (or the folder above it).
        ``convention``: override the one the weights carry."""
        from sync_classifier.model import load_sync_classifier
        return cls(load_sync_classifier(path, device), device=device, batch_size=batch_size,
                   precision=precision, channels_last=channels_last, convention=convention)

    @classmethod
    def random(cls, seed: int = 0, device: str = "cpu", config=None, batch_size: int | None = None,
               precision: str = "auto", channels_last: bool | None = None,
               convention: str | None = None) -> "SyncScorer":
        """Randomly initialised small classifier: demo and tests only (its scores mean nothing)."""
        import torch
        from sync_classifier.model import SyncClassifier, small_config
        torch.manual_seed(seed)
        model = SyncClassifier(config if config is not None else small_config())
        return cls(model, device=device, batch_size=batch_size, precision=precision,
                   channels_last=channels_last, convention=convention)

    # -- inputs -------------------------------------------------------------------------
    def _mels(self, waves: Sequence[np.ndarray]):
        from decoding.mel import imagebind_mel
        n = int(sampling.SYNC_AUDIO_SECONDS * 16000)
        out = []
        for w in waves:
            w = np.asarray(w, dtype=np.float32)
            if w.shape != (n,):
                raise ValueError(f"sync audio must be float32 [{n}], got {w.shape}")
            out.append(imagebind_mel(self.torch.from_numpy(w)))
        return self._input(self.torch.stack(out))

    def _videos(self, clips: Sequence[np.ndarray]):
        from sync_classifier.data import video_tensor
        out = []
        for c in clips:
            c = np.asarray(c)
            if c.ndim != 4 or c.shape[0] != sampling.SYNC_FRAMES or c.dtype != np.uint8:
                raise ValueError(f"sync video must be uint8 [12, H, W, 3], got {c.dtype} {c.shape}")
            # small models take smaller frames (config.frame_size): video_tensor resizes
            out.append(video_tensor(c, size=self.frame_size))
        return self._input(self.torch.stack(out))

    # -- scoring ------------------------------------------------------------------------
    def phi_pairs(self, audio: Mapping[Hashable, np.ndarray], video: Mapping[Hashable, np.ndarray],
                  pairs: Sequence[tuple[Hashable, Hashable]],
                  mels: Mapping[Hashable, Any] | None = None,
                  primary: int | None = None) -> dict[tuple[Hashable, Hashable], float]:
        """phi for each distinct (audio key, video key) pair. ``mels``: the model's audio
        input (``[1, 128, 204]``) of some audio keys, ready (computed together by
        ``decoding.mel.imagebind_mels_at``), used instead of a wave in ``audio``.
        ``primary``: the first so many pairs (P_sync's) are batched apart from the rest (the
        offset search's), so their bits are those of a call without the rest."""
        pairs, ready = list(dict.fromkeys(pairs)), dict(mels or {})
        with self.torch.inference_mode(), self.prec.compute(self.precision, self.device):
            if self.split is not None:
                return self._phi_split(audio, video, pairs, ready, primary)
            return self._phi_forward(audio, video, pairs, ready, primary)

    def _audio_batch(self, keys: Sequence[Hashable], audio: Mapping[Hashable, np.ndarray],
                     ready: Mapping[Hashable, Any]):
        """The model input of the audio clips ``keys``: ready mels where given, else from the wave."""
        if not any(k in ready for k in keys):
            return self._mels([audio[k] for k in keys])
        from decoding.mel import imagebind_mel
        mels = [ready[k] if k in ready else imagebind_mel(self.torch.from_numpy(
            np.asarray(audio[k], dtype=np.float32))) for k in keys]
        return self._input(self.torch.stack(mels))

    def _batches(self, items, primary: int | None = None):
        """Chunks of ``batch_size``; the first ``primary`` items chunked apart from the rest
        (batch composition moves the low bits of a model's output)."""
        parts = [items] if primary is None else [items[:primary], items[primary:]]
        for part in parts:
            for i in range(0, len(part), self.batch_size):
                yield part[i:i + self.batch_size]

    @staticmethod
    def _keys_apart(pairs, primary: int | None, side: int) -> tuple[list, int | None]:
        """The distinct keys of one side of ``pairs`` (0 audio, 1 video), those of the first
        ``primary`` pairs first, and how many those are."""
        if primary is None:
            return list(dict.fromkeys(p[side] for p in pairs)), None
        first = list(dict.fromkeys(p[side] for p in pairs[:primary]))
        rest = [k for k in dict.fromkeys(p[side] for p in pairs[primary:]) if k not in set(first)]
        return first + rest, len(first)

    def _phi_forward(self, audio, video, pairs, ready, primary=None):
        out: dict = {}
        for chunk in self._batches(pairs, primary):
            mel = self._audio_batch([a for a, _ in chunk], audio, ready)
            vid = self._videos([video[v] for _, v in chunk])
            phi = self.model(mel, vid).float().reshape(-1).cpu().numpy()
            out.update({p: float(x) for p, x in zip(chunk, phi)})
        return out

    def _phi_split(self, audio, video, pairs, ready, primary=None):
        enc_a, enc_v, head = self.split
        (a_keys, pa), (v_keys, pv) = self._keys_apart(pairs, primary, 0), self._keys_apart(pairs, primary, 1)
        fa, fv = {}, {}
        for chunk in self._batches(a_keys, pa):
            fa.update(zip(chunk, enc_a(self._audio_batch(chunk, audio, ready))))
        for chunk in self._batches(v_keys, pv):
            fv.update(zip(chunk, enc_v(self._videos([video[k] for k in chunk]))))
        out: dict = {}
        for chunk in self._batches(pairs, primary):
            a = self.torch.stack([fa[k] for k, _ in chunk])
            v = self.torch.stack([fv[k] for _, k in chunk])
            phi = head(a, v).float().reshape(-1).cpu().numpy()
            out.update({p: float(x) for p, x in zip(chunk, phi)})
        return out

    def phi_released(self, path, audio_starts: Sequence[float], video_starts: Sequence[float],
                     pairs: Sequence[tuple[int, int]], primary: int | None = None) -> list[float]:
        """phi under the released convention for clips of the file at ``path``: audio clip
        ``audio_starts[i]`` with video clip ``video_starts[j]`` for each ``(i, j)`` of ``pairs``
        (clip starts in file seconds; ``sync_classifier.conventions.released_clips``);
        ``primary`` as in ``phi_pairs``."""
        from sync_classifier.conventions import released_clips
        starts = sorted(set(map(float, audio_starts)) | set(map(float, video_starts)))
        pos = {t: k for k, t in enumerate(starts)}
        rc = released_clips(path, np.asarray(starts), self.frame_size or 224)
        a_idx = [pos[float(audio_starts[i])] for i, _ in pairs]
        v_idx = [pos[float(video_starts[j])] for _, j in pairs]
        out: list[float] = []
        with self.torch.inference_mode(), self.prec.compute(self.precision, self.device):
            if self.split is None:
                for chunk in self._batches(list(zip(a_idx, v_idx)), primary):
                    mel = self._input(rc.mel[[a for a, _ in chunk]])
                    vid = self._input(rc.video[[v for _, v in chunk]])
                    out += self.model(mel, vid).float().reshape(-1).cpu().tolist()
                return out
            enc_a, enc_v, head = self.split
            (ua, pa), (uv, pv) = _sorted_apart(a_idx, primary), _sorted_apart(v_idx, primary)
            fa = dict(zip(ua, self.torch.cat([enc_a(self._input(rc.mel[c])) for c in self._batches(ua, pa)])))
            fv = dict(zip(uv, self.torch.cat([enc_v(self._input(rc.video[c])) for c in self._batches(uv, pv)])))
            for chunk in self._batches(list(zip(a_idx, v_idx)), primary):
                a = self.torch.stack([fa[i] for i, _ in chunk])
                v = self.torch.stack([fv[j] for _, j in chunk])
                out += head(a, v).float().reshape(-1).cpu().tolist()
        return out

    def score_window(self, audio_clips: Sequence[np.ndarray], video_clips: Sequence[np.ndarray]
                     ) -> tuple[float, float]:
        """(a2v, v2a) of one window from its 3 shifted audio clips and 3 shifted video clips."""
        keys = (0, 1, 2)
        phi = self.phi_pairs(dict(zip(keys, audio_clips)), dict(zip(keys, video_clips)),
                             [(0, 1), (1, 1), (2, 1), (1, 0), (1, 2)])
        return score(*window_phi(phi, keys, keys))


def _sorted_apart(idx: list[int], primary: int | None) -> tuple[list[int], int | None]:
    """The distinct clip indices, sorted; those of the first ``primary`` pairs first."""
    if primary is None:
        return sorted(set(idx)), None
    first = sorted(set(idx[:primary]))
    return first + sorted(set(idx[primary:]) - set(first)), len(first)


# ---------------------------------------------------------------- the filter


def _keys(seg, k: int) -> tuple[list[int], list[int]]:
    """Window ``k``'s audio keys (start samples) and video keys (first grid frames) for the
    shifts -0.25 / 0 / +0.25 s (``filters.sampling``)."""
    s, _ = seg.bounds(k)
    v = [seg.i0[k] + sampling.sync_video_offsets(d)[0] for d in sampling.SYNC_SHIFTS]
    a = [seg.audio_key(sampling.sync_audio_span(s, d, seg.grid.start)[0], sampling.SYNC_AUDIO_SECONDS)
         for d in sampling.SYNC_SHIFTS]
    return a, v


def _pairs(a: list[int], v: list[int]) -> list[tuple[int, int]]:
    """The (audio key, video key) pairs of one window: a2v then v2a (``sampling.sync_pairs``)."""
    ka, kv = dict(zip(sampling.SYNC_SHIFTS, a)), dict(zip(sampling.SYNC_SHIFTS, v))
    pairs = sampling.sync_pairs()
    return [(ka[da], kv[dv]) for d in ("a2v", "v2a") for da, dv in pairs[d]]


#: a sync clip cut from the grid: (audio seconds, grid frames between frames, frames)
SYNC_CLIP = (sampling.SYNC_AUDIO_SECONDS, sampling.SYNC_STEP, sampling.SYNC_FRAMES)


# ---------------------------------------------------------------- the classifier's own offset

#: per window: the classifier's offset over its 31 shifts and that shift's probability
OFFSET_COLUMNS = ("sync_offset_s", "sync_offset_p")


def _offset_keys(seg, k: int) -> list[tuple | None]:
    """Window ``k``'s 31 shifted audio clips (``sampling.offset_shifts_s``) as wide-track keys,
    None where the shifted clip reaches past the audio the decode holds (near a file's first
    or last 0.2 s: those shifts are left out of the argmax, never slid)."""
    s, _ = seg.bounds(k)
    g, secs = seg.grid, sampling.SYNC_AUDIO_SECONDS
    t0 = sampling.sync_audio_span(s, 0, g.start)[0]
    keys: list[tuple | None] = []
    for d in sampling.offset_shifts_s():
        ok = g.wide_slice(t0 + d, secs) is not None
        keys.append(("w", int(round((t0 + d - g.wide_start) * g.sample_rate))) if ok else None)
    return keys


def offset_of(phis: Sequence[float | None]) -> tuple[float, float]:
    """(offset s, probability) from phi of the 31 shifted audio clips against the in-sync
    video (None: a shift not available): the softmax over the available ones (no temperature,
    as P_sync) and its argmax. The sign is Synchformer's (``filters.synchformer``): positive
    means the audio runs ahead, so an audio clip that matches best when taken ``d`` s later
    (the audio is late by ``d``) gives ``-d``."""
    shifts = sampling.offset_shifts_s()
    if len(phis) != len(shifts):
        raise ValueError(f"expected phi for {len(shifts)} shifts, got {len(phis)}")
    idx = [i for i, p in enumerate(phis) if p is not None]
    if not idx:
        raise ValueError("no shifted audio clip lies inside the decoded audio")
    x = np.asarray([phis[i] for i in idx], dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("non-finite sync score among the shifted pairs")
    p = np.exp(x - x.max())
    p /= p.sum()
    j = int(np.argmax(p))
    return 0.0 - shifts[idx[j]], float(p[j])


def clip_offset(values: np.ndarray) -> float:
    """A merged clip's offset: the most frequent window offset (ties: the one nearest 0, then
    the lower); window offsets lie on the 0.04-s grid, so equal offsets are equal floats."""
    vals, counts = np.unique(np.round(np.asarray(values, dtype=np.float64), 6), return_counts=True)
    best = max(zip(counts.tolist(), vals.tolist()), key=lambda cv: (cv[0], -abs(cv[1]), -cv[1]))
    return float(best[1])


def clip_agreement(values: np.ndarray) -> float:
    """Share of a clip's windows whose offset is the clip's (``clip_offset``)."""
    v = np.round(np.asarray(values, dtype=np.float64), 6)
    return float(np.mean(v == clip_offset(v)))


def clip_mean(values: np.ndarray) -> float:
    return float(np.mean(values))


def run(seg, alive: list[int]) -> dict[int, str]:
    """phi of every distinct (audio key, video key) pair the windows need and the cache
    lacks, then each window's (a2v, v2a) and its offset over the 31 shifts (``offset_of``).
    The convention of the weights decides only where the clips come from
    (``Convention.segment_phi``: ``ours`` cuts them from the decoded grid, ``released`` reads
    the same clip starts from the segment's file). One call per segment, so each distinct
    video clip is encoded once (the offset search adds audio clips and head evaluations)."""
    from sync_classifier.conventions import get_convention
    scorer, cache = seg.model("sync"), seg.cache("sync_phi")
    kd = {k: _keys(seg, k) for k in alive}
    ko = {k: _offset_keys(seg, k) for k in alive}
    need = [p for a, v in kd.values() for p in _pairs(a, v)]          # P_sync's pairs first
    need += [(w, kd[k][1][1]) for k in alive for w in ko[k] if w is not None]
    pairs = [p for p in dict.fromkeys(need) if p not in cache]
    if pairs:
        conv = get_convention(getattr(scorer, "convention", None))
        # P_sync's pairs batched apart: the offset search leaves their bits as they were
        primary = sum(not isinstance(a, tuple) for a, _ in pairs)
        cache.update(conv.segment_phi(seg, scorer, pairs, SYNC_CLIP, primary))

    def one(k):
        a, v = kd[k]
        row = seg.rows[k]
        row["sync_a2v"], row["sync_v2a"] = score(*window_phi(cache, a, v))
        phis = [None if w is None else cache[(w, v[1])] for w in ko[k]]
        # a grid without the decode's wide audio (built by hand, not by ``decode_grid``) has
        # no offset search: the offset is unknown (it only records; nothing decides by it)
        row["sync_offset_s"], row["sync_offset_p"] = (offset_of(phis) if any(p is not None for p in phis)
                                                      else (None, None))
    return seg.per_window(alive, one)


def convention(weights: str | None, override: str | None = None) -> str | None:
    """The sync classifier's preprocessing convention: ``override`` (``--sync-convention``),
    else the one the weights carry (released folder / AVID-CMA: ``released``; our
    checkpoints: what they recorded), ``ours`` for random weights; None when the weights
    cannot be read here (loading them reports why, naming the option)."""
    from sync_classifier.conventions import get_convention
    if override:
        return get_convention(override, "--sync-convention").name
    if not weights:
        return get_convention(None).name
    from sync_classifier.model import weights_convention
    try:
        return weights_convention(weights, "--sync-checkpoint")
    except (FileNotFoundError, ValueError):
        return None


def inspect(weights: str) -> dict:
    """Keys and shapes of the weights against their architecture (no model built) and their
    convention, in one read of the file per process."""
    from sync_classifier.model import inspect_weights
    return inspect_weights(weights, "--sync-checkpoint")


def load(weights: str | None, random: bool, run_models: Mapping[str, Any], device: str,
         convention: str | None = None) -> SyncScorer:
    if random:
        return SyncScorer.random(seed=0, device=device, convention=convention)
    return SyncScorer.from_checkpoint(weights, device=device, convention=convention)


#: the declared constants of the offset search (in the score fingerprint): the shifts and where
#: their audio comes from (the decode's margins)
PARAMS = {"offset_shifts_s": list(sampling.offset_shifts_s()), "offset_audio": "grid-wide-margin"}

FILTER = FilterSpec(
    name="sync", columns=("sync_a2v", "sync_v2a", *OFFSET_COLUMNS), run=run, needs_audio=True,
    reads_fbank=True,
    cost=80.0,   # GFLOP per window, the R(2+1)D classifier with clip reuse (benchmarks/bench_flops.py)
    bounds=(Bound("sync_a2v", "a2v_min", "min", 0.341), Bound("sync_v2a", "v2a_min", "min", 0.341)),
    params=PARAMS,
    # a clip's offset is the mode of its windows' (with the share that agree), not a mean; the
    # offset columns record and never gate (no bound on them)
    clip_columns=(ClipColumn("sync_offset_s", "sync_offset_s", clip_offset, certificate=True),
                  ClipColumn("sync_offset_agree", "sync_offset_s", clip_agreement, certificate=True),
                  ClipColumn("sync_offset_p", "sync_offset_p", clip_mean, certificate=True)),
    model=ModelSpec("sync", "sync_checkpoint", load, convention=convention,
                    convention_option="sync_convention", inspect=inspect))
