"""From clips to the selected dataset: ranking, per-class balancing, train/test splits.

Replaces the seed's manual pass (seed 003 section 5.2: 15 classes x 100 clips, 90 train /
10 test) with a documented automatic ranking, optionally corrected by a manual review
(``curate/reports/review.py``): rejected names are excluded and each class is refilled from the ranking.

Names: ``format_clip_name`` with the clip times relative to the segment, rounded to 0.1 s
(``NAME_DECIMALS``); the row's start/end are the rounded times, so a cut matches its name.
Keys: ``shards.writer.key_from_name`` (dot-free). Shortfalls are in the summary and logged.

Everything is deterministic for a given seed: ties and split assignment use a SHA-256 of
``"{seed}:{id}"``, never Python's salted ``hash`` or global RNG state.

Parameters (``recipe_params`` is a whole recipe dict or its ``"select"`` part):

- ``per_class`` (int | None): keep at most this many clips per class, best ranked first;
  None keeps every ok clip (VGGSS, Landscape: no balancing).
- ``max_per_source`` (int | None): at most this many clips of one source segment; default
  1 when ``per_class`` is set (AVSync15 has about one clip per video, so one segment cannot
  fill a class), None otherwise. A manual reject excludes only that clip; another clip of
  the same segment stays a candidate.
- ``test_per_class`` (int | None), ``balanced_test`` (bool), ``test_fraction`` (float, 0.1):
  neither set -> keep the split of the source row (VGGSS). ``test_per_class`` set -> that
  many test clips per full class; a class with a shortfall gets ``selected *
  test_per_class / per_class`` rounded half up (45 clips -> 5 test). ``balanced_test`` ->
  the same number in every class: ``test_per_class`` if given, else
  ``floor(test_fraction * smallest class)``,
  lowered to the smallest class when that class has fewer clips (reported in warnings).
- test clips are whole YouTube videos where possible (grouped by ytid, groups in seeded
  order) so no video is in both splits; when only part of a group fits, its remaining clips
  are "skipped" (not train) with the reason, instead of leaking the video into train.

Returned rows cover every input clip (rows never disappear): status "ok" = in the dataset;
"skipped" = a valid clip not needed (beyond per_class, source cap, leakage guard);
"rejected" = rejected by the reviewer, or by an earlier stage (its error is carried).
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import defaultdict
from typing import Any, Mapping, Sequence

from manifests.names import format_clip_name, split_source_id, ytid_of
from manifests import schemas
from manifests.schemas import STATUS_FAILED, STATUS_OK, STATUS_REJECTED, STATUS_SKIPPED
from shards.writer import key_from_name

log = logging.getLogger(__name__)

#: clip times in names are rounded to this many decimals (the released AVSync15 list has
#: values like 2.5, 6.0; windows are on a 0.5-s grid so merged clips are exact; shot
#: trimming can give other values, which are rounded)
NAME_DECIMALS = 1


def rank_score(clip: Mapping[str, Any]) -> float | None:
    """Combined ranking score: mean(sync_a2v, sync_v2a) + imagebind_ia.

    Audio-video synchronisation (P_sync in [0, 1], chance 1/3) and audio-image semantic
    alignment (ImageBind cosine) are the two properties the seed's manual pass checked
    beyond what the gating already ensured; they get equal weight. None when any of the
    three scores is null (a filter that was not run or failed): such clips are ranked after
    every scored clip, in seeded order, never given a made-up score.
    """
    vals = [clip.get(c) for c in ("sync_a2v", "sync_v2a", "imagebind_ia")]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in vals):
        return None
    a2v, v2a, ia = (float(v) for v in vals)
    return (a2v + v2a) / 2.0 + ia


def _seeded(seed: int, ident: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{ident}".encode()).digest()[:8], "big")


def clip_name(clip: Mapping[str, Any]) -> tuple[str, float, float]:
    """AVSync15-style name of a clip, with its times rounded to NAME_DECIMALS."""
    if clip.get("class_name") is None or clip.get("start") is None or clip.get("end") is None:
        raise ValueError("clip has no class_name/start/end")
    ytid, s, e = split_source_id(clip["source_id"])
    cs, ce = round(float(clip["start"]), NAME_DECIMALS), round(float(clip["end"]), NAME_DECIMALS)
    return format_clip_name(clip["class_name"], ytid, s, e, cs, ce), cs, ce


def _params(recipe_params: Mapping[str, Any], seed: int | None) -> dict[str, Any]:
    has_select = "select" in recipe_params
    p = dict(recipe_params.get("select") or {}) if has_select else dict(recipe_params)
    out = {
        "per_class": p.get("per_class"), "test_per_class": p.get("test_per_class"),
        "balanced_test": bool(p.get("balanced_test", False)),
        "test_fraction": float(p.get("test_fraction", 0.1)),
        "seed": int(seed if seed is not None else p.get("seed", 0) or 0),
    }
    out["max_per_source"] = p.get("max_per_source", 1 if out["per_class"] else None)
    return out


def _assign_test(rows: list[dict[str, Any]], n_test: int, seed: int) -> None:
    """Split the ok rows of one class: n_test to test by whole videos where they fit."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[ytid_of(r["source_id"])].append(r)
    order = sorted(groups, key=lambda g: _seeded(seed, g))
    need, test_groups = n_test, set()
    for g in order:                        # first fit of whole videos
        if 0 < len(groups[g]) <= need:
            test_groups.add(g)
            need -= len(groups[g])
    for g in order:
        members = sorted(groups[g], key=lambda r: (r["start"], r["name"]))
        if g in test_groups:
            for r in members:
                r["split"] = "test"
        elif need > 0:                     # partial video: the rest would leak into train
            for i, r in enumerate(members):
                if i < need:
                    r["split"] = "test"
                else:
                    r.update(split=None, status=STATUS_SKIPPED,
                             error="select: same video as test clips, held out of train")
            need = 0
        else:
            for r in members:
                r["split"] = "train"


def _n_test(counts: dict[str, int], prm: dict[str, Any],
            warnings: list[str]) -> dict[str, int] | None:
    """Test clips per class, or None to keep the source split."""
    tpc, per_class = prm["test_per_class"], prm["per_class"]
    if not prm["balanced_test"]:
        if tpc is None:
            return None
        if per_class:
            return {c: min(n, tpc) if n >= per_class else int(math.floor(n * tpc / per_class + 0.5))
                    for c, n in counts.items()}
        return {c: min(n, tpc) for c, n in counts.items()}
    # classes of the recipe with no candidate at all are reported as shortfall; they must not
    # drive every other class's test count to zero
    nonempty = [n for n in counts.values() if n > 0]
    smallest = min(nonempty) if nonempty else 0
    n = int(tpc) if tpc is not None else int(math.floor(prm["test_fraction"] * smallest))
    if n > smallest:
        warnings.append(f"balanced test: {n} per class requested, smallest class has "
                        f"{smallest}; using {smallest}")
        n = smallest
    return {c: min(n, k) for c, k in counts.items()}


def _summary(ok: dict[str, list[dict]], n_candidates: Mapping[str, int],
             n_review_rejected: Mapping[str, int], prm: dict[str, Any],
             warnings: list[str]) -> dict[str, Any]:
    """Per class: ok candidates, selected, train/test (selected rows held out of train for
    leakage are not counted), and the shortfall against per_class."""
    per_class, shortfall = {}, {}
    for c in sorted(ok, key=str):
        sel = [r for r in ok[c] if r["status"] == STATUS_OK]
        per_class[c] = {
            "candidates": n_candidates.get(c, 0), "selected": len(sel),
            "review_rejected": n_review_rejected.get(c, 0),
            "train": sum(r["split"] == "train" for r in sel),
            "test": sum(r["split"] == "test" for r in sel),
        }
        if prm["per_class"] is not None and len(sel) < prm["per_class"]:
            shortfall[c] = prm["per_class"] - len(sel)
    if shortfall:
        warnings.append(f"{len(shortfall)} classes short of {prm['per_class']} clips: "
                        + ", ".join(f"{c} (-{n})" for c, n in shortfall.items()))
    return {"per_class": per_class, "shortfall": shortfall, "params": prm,
            "selected": sum(v["selected"] for v in per_class.values()),
            "warnings": warnings}


# ----------------------------------------------------------------------------- columnar

#: the clip columns the selection reads
_CLIP_COLUMNS = ("clip_id", "source_id", "class_name", "split", "start", "end", "status", "error",
                 "sync_a2v", "sync_v2a", "imagebind_ia")
_FAST_SOURCE = re.compile(r"[A-Za-z0-9_-]{1,128}_[0-9]{6}_[0-9]{6}")
_FAST_CLASS = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: clips whose fast name is compared with the grammar's own functions before it is trusted
_NAME_CHECKS = 32


def _rank_scores(clips: Any) -> list[float | None]:
    """``rank_score`` of every clip, in numpy (the same float operations, so the same values)."""
    import numpy as np
    import pyarrow.compute as pc

    a2v, v2a, ia = (pc.fill_null(pc.cast(clips.column(c), "float64"), float("nan"))
                    .to_numpy(zero_copy_only=False) for c in ("sync_a2v", "sync_v2a", "imagebind_ia"))
    rs = (a2v + v2a) / 2.0 + ia
    missing = np.isnan(a2v) | np.isnan(v2a) | np.isnan(ia)
    return [None if m else v for m, v in zip(missing.tolist(), rs.tolist())]


def _slow_name(clip: Mapping[str, Any]) -> tuple[str, float, float, str]:
    name, cs, ce = clip_name(clip)
    return name, cs, ce, key_from_name(name)


def _fast_name(cls: Any, sid: Any, start: Any, end: Any) -> tuple[str, float, float, str] | None:
    """Name and key without parsing them back, for the plain case (safe class, VGGSound-style
    source id, non-negative times); None -> use the grammar's functions."""
    from manifests.names import format_clip_time

    if (cls is None or sid is None or start is None or end is None or not 0 <= start < 1e6
            or not 0 <= end < 1e6 or not _FAST_CLASS.fullmatch(cls) or not _FAST_SOURCE.fullmatch(sid)):
        return None
    cs, ce = round(float(start), NAME_DECIMALS), round(float(end), NAME_DECIMALS)
    ts, te = format_clip_time(cs), format_clip_time(ce)
    return (f"{cls}/{sid}_{ts}_{te}", cs, ce,
            f"{cls}-{sid}_{ts.replace('.', 'p')}_{te.replace('.', 'p')}")


def _slow(cols: dict[str, list], i: int) -> tuple[str, float, float, str]:
    return _slow_name({k: cols[k][i] for k in ("class_name", "source_id", "start", "end")})


_slow_marker = object()


def _namer(cols: dict[str, list]) -> Any:
    """``_slow_marker`` when the fast form disagrees with the grammar's own functions on the
    first plain clips (a changed grammar then names every clip through them), else True."""
    checked = 0
    for i in range(len(cols["clip_id"])):
        fast = _fast_name(cols["class_name"][i], cols["source_id"][i], cols["start"][i], cols["end"][i])
        if fast is None:
            continue
        try:
            ref = _slow(cols, i)
        except ValueError:
            ref = None
        if ref != fast:
            log.warning("select: fast clip naming disagrees with manifests.names (%r vs %r); "
                        "naming every clip with the grammar's functions", fast, ref)
            return _slow_marker
        checked += 1
        if checked >= _NAME_CHECKS:
            break
    return True


def _certificate_columns(clips: Any) -> dict[str, list]:
    """The filters' certificate columns of each clip (the sync classifier's clip offset),
    carried to the selected rows."""
    return {c: clips.column(c).to_pylist() for c in schemas.CERT_CLIP_COLUMNS if c in clips.column_names}


def select_clips_table(clips: Any, recipe_params: Mapping[str, Any], seed: int | None = None,
                       decisions: Mapping[str, str] | None = None,
                       classes: Sequence[str] | None = None) -> tuple[Any, dict[str, Any]]:
    """CLIPS Arrow table -> (SELECTED Arrow table with a row for every clip, summary).

    ``decisions``: manual review {name: "keep"|"reject"}. ``classes``: the recipe's class
    list, so a class without any candidate appears in the shortfall too. ``seed`` overrides
    ``select.seed``. See the module docstring for the parameters and rules. Clips are columns
    (lists of their ids and times), and only the rows that end up selected become dicts for
    the train/test split. (Its row-dict oracle: ``tests/selection/oracle.py``.)
    """
    import pyarrow as pa
    from manifests.schemas import SELECTED

    prm, decisions = _params(recipe_params, seed), dict(decisions or {})
    cols = {c: clips.column(c).to_pylist() for c in _CLIP_COLUMNS[:8]}
    n = clips.num_rows
    out = {"key": [None] * n, "name": [None] * n, "clip_id": cols["clip_id"],
           "source_id": cols["source_id"], "class_name": cols["class_name"], "split": list(cols["split"]),
           "start": list(cols["start"]), "end": list(cols["end"]), "rank_score": _rank_scores(clips),
           "status": [STATUS_OK] * n, "error": [None] * n, **_certificate_columns(clips)}
    _name_rows(cols, out)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, st in enumerate(out["status"]):
        if st == STATUS_OK:
            by_class[out["class_name"][i]].append(i)
    n_candidates = {c: len(v) for c, v in by_class.items()}
    for idx in by_class.values():
        _pick_class_cols(idx, out, prm, decisions)
    n_review_rejected = {c: sum(out["status"][i] == STATUS_REJECTED for i in v) for c, v in by_class.items()}
    ok_idx = {c: [i for i in v if out["status"][i] == STATUS_OK] for c, v in by_class.items()}
    for c in classes or ():
        ok_idx.setdefault(c, [])
    # the selected clips (thousands) become rows for the split rules
    ok = {c: [{"i": i, **{k: out[k][i] for k in ("source_id", "start", "name", "split", "status", "error")}}
              for i in v] for c, v in ok_idx.items()}
    warnings: list[str] = []
    n_test = _n_test({c: len(v) for c, v in ok.items()}, prm, warnings)
    if n_test is not None:
        for c, rs in ok.items():
            _assign_test(rs, n_test[c], prm["seed"])
    for rs in ok.values():
        for r in rs:
            for k in ("split", "status", "error"):
                out[k][r["i"]] = r[k]
    summary = _summary(ok, n_candidates, n_review_rejected, prm, warnings)
    for w in summary["warnings"]:
        log.warning("select: %s", w)
    # cut_start / cut_end / av_offset_ms: filled by the shard stage when the clip is cut
    return pa.table({k: out.get(k, [None] * n) for k in SELECTED.names}, schema=SELECTED), summary


def _time_texts(values: list) -> tuple[list, list]:
    """(rounded time, its text) per value, formatted once per distinct value (clip times sit
    on a grid: a handful of distinct values for tens of thousands of clips)."""
    from manifests.names import format_clip_time

    memo: dict = {}
    rounded, texts = [], []
    for v in values:
        if v not in memo:
            ok = v is not None and 0 <= v < 1e6
            r = round(float(v), NAME_DECIMALS) if ok else None
            memo[v] = (r, format_clip_time(r) if ok else None)
        r, t = memo[v]
        rounded.append(r)
        texts.append(t)
    return rounded, texts


def _fast_mask(cols: dict[str, list], starts: list, ends: list) -> list[bool]:
    import pyarrow as pa
    import pyarrow.compute as pc

    def match(values: list, pattern: re.Pattern) -> list[bool]:
        arr = pa.array(values, type=pa.string())
        return pc.fill_null(pc.match_substring_regex(arr, "^" + pattern.pattern + "$"), False).to_pylist()
    cls_ok, sid_ok = match(cols["class_name"], _FAST_CLASS), match(cols["source_id"], _FAST_SOURCE)
    return [a and b and s is not None and e is not None
            for a, b, s, e in zip(cls_ok, sid_ok, starts, ends)]


def _name_rows(cols: dict[str, list], out: dict[str, list]) -> None:
    """Every clip named, on columns: names, keys, rounded times, upstream and naming
    failures, duplicate names. Plain clips are named with string joins (times formatted once per
    distinct value); the rest, and every clip if the fast form disagrees with the grammar on
    the first clips, through ``clip_name`` / ``key_from_name``."""
    namer = _namer(cols)
    status, error, names = out["status"], out["error"], out["name"]
    fast_ok = namer is not _slow_marker
    if fast_ok:
        cs, ts = _time_texts(cols["start"])
        ce, te = _time_texts(cols["end"])
        fast = _fast_mask(cols, ts, te)
    seen: set = set()
    for i in range(len(names)):
        st = cols["status"][i]
        if st not in (None, STATUS_OK):
            status[i], error[i] = st, f"clip not ok: {cols['error'][i]}"
        if fast_ok and fast[i]:
            cls, sid = cols["class_name"][i], cols["source_id"][i]
            names[i], out["start"][i], out["end"][i] = f"{cls}/{sid}_{ts[i]}_{te[i]}", cs[i], ce[i]
            out["key"][i] = f"{cls}-{sid}_{ts[i].replace('.', 'p')}_{te[i].replace('.', 'p')}"
        else:
            try:
                names[i], out["start"][i], out["end"][i], out["key"][i] = _slow(cols, i)
            except ValueError as e:
                _partial_name(cols, out, i)
                if status[i] == STATUS_OK:
                    status[i], error[i] = STATUS_FAILED, f"select: cannot name clip: {e}"
        if names[i] is not None and names[i] in seen and status[i] == STATUS_OK:
            status[i], error[i] = STATUS_REJECTED, "select: duplicate name (after rounding)"
        seen.add(names[i])


def _partial_name(cols: dict[str, list], out: dict[str, list], i: int) -> None:
    """A clip named but whose key failed keeps the name and rounded times (as the row oracle does)."""
    try:
        out["name"][i], out["start"][i], out["end"][i] = clip_name(
            {k: cols[k][i] for k in ("class_name", "source_id", "start", "end")})
    except ValueError:
        pass


def _pick_class_cols(idx: list[int], out: dict[str, list], prm: dict[str, Any],
                     decisions: Mapping[str, str]) -> None:
    """The ranked pick of one class on column indices (its ok clips, in table order)."""
    per_class, cap, seed = prm["per_class"], prm["max_per_source"], prm["seed"]
    names, rs_, ids = out["name"], out["rank_score"], out["clip_id"]

    def k(i: int) -> tuple:
        rs = rs_[i]
        return (decisions.get(names[i]) != "keep", rs is None, -(rs or 0.0))
    # the ranking key without its seeded tie-break, which (a SHA-256 per clip) is computed
    # only inside runs of equal keys: the same order, stable sorts both
    ranked = sorted(idx, key=k)
    keys = [k(i) for i in ranked]
    order: list[int] = []
    a = 0
    while a < len(ranked):
        b = a + 1
        while b < len(ranked) and keys[b] == keys[a]:
            b += 1
        run = ranked[a:b]
        order += run if len(run) == 1 else sorted(run, key=lambda i: _seeded(seed, ids[i] or names[i]))
        a = b
    n_sel, per_source = 0, defaultdict(int)
    for rank, i in enumerate(order, start=1):
        if decisions.get(names[i]) == "reject":
            out["status"][i], out["error"][i] = STATUS_REJECTED, "review: rejected by reviewer"
        elif per_class is not None and n_sel >= per_class:
            out["status"][i], out["error"][i] = STATUS_SKIPPED, f"select: rank {rank} beyond per_class {per_class}"
        elif cap is not None and per_source[out["source_id"][i]] >= cap:
            out["status"][i], out["error"][i] = (STATUS_SKIPPED,
                                                 f"select: max_per_source {cap} reached for {out['source_id'][i]}")
        else:
            n_sel += 1
            per_source[out["source_id"][i]] += 1
