"""Score every window of one decoded segment: shared decode, feature reuse, cascade.

``score_segment`` takes the segment's analysis grid (``decoding.media.Grid``, decoded once) and
the window rows that lie in it, and fills every score and note column of the windows schema.
``score_segments`` does the same for several segments at once (a scoring actor's call): each
model runs once per filter over the inputs of all of them, so forward passes are full; the
rows are those of one ``score_segment`` per segment.

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
    """Per-call state: the grid, the rows, each window's start frame and the feature caches."""

    def __init__(self, grid, rows: list[dict], scorers: Scorers, class_text: str | None):
        self.grid, self.rows, self.scorers, self.class_text = grid, rows, scorers, class_text
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
# Each runner scores, for every (segment, alive rows) job of a call, the windows ``alive`` and
# returns per job {k: error note} for the windows whose score could not be computed; scores
# are written into the rows. Model inputs of all the jobs go through one model call
# (``_embed_missing``): a call over N segments fills the scorers' batches with N segments'
# frames and clips. Keys stay per segment, so the caches and the cascade are those of N
# separate calls.

Job = tuple[_Segment, list[int]]


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


def _run_pixel_diff(jobs: list[Job]) -> list[dict[int, str]]:
    def run(seg: _Segment, alive: list[int]) -> dict[int, str]:
        def one(k):
            seg.rows[k]["pixel_diff"] = pixel_diff.score(seg.frames(_uniform10(seg, k)))
        return _per_window(seg, alive, one)
    return [run(seg, alive) for seg, alive in jobs]


def _run_amplitude(jobs: list[Job]) -> list[dict[int, str]]:
    def run(seg: _Segment, alive: list[int]) -> dict[int, str]:
        def one(k):
            r = seg.rows[k]
            r["amplitude"] = amplitude.score(seg.grid.audio_slice(float(r["start"]), float(r["end"]),
                                                                  channels=True))
        return _per_window(seg, alive, one)
    return [run(seg, alive) for seg, alive in jobs]


def _embed_missing(caches: list[dict], keys: list[Iterable], load: Callable[[int, list], np.ndarray],
                   embed: Callable[[np.ndarray], np.ndarray]) -> None:
    """Embed, in one batched model call over all jobs, the keys not in their cache yet.

    ``caches[j]`` / ``keys[j]``: job j's cache and the keys it needs; ``load(j, todo)`` gives
    job j's model inputs for ``todo``."""
    todos = [[k for k in dict.fromkeys(ks) if k not in cache] for cache, ks in zip(caches, keys)]
    parts = [load(j, todo) for j, todo in enumerate(todos) if todo]
    if not parts:
        return
    n = sum(len(t) for t in todos)
    emb = np.asarray(embed(parts[0] if len(parts) == 1 else np.concatenate(parts)))
    if emb.shape[0] != n:
        raise ValueError(f"model returned {emb.shape[0]} embeddings for {n} inputs")
    off = 0
    for cache, todo in zip(caches, todos):
        cache.update(zip(todo, emb[off:off + len(todo)]))
        off += len(todo)


def _run_clip_diff(jobs: list[Job]) -> list[dict[int, str]]:
    idx = [{k: _uniform10(seg, k) for k in alive} for seg, alive in jobs]
    segs = [seg for seg, _ in jobs]
    _embed_missing([s.clip_cache for s in segs], [[i for v in d.values() for i in v] for d in idx],
                   lambda j, todo: segs[j].frames(todo), segs[0].scorers.clip.embed)

    def run(seg: _Segment, alive: list[int], ix: dict[int, list[int]]) -> dict[int, str]:
        def one(k):
            seg.rows[k]["clip_diff"] = clip_diff.score(np.stack([seg.clip_cache[i] for i in ix[k]]))
        return _per_window(seg, alive, one)
    return [run(seg, alive, ix) for (seg, alive), ix in zip(jobs, idx)]


def _imagebind_inputs(seg: _Segment, k: int) -> tuple[list[int], list[int]]:
    r = seg.rows[k]
    s, e = float(r["start"]), float(r["end"])
    frames = sampling.uniform3_indices(s, seg.grid.start)
    # each 2-s audio is centred on its frame and slid inside the window (filters.sampling)
    audio = [seg.audio_key(a0, sampling.IMAGEBIND_AUDIO_SECONDS)
             for a0, _ in sampling.imagebind_audio_spans(s, seg.grid.start, e)]
    return frames, audio


def _run_imagebind(jobs: list[Job]) -> list[dict[int, str]]:
    from filters import imagebind  # the math; its import pulls torch, so only when scoring
    ib = jobs[0][0].scorers.imagebind
    with_text = [(seg, alive) for seg, alive in jobs if seg.class_text]
    # one text per call as for a lone segment (embed_text caches per text)
    texts = {seg.class_text: ib.embed_text([seg.class_text])[0] for seg, _ in with_text}
    inputs = [{k: _imagebind_inputs(seg, k) for k in alive} for seg, alive in with_text]
    segs = [seg for seg, _ in with_text]
    secs = sampling.IMAGEBIND_AUDIO_SECONDS
    _embed_missing([s.ib_image_cache for s in segs],
                   [[i for f, _ in d.values() for i in f] for d in inputs],
                   lambda j, todo: segs[j].frames(todo), ib.embed_images)
    _embed_missing([s.ib_audio_cache for s in segs],
                   [[a for _, au in d.values() for a in au] for d in inputs],
                   lambda j, todo: np.stack([segs[j].audio_at(a, secs) for a in todo]), ib.embed_audio)

    def run(seg: _Segment, alive: list[int], inp: dict) -> dict[int, str]:
        text = texts[seg.class_text]

        def one(k):
            f, a = inp[k]
            ia, it = imagebind.score(np.stack([seg.ib_image_cache[i] for i in f]),
                                     np.stack([seg.ib_audio_cache[j] for j in a]), text)
            seg.rows[k]["imagebind_ia"], seg.rows[k]["imagebind_it"] = ia, it
        return _per_window(seg, alive, one)
    done = {id(seg): run(seg, alive, inp) for (seg, alive), inp in zip(with_text, inputs)}
    return [done.get(id(seg)) if seg.class_text else
            {k: "error: no class name to use as ImageBind text" for k in alive} for seg, alive in jobs]


def _sync_keys(seg: _Segment, k: int) -> tuple[list[int], list[int]]:
    """Audio keys (start samples) and video keys (start frames) for shifts -0.25 / 0 / +0.25 s."""
    g = seg.grid
    v = [seg.i0[k] + sampling.SYNC_START_OFFSET + d for d in sampling.SYNC_SHIFTS]
    a = [seg.audio_key(g.start + i / g.fps, sampling.SYNC_AUDIO_SECONDS) for i in v]
    return a, v


def _run_sync(jobs: list[Job]) -> list[dict[int, str]]:
    from filters import sync
    if getattr(jobs[0][0].scorers.sync, "convention", "ours") == "released":
        return [_run_sync_released(seg, alive) for seg, alive in jobs]
    keys = [{k: _sync_keys(seg, k) for k in alive} for seg, alive in jobs]
    # pairs of all jobs, keyed (job, key) so that segments never share a clip
    todo: list[tuple[tuple[int, int], tuple[int, int]]] = []
    for j, ((seg, _), kd) in enumerate(zip(jobs, keys)):
        pairs = []
        for a, v in kd.values():
            pairs += [(a[1], vk) for vk in v] + [(ak, v[1]) for ak in a]
        todo += [((j, a), (j, v)) for a, v in dict.fromkeys(pairs) if (a, v) not in seg.phi_cache]
    if todo:
        secs = sampling.SYNC_AUDIO_SECONDS
        audio = {a: jobs[a[0]][0].audio_at(a[1], secs) for a in dict.fromkeys(a for a, _ in todo)}
        video = {v: jobs[v[0]][0].frames(v[1] + sampling.SYNC_STEP * i for i in range(sampling.SYNC_FRAMES))
                 for v in dict.fromkeys(v for _, v in todo)}
        if len(jobs) == 1:   # a lone segment's keys are its own (start sample, start frame)
            audio = {a[1]: x for a, x in audio.items()}
            video = {v[1]: x for v, x in video.items()}
            phi = jobs[0][0].scorers.sync.phi_pairs(audio, video, [(a[1], v[1]) for a, v in todo])
            jobs[0][0].phi_cache.update(phi)
        else:
            phi = jobs[0][0].scorers.sync.phi_pairs(audio, video, todo)
            for (j, a), (_, v) in todo:
                jobs[j][0].phi_cache[(a, v)] = phi[((j, a), (j, v))]

    def run(seg: _Segment, alive: list[int], kd: dict) -> dict[int, str]:
        def one(k):
            a, v = kd[k]
            seg.rows[k]["sync_a2v"], seg.rows[k]["sync_v2a"] = sync.score(
                *sync.window_phi(seg.phi_cache, a, v))
        return _per_window(seg, alive, one)
    return [run(seg, alive, kd) for (seg, alive), kd in zip(jobs, keys)]


def _run_sync_released(seg: _Segment, alive: list[int]) -> dict[int, str]:
    """Sync under the released convention (weights trained on it): the same clip starts as
    ``_sync_keys``, but the clips are read from the segment's file as the released code reads
    them (native frames, AAC-frame audio, left channel; ``SyncScorer.phi_released``)."""
    from filters import sync
    g = seg.grid
    kd = {k: _sync_keys(seg, k) for k in alive}
    pairs = []
    for a, v in kd.values():
        pairs += [(a[1], vk) for vk in v] + [(ak, v[1]) for ak in a]
    pairs = [p for p in dict.fromkeys(pairs) if p not in seg.phi_cache]
    if pairs:
        path, off = getattr(seg, "path", None), float(getattr(seg, "offset", 0.0) or 0.0)
        if path is None:
            raise ValueError("the released sync convention reads the segment's file; none given")
        a_keys = list(dict.fromkeys(a for a, _ in pairs))
        v_keys = list(dict.fromkeys(v for _, v in pairs))
        ia, iv = {a: i for i, a in enumerate(a_keys)}, {v: j for j, v in enumerate(v_keys)}
        phi = seg.scorers.sync.phi_released(
            # the file's own clock: a stream-copied segment starts ``offset`` s into it
            path, [off + g.start + a / g.sample_rate for a in a_keys],
            [off + g.start + v / g.fps for v in v_keys],
            [(ia[a], iv[v]) for a, v in pairs])
        seg.phi_cache.update(zip(pairs, phi))

    def one(k):
        a, v = kd[k]
        seg.rows[k]["sync_a2v"], seg.rows[k]["sync_v2a"] = sync.score(*sync.window_phi(seg.phi_cache, a, v))
    return _per_window(seg, alive, one)


RUNNERS: dict[str, Callable[[list[Job]], list[dict[int, str]]]] = {
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
    segs = [_Segment(job.grid, [_init_row(w, todo) for w in job.windows], scorers, job.class_text)
            for job, todo in zip(jobs, todos)]
    for seg, job in zip(segs, jobs):
        seg.path, seg.offset = job.path, job.offset
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
    jobs: list[Job] = []
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
    errors = []
    for job in jobs:
        try:
            errors += RUNNERS[name]([job])
        except Exception as e:  # noqa: BLE001 - a model failure costs this filter's scores only
            log.warning("%s failed on %d windows: %s", name, len(job[1]), e)
            errors.append({k: _err(e) for k in job[1]})
    for (seg, _), errs in zip(jobs, errors):
        for k, note in errs.items():
            _set_note(seg.rows, [k], name, note)
