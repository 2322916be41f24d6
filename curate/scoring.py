"""Score every window of one decoded segment: shared decode, feature reuse, cascade.

``score_segment`` takes the segment's analysis grid (``decoding.media.Grid``, decoded once) and
the window rows that lie in it, and fills every score and note column of the windows schema.

Feature reuse (DESIGN section 3: cost grows with seconds, not windows): model features are
computed once per distinct input of the segment and shared by every window that needs it:
CLIP and ImageBind image embeddings once per grid frame, ImageBind audio once per distinct
2-s audio (keyed by its start sample after sliding inside the window), the sync classifier's
audio and video encoders once per distinct 2-s clip and its head once per distinct
(audio, video) pair (``filters.sync.SyncScorer``).

Cascade (cheap filters first, ``filters.registry.ORDER``): a filter runs only on windows that
no earlier *gating* filter rejected. A window stops at a gating filter whose score fails its
threshold or could not be computed (a missing score fails at select anyway); later filters
then get ``None`` with note ``skipped: rejected by <filter>``. A missing model gives
``None`` with ``skipped: no <filter> model`` and does not stop the window. Filters outside
``gate`` (e.g. random-weight models in the demo) are scored but never stop a window.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

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
# Each runner scores the windows ``alive`` (row indices) and returns {k: error note} for the
# windows whose score could not be computed; scores are written into the rows.

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
    """Embed, in one batched call, the keys not in ``cache`` yet."""
    todo = [k for k in dict.fromkeys(keys) if k not in cache]
    if not todo:
        return
    emb = np.asarray(embed(load(todo)))
    if emb.shape[0] != len(todo):
        raise ValueError(f"model returned {emb.shape[0]} embeddings for {len(todo)} inputs")
    cache.update(zip(todo, emb))


def _run_clip_diff(seg: _Segment, alive: list[int]) -> dict[int, str]:
    idx = {k: _uniform10(seg, k) for k in alive}
    _embed_missing(seg.clip_cache, (i for v in idx.values() for i in v), seg.frames,
                   seg.scorers.clip.embed)

    def one(k):
        seg.rows[k]["clip_diff"] = clip_diff.score(np.stack([seg.clip_cache[i] for i in idx[k]]))
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
    ib = seg.scorers.imagebind
    if not seg.class_text:
        return {k: "error: no class name to use as ImageBind text" for k in alive}
    text = ib.embed_text([seg.class_text])[0]
    inputs = {k: _imagebind_inputs(seg, k) for k in alive}
    secs = sampling.IMAGEBIND_AUDIO_SECONDS
    _embed_missing(seg.ib_image_cache, (i for f, _ in inputs.values() for i in f), seg.frames,
                   ib.embed_images)
    _embed_missing(seg.ib_audio_cache, (a for _, au in inputs.values() for a in au),
                   lambda keys: np.stack([seg.audio_at(a, secs) for a in keys]), ib.embed_audio)

    def one(k):
        f, a = inputs[k]
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
    from filters import sync
    keys = {k: _sync_keys(seg, k) for k in alive}
    pairs = []
    for a, v in keys.values():
        pairs += [(a[1], vk) for vk in v] + [(ak, v[1]) for ak in a]
    todo = [p for p in dict.fromkeys(pairs) if p not in seg.phi_cache]
    if todo:
        secs = sampling.SYNC_AUDIO_SECONDS
        audio = {a: seg.audio_at(a, secs) for a in dict.fromkeys(a for a, _ in todo)}
        video = {v: seg.frames(v + sampling.SYNC_STEP * j for j in range(sampling.SYNC_FRAMES))
                 for v in dict.fromkeys(v for _, v in todo)}
        seg.phi_cache.update(seg.scorers.sync.phi_pairs(audio, video, todo))

    def one(k):
        a, v = keys[k]
        seg.rows[k]["sync_a2v"], seg.rows[k]["sync_v2a"] = sync.score(
            *sync.window_phi(seg.phi_cache, a, v))
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


def score_segment(grid, windows: list[Mapping[str, Any]], scorers: Scorers,
                  thresholds: Mapping[str, Mapping[str, float]] | None, class_text: str | None,
                  cascade: bool = True, only: set[str] | None = None,
                  gate: set[str] | None = None) -> list[dict]:
    """Rows of the windows schema for ``windows`` (all inside ``grid``), scores and notes filled.

    ``only``: (re)score only these filters; the other filters' stored scores are kept and
    still gate the cascade (``curate score`` after loosening a threshold).
    ``gate``: filters whose failure stops a window (default: all).
    """
    thresholds = thresholds or registry.default_thresholds()
    gate = set(registry.ORDER) if gate is None else set(gate)
    unknown = ({*gate} | {*(only or ())}) - set(registry.ORDER)
    if unknown:
        raise ValueError(f"unknown filter(s) {sorted(unknown)}; known: {list(registry.ORDER)}")
    todo = [n for n in registry.ORDER if only is None or n in only]
    rows = [_init_row(w, todo) for w in windows]
    seg = _Segment(grid, rows, scorers, class_text)
    stopped: dict[int, str] = {}  # row -> gating filter that stopped it
    for name in registry.ORDER:
        live = [k for k in range(len(rows)) if seg.i0[k] is not None and k not in stopped]
        if name in todo:
            _score_filter(seg, name, live, stopped)
        if cascade and name in gate:
            for k in live:
                if k not in stopped and registry.passes(name, rows[k], thresholds) is not True \
                        and not _no_model(rows[k], name):
                    stopped[k] = name
    log.debug("scored %d windows: %d stopped by the cascade", len(rows), len(stopped))
    return rows


def _no_model(row: dict, name: str) -> bool:
    return row.get(registry.note_column(name)) == registry.SKIP_NO_MODEL.format(name)


def _score_filter(seg: _Segment, name: str, live: list[int], stopped: dict[int, str]) -> None:
    rows = seg.rows
    for k in range(len(rows)):
        if k in stopped:
            _set_note(rows, [k], name, registry.SKIP_REJECTED + stopped[k])
    if not live:
        return
    if name in registry.MODEL_FILTERS and seg.scorers.get(name) is None:
        _set_note(rows, live, name, registry.SKIP_NO_MODEL.format(name))
        return
    if name in AUDIO_FILTERS and not getattr(seg.grid, "has_audio", True):
        _set_note(rows, live, name, "error: the source has no audio stream")
        return
    try:
        errors = RUNNERS[name](seg, live)
    except Exception as e:  # a model failure costs this filter's scores, not the segment
        log.warning("%s failed on %d windows: %s", name, len(live), e)
        errors = {k: _err(e) for k in live}
    for k, note in errors.items():
        _set_note(rows, [k], name, note)
