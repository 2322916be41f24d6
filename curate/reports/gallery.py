"""What a run kept and what it turned away, as pictures for the HTML report.

For each class, the selected clips (best ranked first) and, for each filter that rejected
windows, the rejected windows nearest its thresholds (below and above in turn: what a small
threshold change would admit). Each shown clip or window carries one small JPEG strip of its
first, middle and last frame, decoded in one pass over the file, its duration, split and
scores. Caps keep the page small at VGGSS scale: ``per_class`` clips per class and at most
``total`` clips in all (fewer per class when there are many classes), ``per_reason`` windows
per reason; the rest is counted, not shown.

Pictures come from the downloaded segment (``media/raw/<source_id>.mp4``, the file the
scores were computed on; ``seg_start`` from the downloads table), else from the cut clip
(``media/clips/<key>.mp4``); ids pass ``safe_id`` before they name a file. A clip without a
readable file is shown without a picture and says why.
"""
from __future__ import annotations

import base64
import io
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from manifests import schemas
from manifests.names import safe_id
from curate.reports.numbers import bounds, score_text

log = logging.getLogger(__name__)

PER_CLASS = 12
TOTAL = 600
PER_REASON = 12
#: rejected windows of one source shown per reason while other sources are left
PER_SOURCE = 2
THUMB_HEIGHT = 54
JPEG_QUALITY = 60
#: the last frame of a clip is the one shown just before its end
LAST_FRAME_EPS = 1e-3
_GAP = 2                # pixels between the three stills of a strip


@dataclass
class Shown:
    """One clip or window as the report shows it."""
    name: str
    class_name: str | None
    split: str | None
    start: float
    end: float
    scores: dict[str, float | None]
    times: tuple[float, ...] = ()
    picture: str | None = None          # base64 JPEG: first | middle | last frame
    note: str | None = None             # why there is no picture
    n_windows: int | None = None
    verdict: str | None = None          # a rejected window: which bound it missed, by how much

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Strip:
    """The shown items of a class or reason, and how many exist in all."""
    items: list[Shown] = field(default_factory=list)
    total: int = 0
    splits: dict[str, int] = field(default_factory=dict)

    @property
    def more(self) -> int:
        return self.total - len(self.items)


@dataclass
class Gallery:
    kept: dict[str, Strip]
    rejected: dict[str, Strip]
    per_class: int
    per_reason: int
    score_only: set[str] = field(default_factory=set)   # columns of filters that do not gate


# ----------------------------------------------------------------------------- thresholds

def _missed(values: Mapping[str, np.ndarray], cols: Sequence[str],
            thresholds: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window: (distance to the bound it misses most, side: -1 below a min / +1 above a max
    / 0 none, index in ``cols`` of that column). A missing score is at infinite distance."""
    n = len(next(iter(values.values()))) if values else 0
    dist, side, which = np.zeros(n), np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.int64)
    for j, col in enumerate(cols):
        v = values[col]
        lo, hi = bounds(col, thresholds)
        for bound, sign in ((lo, -1), (hi, 1)):
            if bound is None:
                continue
            d = np.where(np.isnan(v), np.inf, (bound - v) * -sign)   # > 0: the bound is missed
            worse = (d > 0) & (d > dist)
            dist[worse], side[worse], which[worse] = d[worse], sign, j
    return dist, side, which


def nearest(dist: np.ndarray, side: np.ndarray, n: int, group: np.ndarray | None = None,
            per_group: int = PER_SOURCE) -> list[int]:
    """Indices of up to ``n`` windows nearest their threshold, the nearest below and the
    nearest above taken in turn (ties in table order); at most ``per_group`` of one ``group``
    (source) while others are left, so one silent video does not fill the sample."""
    sides = [np.flatnonzero(side == s) for s in (-1, 1)]
    sides = [ix[np.argsort(dist[ix], kind="stable")] for ix in sides]
    order: list[int] = []
    for k in range(max((len(s) for s in sides), default=0)):
        order += [int(s[k]) for s in sides if k < len(s)]
    if group is None:
        return order[:n]
    seen: dict[Any, int] = {}
    first = []
    for i in order:
        if seen.get(group[i], 0) < per_group:
            seen[group[i]] = seen.get(group[i], 0) + 1
            first.append(i)
            if len(first) == n:
                return first
    taken = set(first)
    return first + [i for i in order if i not in taken][:n - len(first)]


# ----------------------------------------------------------------------------- pictures

def strip_jpeg(path: str | Path, times: Sequence[float], offset: float = 0.0,
               height: int = THUMB_HEIGHT) -> str:
    """Base64 JPEG of the frames shown at ``times``, side by side (one decoding pass)."""
    from PIL import Image
    from decoding.media import stills

    frames = stills(path, times, height, offset=offset)
    width = sum(f.shape[1] for f in frames) + _GAP * (len(frames) - 1)
    canvas = np.full((height, width, 3), 255, np.uint8)
    x = 0
    for f in frames:
        canvas[:f.shape[0], x:x + f.shape[1]] = f
        x += f.shape[1] + _GAP
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def clip_times(start: float, end: float) -> tuple[float, float, float]:
    """First, middle and last frame instants of [start, end)."""
    return start, (start + end) / 2, max(start, end - LAST_FRAME_EPS)


def _picture(out: Path, item: Shown, source_id: str | None, seg_start: float | None,
             key: str | None) -> None:
    """Fill ``item.picture`` from the downloaded segment, else the cut clip; else a note."""
    item.times = clip_times(item.start, item.end)
    tried = []
    for kind, ident in (("raw", source_id), ("clips", key)):
        try:
            path = out / "media" / kind / f"{safe_id(ident)}.mp4" if ident else None
        except ValueError as e:
            tried.append(str(e))
            continue
        if path is None or not path.is_file():
            continue
        # a cut clip starts at the clip's own start: its times are relative to it
        times = item.times if kind == "raw" else [t - item.start for t in item.times]
        try:
            item.picture = strip_jpeg(path, times, offset=(seg_start or 0.0) if kind == "raw" else 0.0)
            return
        except Exception as e:      # noqa: BLE001 - a bad file costs its picture, not the report
            tried.append(f"{path.name}: {e}")
    item.note = "; ".join(tried) or "no downloaded segment or cut clip on disk"


# ----------------------------------------------------------------------------- tables

def _read(out: Path, name: str, columns: Sequence[str], dictionary: Sequence[str] = ()) -> pa.Table | None:
    if not schemas.has_manifest(out, name):
        return None
    from manifests.columns import read_columns
    return read_columns(out, name, columns, dictionary=dictionary)


def _seg_starts(out: Path) -> dict[str, float]:
    dl = _read(out, "downloads", ["source_id", "status", "seg_start"])
    if dl is None:
        return {}
    dl = dl.filter(pc.fill_null(pc.equal(dl["status"], schemas.STATUS_OK), False))
    return {s: (a or 0.0) for s, a in zip(dl["source_id"].to_pylist(), dl["seg_start"].to_pylist())}


def _score_dict(row: Mapping[str, Any], cols: Sequence[str]) -> dict[str, float | None]:
    out = {}
    for c in cols:
        v = row.get(c)
        out[c] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    return out


def class_cap(n_classes: int, per_class: int = PER_CLASS, total: int = TOTAL) -> int:
    """Clips shown per class: ``per_class``, fewer when the classes would pass ``total``
    (at least one each)."""
    return max(1, min(per_class, total // max(n_classes, 1)))


# ----------------------------------------------------------------------------- kept

_SELECTED = ["key", "name", "clip_id", "source_id", "class_name", "split", "start", "end",
             "rank_score", "status"]


def kept_strips(out: Path, scores: Sequence[str], per_class: int = PER_CLASS,
                total: int = TOTAL) -> tuple[dict[str, Strip], list[tuple[Shown, dict]]]:
    """Per class the selected clips, best ranked first, capped (``class_cap``); and the
    (item, where its file is) pairs still to be pictured."""
    sel = _read(out, "selected", _SELECTED)
    if sel is None:
        return {}, []
    sel = sel.filter(pc.fill_null(pc.equal(sel["status"], schemas.STATUS_OK), False))
    clips = _read(out, "clips", ["clip_id", "n_windows", *scores])
    by_clip: dict[str, dict] = {}
    if clips is not None and sel.num_rows:
        clips = clips.filter(pc.fill_null(pc.is_in(clips["clip_id"], value_set=sel["clip_id"]), False))
        by_clip = {r["clip_id"]: r for r in clips.to_pylist()}
    groups: dict[str, list[dict]] = {}
    for r in sel.to_pylist():          # selected clips only: thousands of rows
        groups.setdefault(str(r["class_name"]), []).append(r)
    cap = class_cap(len(groups), per_class, total)
    strips, todo = {}, []
    for cls in sorted(groups):
        rows = sorted(groups[cls], key=lambda r: (-(r["rank_score"] if r["rank_score"] is not None
                                                     else -math.inf), str(r["name"])))
        strip = Strip(total=len(rows))
        for r in rows:
            strip.splits[str(r["split"])] = strip.splits.get(str(r["split"]), 0) + 1
        for r in rows[:cap]:
            c = by_clip.get(r["clip_id"], {})
            item = Shown(name=str(r["name"] or r["key"]), class_name=cls, split=r["split"],
                         start=float(r["start"]), end=float(r["end"]),
                         scores=_score_dict(c, scores), n_windows=c.get("n_windows"))
            strip.items.append(item)
            todo.append((item, {"source_id": r["source_id"], "key": r["key"]}))
        strips[cls] = strip
    return strips, todo


# ----------------------------------------------------------------------------- rejected

def _aligned(dec: pa.Table, win: pa.Table) -> np.ndarray:
    """Row of ``win`` of each decision (-1: none); the tables are usually in the same order."""
    if dec.num_rows == win.num_rows and dec["window_id"].equals(win["window_id"]):
        return np.arange(dec.num_rows)
    pos = pc.index_in(dec["window_id"], value_set=win["window_id"].combine_chunks())
    return pc.fill_null(pos, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _floats(col: Any) -> np.ndarray:
    return pc.fill_null(pc.cast(col, pa.float64()), float("nan")).to_numpy(zero_copy_only=False)


def rejected_strips(out: Path, thresholds: Mapping[str, Any] | None, scores: Sequence[str],
                    per_reason: int = PER_REASON) -> tuple[dict[str, Strip], list[tuple[Shown, dict]]]:
    """Per filter that rejected windows (cascade reasons of the decisions table), the
    ``per_reason`` rejected windows nearest its bounds, below and above in turn. Columnar:
    only the picked windows become Python rows (a 1.1M-window run makes a few dozen)."""
    dec = _read(out, "decisions", ["window_id", "reason"], dictionary=["reason"])
    win = _read(out, "windows", [*_WINDOW, *scores], dictionary=["source_id", "class_name", "split"]) \
        if dec is not None else None
    if dec is None or win is None:
        return {}, []
    pos = _aligned(dec, win)
    reasons = dec["reason"].cast(pa.string())
    found = {r for r in pc.unique(reasons).to_pylist() if r is not None}
    strips, todo = {}, []
    for f in _reason_order(found):
        mask = pc.fill_null(pc.equal(reasons, f), False).to_numpy(zero_copy_only=False)
        idx = pos[mask & (pos >= 0)]
        strip = Strip(total=len(idx))
        for r, verdict in _sample(win, idx, [c for c in schemas.SCORE_COLUMNS[f] if c in scores],
                                  thresholds, per_reason):
            item = Shown(name=str(r["window_id"]), class_name=r["class_name"], split=r["split"],
                         start=float(r["start"]), end=float(r["end"]), scores=_score_dict(r, scores),
                         verdict=verdict)
            strip.items.append(item)
            todo.append((item, {"source_id": r["source_id"], "key": None}))
        strips[f] = strip
    return strips, todo


_WINDOW = ["window_id", "source_id", "class_name", "split", "start", "end"]


def _sample(win: pa.Table, idx: np.ndarray, fcols: list[str], thresholds: Mapping[str, Any] | None,
            n: int) -> list[tuple[dict, str]]:
    """(row, verdict) of the ``n`` windows at rows ``idx`` of ``win`` nearest a bound of
    ``fcols``, at most ``PER_SOURCE`` of one source while others are left."""
    values = {c: _floats(win[c].take(pa.array(idx, type=pa.int64()))) for c in fcols}
    dist, side, which = _missed(values, fcols, thresholds)
    # one code per source (Arrow, no Python string per window)
    sources = win["source_id"].take(pa.array(idx, type=pa.int64())).cast(pa.string()).combine_chunks()
    group = pc.dictionary_encode(sources).indices.to_numpy(zero_copy_only=False)
    picks = nearest(dist, side, n, group)
    rows = win.take(pa.array(idx[picks], type=pa.int64())).to_pylist() if picks else []
    return [(r, _verdict(fcols[which[i]], values[fcols[which[i]]][i], int(side[i]), thresholds))
            for r, i in zip(rows, picks)]


def _reason_order(found: set[str]) -> list[str]:
    """Filters in the declared order (reasons that are no filter, e.g. ``failed``, left out)."""
    return [f for f in schemas.SCORE_COLUMNS if f in found]


def _verdict(col: str, v: float, side: int, thresholds: Mapping[str, Any] | None) -> str:
    if math.isnan(v):
        return f"{col} not scored"
    lo, hi = bounds(col, thresholds)
    bound, word = (lo, "min") if side < 0 else (hi, "max")
    if bound is None:
        return f"{col} {score_text(v)}"
    return (f"{col} {score_text(v, bound)} {'<' if side < 0 else '>'} {word} {score_text(bound)} "
            f"(by {score_text(abs(v - bound))})")


# ----------------------------------------------------------------------------- all

def collect_gallery(out: str | Path, thresholds: Mapping[str, Any] | None,
                    scores: Sequence[str] | None = None, per_class: int = PER_CLASS,
                    total: int = TOTAL, per_reason: int = PER_REASON,
                    score_only: Sequence[str] = ()) -> Gallery:
    """The kept clips per class and the rejected windows per reason, with their pictures;
    ``score_only``: filters that record scores without gating (their columns are marked)."""
    out = Path(out)
    scores = list(schemas.ALL_SCORES) if scores is None else scores    # every declared score
    kept, todo = kept_strips(out, scores, per_class, total)
    rejected, todo_r = rejected_strips(out, thresholds, scores, per_reason)
    seg = _seg_starts(out) if todo or todo_r else {}

    def picture(job: tuple[Shown, dict]) -> None:
        item, where = job
        _picture(out, item, where["source_id"], seg.get(where["source_id"]), where["key"])
    # each item fills its own picture: threads change the time taken, not the bytes
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        jobs = [*todo, *todo_r]
        for _ in tqdm(pool.map(picture, jobs), total=len(jobs), desc="report pictures",
                      unit="clip", disable=None, leave=False):
            pass
    return Gallery(kept=kept, rejected=rejected, per_class=class_cap(len(kept), per_class, total),
                   per_reason=per_reason,
                   score_only={c for f in score_only for c in schemas.SCORE_COLUMNS.get(f, ())})
