"""Score every window of one decoded segment: shared decode, feature reuse, cascade.

``score_segment`` takes the segment's analysis grid (``decoding.media.Grid``, decoded once) and
the window rows that lie in it, and fills every score and note column of the windows schema.
``score_segments`` does the same for several segments at once (a scoring actor's call): the
rows are those of one ``score_segment`` per segment, bit for bit, because each segment's model
inputs go through forward passes of their own (``_score_filter``).

Feature reuse (DESIGN section 3: cost grows with seconds, not windows): model features are
computed once per distinct input of the segment and shared by every window that needs it:
CLIP and ImageBind image embeddings once per grid frame, ImageBind audio once per distinct
2-s audio (keyed by its start sample after sliding inside the window), the sync classifier's
audio and video encoders once per distinct 2-s clip and its head once per distinct
(audio, video) pair (``filters.sync.SyncScorer``).

Cascade (``order``, default ``filters.registry.DEFAULT_ORDER``: the cheapest filter per
rejected window first; a recipe option): a filter runs only on windows that no earlier
*gating* filter rejected. A window is kept only if every gating filter passes, so the order
decides what is computed and which filter a skip note names, never which windows are kept. A window stops at a gating filter whose score fails its
threshold or could not be computed (a missing score fails at select anyway); later filters
then get ``None`` with note ``skipped: rejected by <filter>``. A missing model gives
``None`` with ``skipped: no <filter> model`` and does not stop the window. Filters outside
``gate`` (e.g. random-weight models in the demo) are scored but never stop a window.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from filters import amplitude, clip_diff, pixel_diff, sampling
from filters import registry
from manifests.schemas import ALL_SCORES, NOTE_COLUMNS, SCORE_COLUMNS, STATUS_FAILED, STATUS_OK

log = logging.getLogger(__name__)

AUDIO_FILTERS = ("amplitude", "imagebind", "sync")


@dataclass
class Scorers:
    """Model-backed scorers; any may be None (its filter is then skipped with a note).

    clip: ``.embed(uint8 [N,224,224,3]) -> [N, D]`` (``filters.clip_model.ClipScorer``)
    imagebind: ``.embed_images / .embed_audio / .embed_text`` (``filters.imagebind.ImageBindScorer``)
    sync: ``.phi_pairs(audio, video, pairs)`` (``filters.sync.SyncScorer``)
    """
    clip: Any = None
    imagebind: Any = None
    sync: Any = None

    def get(self, name: str) -> Any:
        return {"clip_diff": self.clip, "imagebind": self.imagebind, "sync": self.sync}.get(name)


def _err(e: BaseException) -> str:
    return f"error: {type(e).__name__}: {e}"


class _Segment:
    """Per-segment state: the grid, the rows, each window's start frame and the feature caches.

    ``path`` / ``offset``: the segment's media file and where the segment's time 0 lies on its
    clock (``SegmentJob``); only the released sync convention reads them."""

    def __init__(self, grid, rows: list[dict], scorers: Scorers, class_text: str | None,
                 path: str | None = None, offset: float | None = 0.0):
        self.grid, self.rows, self.scorers, self.class_text = grid, rows, scorers, class_text
        self.path, self.offset = path, offset
        self.i0: list[int | None] = [self._start_frame(r) for r in rows]
        self.clip_cache: dict[int, np.ndarray] = {}
        self.ib_image_cache: dict[int, np.ndarray] = {}
        self.ib_audio_cache: dict[int, np.ndarray] = {}
        self.phi_cache: dict[tuple[int, int], float] = {}

    def _start_frame(self, row: dict) -> int | None:
        """Grid index of the window start, or None (row marked failed) when it does not fit."""
        g, s, e = self.grid, row.get("start"), row.get("end")
        try:
            s, e = float(s), float(e)
        except (TypeError, ValueError):
            return self._fail(row, f"window has no valid start/end ({s!r}, {e!r})")
        if abs((e - s) - sampling.WINDOW_SECONDS) > 1e-3:
            return self._fail(row, f"window [{s}, {e}) is not {sampling.WINDOW_SECONDS:g} s long")
        i0 = sampling.start_index(s, g.start, g.fps)
        # one frame of slack for shot times that are not on the 12-fps grid
        if i0 < -1 or i0 + sampling.WINDOW_FRAMES > len(g.frames) + 1:
            return self._fail(row, f"window [{s:g}, {e:g}) is outside the decoded grid "
                                   f"[{g.start:g}, {g.end:g})")
        return i0

    @staticmethod
    def _fail(row: dict, msg: str) -> None:
        row["status"], row["error"] = STATUS_FAILED, msg
        for n in NOTE_COLUMNS:
            row[n] = f"error: {msg}"
        return None

    def frames(self, idx: Iterable[int]) -> np.ndarray:
        t = len(self.grid.frames)
        return self.grid.frames[[min(max(int(i), 0), t - 1) for i in idx]]

    def audio_key(self, t0: float, seconds: float) -> int:
        """Start sample of ``grid.audio_slice(t0, t0 + seconds)`` after sliding inside the grid."""
        g = self.grid
        n = int(round(seconds * g.sample_rate))
        total = g.audio_channels.shape[1]
        return min(max(g.sample_index(t0), 0), max(total - n, 0))

    def audio_at(self, key: int, seconds: float) -> np.ndarray:
        g = self.grid
        return g.audio_slice(g.start + key / g.sample_rate, g.start + key / g.sample_rate + seconds)


# ---------------------------------------------------------------- per-filter runners
# Each runner scores the windows ``alive`` of one segment and returns {k: error note} for the
# windows whose score could not be computed; scores are written into the rows. A runner sees
# one segment per call (``_score_filter``), so its model inputs are that segment's alone; the
# model wrappers chunk them into forward passes of their batch size.


def _per_window(seg: _Segment, alive: list[int], fn: Callable[[int], None]) -> dict[int, str]:
    errors = {}
    for k in alive:
        try:
            fn(k)
        except Exception as e:  # one bad window must not lose the others' scores
            errors[k] = _err(e)
    return errors


def _uniform10(seg: _Segment, k: int) -> list[int]:
    """Grid indices of the 10 pixel_diff / clip_diff frames (``filters.sampling``)."""
    r = seg.rows[k]
    return sampling.uniform10_indices(float(r["start"]), float(r["end"]), seg.grid.start)


def _run_pixel_diff(seg: _Segment, alive: list[int]) -> dict[int, str]:
    def one(k):
        seg.rows[k]["pixel_diff"] = pixel_diff.score(seg.frames(_uniform10(seg, k)))
    return _per_window(seg, alive, one)


def _run_amplitude(seg: _Segment, alive: list[int]) -> dict[int, str]:
    def one(k):
        r = seg.rows[k]
        r["amplitude"] = amplitude.score(seg.grid.audio_slice(float(r["start"]), float(r["end"]),
                                                              channels=True))
    return _per_window(seg, alive, one)


def _embed_missing(cache: dict, keys: Iterable, load: Callable[[list], np.ndarray],
                   embed: Callable[[np.ndarray], np.ndarray]) -> None:
    """Embed, in one model call, the distinct ``keys`` not in ``cache`` yet (in first-seen
    order); ``load(todo)`` gives the model inputs for ``todo``."""
    todo = [k for k in dict.fromkeys(keys) if k not in cache]
    if not todo:
        return
    emb = np.asarray(embed(load(todo)))
    if emb.shape[0] != len(todo):
        raise ValueError(f"model returned {emb.shape[0]} embeddings for {len(todo)} inputs")
    cache.update(zip(todo, emb))


def _run_clip_diff(seg: _Segment, alive: list[int]) -> dict[int, str]:
    ix = {k: _uniform10(seg, k) for k in alive}
    _embed_missing(seg.clip_cache, [i for v in ix.values() for i in v], seg.frames,
                   seg.scorers.clip.embed)

    def one(k):
        seg.rows[k]["clip_diff"] = clip_diff.score(np.stack([seg.clip_cache[i] for i in ix[k]]))
    return _per_window(seg, alive, one)


def _imagebind_inputs(seg: _Segment, k: int) -> tuple[list[int], list[int]]:
    r = seg.rows[k]
    s, e = float(r["start"]), float(r["end"])
    frames = sampling.uniform3_indices(s, seg.grid.start)
    # each 2-s audio is centred on its frame and slid inside the window (filters.sampling)
    audio = [seg.audio_key(a0, sampling.IMAGEBIND_AUDIO_SECONDS)
             for a0, _ in sampling.imagebind_audio_spans(s, seg.grid.start, e)]
    return frames, audio


def _run_imagebind(seg: _Segment, alive: list[int]) -> dict[int, str]:
    from filters import imagebind  # the math; its import pulls torch, so only when scoring
    if not seg.class_text:
        return {k: "error: no class name to use as ImageBind text" for k in alive}
    ib = seg.scorers.imagebind
    text = ib.embed_text([seg.class_text])[0]
    inp = {k: _imagebind_inputs(seg, k) for k in alive}
    secs = sampling.IMAGEBIND_AUDIO_SECONDS
    _embed_missing(seg.ib_image_cache, [i for f, _ in inp.values() for i in f], seg.frames,
                   ib.embed_images)
    _embed_missing(seg.ib_audio_cache, [a for _, au in inp.values() for a in au],
                   lambda todo: np.stack([seg.audio_at(a, secs) for a in todo]), ib.embed_audio)

    def one(k):
        f, a = inp[k]
        ia, it = imagebind.score(np.stack([seg.ib_image_cache[i] for i in f]),
                                 np.stack([seg.ib_audio_cache[j] for j in a]), text)
        seg.rows[k]["imagebind_ia"], seg.rows[k]["imagebind_it"] = ia, it
    return _per_window(seg, alive, one)


def _sync_keys(seg: _Segment, k: int) -> tuple[list[int], list[int]]:
    """Audio keys (start samples) and video keys (start frames) for shifts -0.25 / 0 / +0.25 s."""
    g = seg.grid
    v = [seg.i0[k] + sampling.SYNC_START_OFFSET + d for d in sampling.SYNC_SHIFTS]
    a = [seg.audio_key(g.start + i / g.fps, sampling.SYNC_AUDIO_SECONDS) for i in v]
    return a, v


def _run_sync(seg: _Segment, alive: list[int]) -> dict[int, str]:
    """Sync: phi of every distinct (audio key, video key) pair the windows need and the cache
    lacks, then each window's (a2v, v2a). The convention of the weights decides only where
    the clips come from: ``ours`` cuts them from the decoded grid (``SyncScorer.phi_pairs``);
    ``released`` reads the same clip starts from the segment's file as the released code
    reads them (native frames, AAC-frame audio, left channel; ``SyncScorer.phi_released``)."""
    from filters import sync
    scorer, g = seg.scorers.sync, seg.grid
    kd = {k: _sync_keys(seg, k) for k in alive}
    pairs = []
    for a, v in kd.values():
        pairs += [(a[1], vk) for vk in v] + [(ak, v[1]) for ak in a]
    pairs = [p for p in dict.fromkeys(pairs) if p not in seg.phi_cache]
    if pairs:
        a_keys = list(dict.fromkeys(a for a, _ in pairs))
        v_keys = list(dict.fromkeys(v for _, v in pairs))
        if getattr(scorer, "convention", "ours") == "released":
            if seg.path is None:
                raise ValueError("the released sync convention reads the segment's file; none given")
            ia, iv = {a: i for i, a in enumerate(a_keys)}, {v: j for j, v in enumerate(v_keys)}
            off = float(seg.offset or 0.0)
            phi = scorer.phi_released(
                # the file's own clock: a stream-copied segment starts ``offset`` s into it
                seg.path, [off + g.start + a / g.sample_rate for a in a_keys],
                [off + g.start + v / g.fps for v in v_keys],
                [(ia[a], iv[v]) for a, v in pairs])
            seg.phi_cache.update(zip(pairs, phi))
        else:
            secs = sampling.SYNC_AUDIO_SECONDS
            audio = {a: seg.audio_at(a, secs) for a in a_keys}
            video = {v: seg.frames(v + sampling.SYNC_STEP * i for i in range(sampling.SYNC_FRAMES))
                     for v in v_keys}
            seg.phi_cache.update(scorer.phi_pairs(audio, video, pairs))

    def one(k):
        a, v = kd[k]
        seg.rows[k]["sync_a2v"], seg.rows[k]["sync_v2a"] = sync.score(*sync.window_phi(seg.phi_cache, a, v))
    return _per_window(seg, alive, one)


RUNNERS: dict[str, Callable[[_Segment, list[int]], dict[int, str]]] = {
    "pixel_diff": _run_pixel_diff, "amplitude": _run_amplitude, "clip_diff": _run_clip_diff,
    "imagebind": _run_imagebind, "sync": _run_sync,
}


# ---------------------------------------------------------------- the cascade

def _init_row(window: Mapping[str, Any], redo: Iterable[str]) -> dict:
    row = dict(window)
    for c in (*ALL_SCORES, *NOTE_COLUMNS):
        row.setdefault(c, None)
    for name in redo:
        for c in SCORE_COLUMNS[name]:
            row[c] = None
        row[registry.note_column(name)] = None
    row["status"], row["error"] = STATUS_OK, None  # set to failed again if it does not fit
    return row


def _set_note(rows: list[dict], ks: Iterable[int], name: str, note: str) -> None:
    for k in ks:
        for c in SCORE_COLUMNS[name]:
            rows[k][c] = None
        rows[k][registry.note_column(name)] = note


@dataclass
class SegmentJob:
    """One segment of a batched call: its grid, its window rows, class text and ``only``."""
    grid: Any
    windows: list[Mapping[str, Any]]
    class_text: str | None = None
    only: set[str] | None = None
    #: the segment's media file (the released sync convention reads it; grids are ours)
    path: str | None = None
    #: where the segment's time 0 lies on that file's clock (``seg_start`` of a stream copy)
    offset: float = 0.0


def score_segment(grid, windows: list[Mapping[str, Any]], scorers: Scorers,
                  thresholds: Mapping[str, Mapping[str, float]] | None, class_text: str | None,
                  cascade: bool = True, only: set[str] | None = None,
                  gate: set[str] | None = None, order: Sequence[str] | None = None,
                  path: str | None = None) -> list[dict]:
    """Rows of the windows schema for ``windows`` (all inside ``grid``), scores and notes filled.

    ``only``: (re)score only these filters; the other filters' stored scores are kept and
    still gate the cascade (``curate score`` after loosening a threshold).
    ``gate``: filters whose failure stops a window (default: all).
    ``order``: the cascade order (default ``registry.DEFAULT_ORDER``).
    ``path``: the segment's file (needed by a sync scorer of the released convention).
    """
    return score_segments([SegmentJob(grid, windows, class_text, only, path)], scorers, thresholds,
                          cascade=cascade, gate=gate, order=order)[0]


#: intra-op threads scoring runs on at the least (see ``deterministic_torch``)
MIN_SCORE_THREADS = 2


def deterministic_torch() -> None:
    """Torch settings under which the same inputs in the same forward-pass shapes give the same
    bits: deterministic algorithms (warn only where an op has none), no cuDNN autotuning (it
    may pick another kernel per run), cuBLAS with a fixed workspace, and at least
    ``MIN_SCORE_THREADS`` intra-op threads. Called once per scoring worker, before the models
    load.

    The thread floor: on one thread ATen runs a convolution whose filter is 1x1 in its last
    two dimensions (the R(2+1)D temporal 3x1x1 and shortcut 1x1x1 convolutions of the sync
    classifier) on its own slow kernel instead of oneDNN's (``use_mkldnn`` in ATen's
    Convolution.cpp), and every sync score moves in its low bits: measured on three demo
    segments, 30 of 30 sync values differed between 1 thread and 2, none between 2, 3, 4
    and 8. A Ray worker with one CPU or less gets ``OMP_NUM_THREADS=1``, a local run one
    thread per core, so without the floor the same window scored differently by executor,
    ``--workers`` and machine."""
    import os

    import torch
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    if torch.get_num_threads() < MIN_SCORE_THREADS:
        torch.set_num_threads(MIN_SCORE_THREADS)


def score_segments(jobs: list[SegmentJob], scorers: Scorers,
                   thresholds: Mapping[str, Mapping[str, float]] | None, cascade: bool = True,
                   gate: set[str] | None = None, order: Sequence[str] | None = None) -> list[list[dict]]:
    """``score_segment`` over several segments at once (a scoring actor's call): the same
    rows, bit for bit, as one call per segment. Each segment's model inputs go through
    forward passes of their own (see ``_score_filter``: cross-segment batches change low
    bits), so a bad segment also costs only its own scores."""
    thresholds = thresholds or registry.default_thresholds()
    order = registry.cascade_order(order)
    gate = set(order) if gate is None else set(gate)
    for job in jobs:
        unknown = ({*gate} | {*(job.only or ())}) - set(order)
        if unknown:
            raise ValueError(f"unknown filter(s) {sorted(unknown)}; known: {list(order)}")
    todos = [[n for n in order if job.only is None or n in job.only] for job in jobs]
    segs = [_Segment(job.grid, [_init_row(w, todo) for w in job.windows], scorers, job.class_text,
                     job.path, job.offset)
            for job, todo in zip(jobs, todos)]
    stopped: list[dict[int, str]] = [{} for _ in segs]  # per segment: row -> gating filter
    for name in order:
        lives = [[k for k in range(len(seg.rows)) if seg.i0[k] is not None and k not in st]
                 for seg, st in zip(segs, stopped)]
        which = [j for j, todo in enumerate(todos) if name in todo]
        if which:
            _score_filter([segs[j] for j in which], name, [lives[j] for j in which],
                          [stopped[j] for j in which])
        if cascade and name in gate:
            for seg, live, st in zip(segs, lives, stopped):
                for k in live:
                    if k not in st and registry.passes(name, seg.rows[k], thresholds) is not True \
                            and not _no_model(seg.rows[k], name):
                        st[k] = name
    log.debug("scored %d segments, %d windows: %d stopped by the cascade", len(segs),
              sum(len(s.rows) for s in segs), sum(len(st) for st in stopped))
    return [seg.rows for seg in segs]


def _no_model(row: dict, name: str) -> bool:
    return row.get(registry.note_column(name)) == registry.SKIP_NO_MODEL.format(name)


def _score_filter(segs: list[_Segment], name: str, lives: list[list[int]],
                  stopped: list[dict[int, str]]) -> None:
    jobs: list[tuple[_Segment, list[int]]] = []
    for seg, live, st in zip(segs, lives, stopped):
        for k in range(len(seg.rows)):
            if k in st:
                _set_note(seg.rows, [k], name, registry.SKIP_REJECTED + st[k])
        if not live:
            continue
        if name in registry.MODEL_FILTERS and seg.scorers.get(name) is None:
            _set_note(seg.rows, live, name, registry.SKIP_NO_MODEL.format(name))
        elif name in AUDIO_FILTERS and not getattr(seg.grid, "has_audio", True):
            _set_note(seg.rows, live, name, "error: the source has no audio stream")
        else:
            jobs.append((seg, live))
    if not jobs:
        return
    # Determinism: a window's scores must not depend on which other segments shared its
    # actor call (that depends on timing, load and what a killed run had already done).
    # Batched CPU kernels (oneDNN / MKL GEMM blocking) and cuBLAS / cuDNN algorithm choice
    # change low bits with a batch's shape and content, measured: 4 of 98 sync values of
    # four demo segments differed between one call for all four and one call each. So each
    # segment's inputs go through the models in forward passes of their own, chunked the
    # same way every time (per-segment forward passes, not cross-segment batches);
    # ``deterministic_torch`` fixes the remaining settings.
    for seg, live in jobs:
        try:
            errs = RUNNERS[name](seg, live)
        except Exception as e:  # noqa: BLE001 - a model failure costs this filter's scores only
            log.warning("%s failed on %d windows: %s", name, len(live), e)
            errs = {k: _err(e) for k in live}
        for k, note in errs.items():
            _set_note(seg.rows, [k], name, note)
