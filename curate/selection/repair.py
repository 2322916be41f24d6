"""Repair instead of drop: when may a clip's audio be shifted back onto its picture.

A clip is repaired only when two independent models agree that its audio is off by one
constant, non-zero amount: Synchformer (the certify stage's offsets of the clip's first and
last 4.8-s contexts) and the paper's classifier (its argmax over its candidate shifts, per
window of the clip). Everything here is pure: it reads stored offsets and decides; the shard
stage cuts (``curate.ops.cut``), rescores and keeps the repaired clip only when the rescore
finds offset 0.

Sign convention (one for the whole repair, that of ``curate.demo.synth``): a *delay* d > 0
means the audio is late, the sound of the picture at time t is heard at t + d. The repaired
clip's audio at clip time t is the source's audio at t + d (``av_shift_ms`` = 1000 d).
Both models' offsets follow the authors' transforms of Synchformer (``filters.synchformer``:
positive = the audio runs ahead; the paper's classifier's per-window argmax is signed the
same way), so a delay is minus an offset (``delay_of``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

#: Synchformer's class step (``filters.synchformer.offset_grid``: 21 classes over +-2 s; not
#: imported from there, which loads torch: selection touches no model; a test ties the two)
SF_STEP_S = 0.2
#: the two models agree when the paper's per-clip delay falls inside Synchformer's class
#: (half a step each side)
AGREE_TOL_S = SF_STEP_S / 2
#: constant over the clip: every window's delay within this of the windows' median (half a
#: Synchformer class: a neighbour of the paper's finer grid is still the same offset)
CONSTANT_TOL_S = SF_STEP_S / 2
#: the default confidence each Synchformer context must reach (recipe ``repair.min_prob``;
#: a softmax over its 21 classes 0.2 s apart)
MIN_PROB = 0.5
#: the default confidence each window of the paper's classifier must reach (recipe
#: ``repair.min_window_prob``): twice chance. Its softmax runs over 31 shifts only 0.04 s
#: apart, so neighbouring shifts share the mass and the argmax rarely nears 0.5 (the demo
#: classifier reads 0.03-0.13 on shifted clips); constancy over the clip's windows and the
#: agreement with Synchformer carry the rest of the evidence.
MIN_WINDOW_PROB = 2 / 31
#: the paper's classifier's per-window argmax offset and its probability (``filters.sync``;
#: Synchformer's sign); a windows table without them gives no repair
PAPER_COLUMNS = ("sync_offset_s", "sync_offset_p")


@dataclass(frozen=True)
class RepairDecision:
    """``delay_s``: the audio delay to undo (None: no repair); ``reason``: why, in words;
    ``sf_delay_s``: Synchformer's delay where the models agree on one; ``pending_s``: the
    delay of a clip that meets every rule but the paper's classifier's per-window
    confidence (``confirm_by_shot`` may confirm it)."""
    delay_s: float | None
    reason: str
    sf_delay_s: float | None = None
    pending_s: float | None = None

    @property
    def repair(self) -> bool:
        return self.delay_s is not None


def delay_of(offset_s: float | None) -> float | None:
    """A model's offset (positive = audio ahead) as a delay (positive = audio late)."""
    return None if offset_s is None else -float(offset_s)


def _missing(xs: Sequence[float | None]) -> bool:
    return not xs or any(x is None or (isinstance(x, float) and math.isnan(x)) for x in xs)


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def decide_repair(sf_delays: Sequence[float | None], sf_probs: Sequence[float | None],
                  paper_delays: Sequence[float | None], paper_probs: Sequence[float | None],
                  min_prob: float = MIN_PROB,
                  min_window_prob: float = MIN_WINDOW_PROB) -> RepairDecision:
    """Whether to repair a clip, from Synchformer's delay per context and the paper's
    classifier's delay per window (both as delays: ``delay_of``) with their
    probabilities (each model against its own threshold). The applied delay is the paper's median (its grid is finer than
    Synchformer's 0.2 s; the rescore of the repaired clip must then find class 0)."""
    if _missing(sf_delays) or _missing(sf_probs):
        return RepairDecision(None, "no Synchformer certificate")
    if _missing(paper_delays) or _missing(paper_probs):
        return RepairDecision(None, "no per-window offsets from the paper's classifier")
    if min(sf_probs) < min_prob:
        return RepairDecision(None, f"not confident (Synchformer below {min_prob:g})")
    if min(paper_probs) < min_window_prob:
        rest = decide_repair(sf_delays, sf_probs, paper_delays, paper_probs, min_prob, -math.inf)
        if not rest.repair:         # another rule already says no: its reason is the clip's
            return rest
        return RepairDecision(None, f"not confident (a window of the paper's classifier below "
                                    f"{min_window_prob:.3g})", rest.sf_delay_s, rest.delay_s)
    if max(sf_delays) - min(sf_delays) > 1e-6:
        return RepairDecision(None, "offset not constant: Synchformer's contexts differ "
                                    f"({min(sf_delays):+.2f} .. {max(sf_delays):+.2f} s)")
    paper = _median(paper_delays)
    if max(abs(d - paper) for d in paper_delays) > CONSTANT_TOL_S:
        return RepairDecision(None, "offset not constant: the windows' offsets range "
                                    f"{min(paper_delays):+.3f} .. {max(paper_delays):+.3f} s")
    sf = sf_delays[0]
    if abs(paper - sf) > AGREE_TOL_S:
        return RepairDecision(None, f"models disagree (Synchformer {sf:+.2f} s, "
                                    f"paper's classifier {paper:+.3f} s)")
    if abs(sf) < AGREE_TOL_S:
        return RepairDecision(None, "in sync (both models find offset 0)")
    return RepairDecision(paper, f"audio {'late' if paper > 0 else 'early'} by {abs(paper):.3f} s "
                                 "(both models agree)", sf)


def confirm_by_shot(decisions: Mapping[Any, RepairDecision], shot_of: Mapping[Any, Any]
                    ) -> dict[Any, RepairDecision]:
    """Decisions with the pending ones confirmed by their shot. A shot's offset is one
    constant (a file's audio is shifted as a whole when it was muxed: the assumption
    ``candidate_runs`` makes too), so the paper's classifier's confidence may come from
    another clip of the same shot: a clip that meets every rule on its own windows and
    contexts (both models agree on one constant non-zero offset, Synchformer confident in
    each of its contexts) but whose classifier windows are below ``min_window_prob`` is
    repaired when every repair decided in its shot is at its Synchformer offset. ``shot_of``
    maps each decision's key to its shot; keys without a shot are left as they are."""
    shots: dict[Any, set[float]] = {}
    for k, d in decisions.items():
        if d.repair and shot_of.get(k) is not None:
            shots.setdefault(shot_of[k], set()).add(round(d.sf_delay_s, 6))
    out = dict(decisions)
    for k, d in decisions.items():
        if d.pending_s is None or shot_of.get(k) is None:
            continue
        if shots.get(shot_of[k]) == {round(d.sf_delay_s, 6)}:
            out[k] = RepairDecision(d.pending_s, f"audio {'late' if d.pending_s > 0 else 'early'} by "
                                    f"{abs(d.pending_s):.3f} s (both models agree; the classifier's "
                                    "confidence from another clip of its shot at the same offset)",
                                    d.sf_delay_s)
    return out


def candidate_mask(windows: Any, thresholds: Any, gate: Iterable[str], order: Sequence[str] | None,
                   min_window_prob: float = MIN_WINDOW_PROB) -> np.ndarray:
    """Repair candidates among a windows table's rows: rejected by the sync gate and by no
    other gating filter, with the paper's classifier confident (``min_window_prob``) of a non-zero
    offset (at least half a Synchformer class). Merged like kept windows (the decisions stay
    as they are); a clip holding one ships only repaired (shard stage)."""
    from curate.selection.rules import WindowMasks, _np_float, decide_masks
    none = np.zeros(windows.num_rows, dtype=bool)
    gate = set(gate)
    if "sync" not in gate or not set(PAPER_COLUMNS) <= set(windows.column_names):
        return none
    m = WindowMasks(windows, thresholds)
    keep, _ = decide_masks(m, gate, order)
    but_sync, _ = decide_masks(m, gate - {"sync"}, order)
    off, prob = _np_float(windows[PAPER_COLUMNS[0]]), _np_float(windows[PAPER_COLUMNS[1]])
    with np.errstate(invalid="ignore"):
        return but_sync & ~keep & (prob >= min_window_prob) & (np.abs(off) >= AGREE_TOL_S)


def _touch(a0: float, a1: float, b0: float, b1: float) -> bool:
    """Whether two spans overlap or touch (they would merge into one clip)."""
    return a0 <= b1 + 1e-6 and b0 <= a1 + 1e-6


def _sf_class(offset_s: float) -> int:
    """The Synchformer class (``SF_STEP_S`` apart) an offset falls in."""
    return round(offset_s / SF_STEP_S)


def _runs(rows: list[int], free: set[int], off: np.ndarray) -> list[list[int]]:
    """Maximal runs of consecutive rows (in start order) in ``free`` of one offset, counted
    in Synchformer classes (``SF_STEP_S``)."""
    runs: list[list[int]] = []
    cur: list[int] = []
    for i in rows:
        if i in free and cur and _sf_class(off[i]) == _sf_class(off[cur[-1]]):
            cur.append(i)
            continue
        if cur:
            runs.append(cur)
        cur = [i] if i in free else []
    return runs + ([cur] if cur else [])


def _inside(run: list[int], start: np.ndarray, end: np.ndarray, off: np.ndarray,
            extent: tuple[float, float]) -> bool:
    """Whether a run's audio, shifted by the delay its repair would undo (the median of its
    windows' offsets as a delay, as ``decide_repair`` applies), stays inside ``extent`` (the
    span its source's windows cover: audio known to exist; the cut refuses a shift that runs
    out of the file)."""
    d = -_median([float(off[i]) for i in run])
    return start[run[0]] + d >= extent[0] - 1e-6 and end[run[-1]] + d <= extent[1] + 1e-6


def _shot_runs(rows: list[int], start: np.ndarray, end: np.ndarray, keep: np.ndarray,
               cand: np.ndarray, off: np.ndarray, extent: tuple[float, float]) -> list[int]:
    """One shot's candidate rows that make clips a repair can decide on (``candidate_runs``)."""
    kept = [(start[i], end[i]) for i in rows if keep[i]]
    free = {i for i in rows if cand[i] and not any(_touch(start[i], end[i], a, b) for a, b in kept)}
    runs = _runs(rows, free, off)
    if not runs:
        return []
    # the shot's one offset: its longest run's class (the earliest among equals)
    shift = _sf_class(off[min(runs, key=lambda r: (-len(r), start[r[0]]))[0]])
    chosen: list[tuple[float, float]] = []
    out: list[int] = []
    # of runs that touch, one whose shifted audio stays in the source before one the cut
    # would refuse at the file's edge; then the longest, then the earliest
    order = sorted((r for r in runs if _sf_class(off[r[0]]) == shift),
                   key=lambda r: (not _inside(r, start, end, off, extent), -len(r), start[r[0]]))
    for run in order:
        span = (start[run[0]], end[run[-1]])
        if not any(_touch(*span, a, b) for a, b in chosen):
            chosen.append(span)
            out += run
    return out


def candidate_runs(windows: Any, keep: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """The repair candidates select merges (``cand``: ``candidate_mask``), so that each clip
    they make holds one offset and nothing else: runs of consecutive candidate windows of one
    shot whose offsets fall in one Synchformer class; a candidate touching a kept window is
    left out (the in-sync part of a partly shifted shot merges and ships as with repair off,
    instead of the whole clip failing as not constant); a shot's shift is one constant, so
    only runs at the offset of its longest run are kept (shorter runs at another offset are the
    classifier's misses), every one that touches no other, and of runs that would touch one
    another one whose shifted audio stays inside the span the source's windows cover (a repair
    the cut would refuse at the file's edge gives way), then the longest, then the earliest.
    Each clip's windows are then exactly one run (``decide_repair`` reads the windows inside
    a clip)."""
    from curate.selection.rules import _np_float
    out = np.zeros(len(cand), dtype=bool)
    if not cand.any():
        return out
    keep = np.asarray(keep, dtype=bool)
    src = np.asarray(windows["source_id"].to_pylist(), dtype=object)
    shot = np.asarray([s or "" for s in windows["shot_id"].to_pylist()], dtype=object)
    start, end = _np_float(windows["start"]), _np_float(windows["end"])
    status = windows["status"].to_pylist()
    off = _np_float(windows[PAPER_COLUMNS[0]])
    groups: dict[tuple[str, str], list[int]] = {}
    wanted = set(src[cand])
    for i in np.nonzero(np.isin(src, list(wanted)))[0]:
        if status[i] in (None, "ok"):
            groups.setdefault((src[i], shot[i]), []).append(int(i))
    extent: dict[str, tuple[float, float]] = {}
    for (sid, _), rows in groups.items():       # the span each source's windows cover
        lo, hi = extent.get(sid, (math.inf, -math.inf))
        extent[sid] = (min(lo, float(start[rows].min())), max(hi, float(end[rows].max())))
    for (sid, _), rows in groups.items():
        rows.sort(key=lambda i: (start[i], end[i]))
        out[_shot_runs(rows, start, end, keep, cand, off, extent[sid])] = True
    return out
