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
(audio, video) pair (``filters.sync.SyncScorer``). Each filter's scoring is its module's
``run(seg, alive)`` (``filters.spec.FilterSpec``) over a ``filters.segment.Segment``; this
module is the cascade around them.

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
from typing import Any, Iterable, Mapping, Sequence

from filters import registry, sampling
from filters.segment import Scorers, Segment, error_note
from manifests import schemas
from manifests.schemas import STATUS_FAILED, STATUS_OK

log = logging.getLogger(__name__)

__all__ = ["Scorers", "SegmentJob", "score_segment", "score_segments", "deterministic_torch"]


def _start_frame(grid, row: dict) -> int | None:
    """Grid index of the window start, or None (row marked failed) when it does not fit."""
    s, e = row.get("start"), row.get("end")
    try:
        s, e = float(s), float(e)
    except (TypeError, ValueError):
        return _fail(row, f"window has no valid start/end ({s!r}, {e!r})")
    if abs((e - s) - sampling.WINDOW_SECONDS) > 1e-3:
        return _fail(row, f"window [{s}, {e}) is not {sampling.WINDOW_SECONDS:g} s long")
    i0 = sampling.start_index(s, grid.start, grid.fps)
    # one frame of slack for shot times that are not on the 12-fps grid
    if i0 < -1 or i0 + sampling.WINDOW_FRAMES > len(grid.frames) + 1:
        return _fail(row, f"window [{s:g}, {e:g}) is outside the decoded grid "
                          f"[{grid.start:g}, {grid.end:g})")
    return i0


def _fail(row: dict, msg: str) -> None:
    row["status"], row["error"] = STATUS_FAILED, msg
    for n in schemas.NOTE_COLUMNS:
        row[n] = f"error: {msg}"
    return None


# ---------------------------------------------------------------- the cascade

def _init_row(window: Mapping[str, Any], redo: Iterable[str]) -> dict:
    row = dict(window)
    for c in (*schemas.ALL_SCORES, *schemas.NOTE_COLUMNS):
        row.setdefault(c, None)
    for name in redo:
        for c in registry.columns(name):
            row[c] = None
        row[registry.note_column(name)] = None
    row["status"], row["error"] = STATUS_OK, None  # set to failed again if it does not fit
    return row


def _set_note(rows: list[dict], ks: Iterable[int], name: str, note: str) -> None:
    cols = registry.columns(name)
    for k in ks:
        for c in cols:
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
    ``gate``: filters whose failure stops a window (default: those that gate unless a
    recipe says otherwise, ``registry.default_gate``).
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
    gate = set(order) & set(registry.default_gate()) if gate is None else set(gate)
    for job in jobs:
        unknown = ({*gate} | {*(job.only or ())}) - set(order)
        if unknown:
            raise ValueError(f"unknown filter(s) {sorted(unknown)}; known: {list(order)}")
    todos = [[n for n in order if job.only is None or n in job.only] for job in jobs]
    segs = [_segment(job, todo, scorers) for job, todo in zip(jobs, todos)]
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


def _segment(job: SegmentJob, todo: list[str], scorers: Scorers) -> Segment:
    rows = [_init_row(w, todo) for w in job.windows]
    return Segment(job.grid, rows, [_start_frame(job.grid, r) for r in rows], scorers,
                   job.class_text, job.path, job.offset)


def _no_model(row: dict, name: str) -> bool:
    return row.get(registry.note_column(name)) == registry.SKIP_NO_MODEL.format(name)


def _score_filter(segs: list[Segment], name: str, lives: list[list[int]],
                  stopped: list[dict[int, str]]) -> None:
    spec = registry.spec(name)
    jobs: list[tuple[Segment, list[int]]] = []
    for seg, live, st in zip(segs, lives, stopped):
        for k in range(len(seg.rows)):
            if k in st:
                _set_note(seg.rows, [k], name, registry.SKIP_REJECTED + st[k])
        if not live:
            continue
        if spec.model is not None and seg.model(name) is None:
            _set_note(seg.rows, live, name, registry.SKIP_NO_MODEL.format(name))
        elif spec.needs_audio and not getattr(seg.grid, "has_audio", True):
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
            errs = spec.run(seg, live)
        except Exception as e:  # noqa: BLE001 - a model failure costs this filter's scores only
            log.warning("%s failed on %d windows: %s", name, len(live), e)
            errs = {k: error_note(e) for k in live}
        for k, note in errs.items():
            _set_note(seg.rows, [k], name, note)
