"""The ledger of sources: every source's final availability, kept across reruns, and the
comparisons built on it (`curate stats --against LIST`, `curate diff RUN_A RUN_B`).

``<out>/manifests/ledger.parquet`` (schema ``manifests.schemas.LEDGER``) has one row per
source ever seen by the run's download stage, with an availability code (``CODES``) derived
from the download row's reason and message. A rerun updates the rows of the sources it has;
a source no longer in the sources table keeps its row with ``current`` false, so two runs
(or one run over time) stay comparable. ``first`` is the first code ever recorded and
``changes`` how often the code changed (a source that came back after a throttle, or one
that disappeared).
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

from manifests import schemas
from manifests.names import short_text
from manifests.schemas import has_manifest, read_rows, write_manifest

#: availability codes, in the order reports list them
CODES = ("ok", "private", "removed", "unavailable_in_region", "age_restricted", "bot_check",
         "js_challenge", "throttled", "timeout", "http_error", "bad_media", "unavailable", "bad_input", "error",
         "not_tried")

_PRIVATE = re.compile(r"private video|this video is private|members[- ]only", re.I)
_REGION = re.compile(r"not available in your country|geo.?restrict|in your (?:country|region)"
                     r"|blocked it in your|unavailable in your", re.I)
_AGE = re.compile(r"confirm your age|age.?restrict|inappropriate for some users", re.I)
_REMOVED = re.compile(r"removed|no longer available|terminated|does not exist|copyright"
                      r"|video unavailable|HTTP Error (?:404|410)\b", re.I)
_BAD_MEDIA = {"no_video", "no_audio", "partial", "corrupt", "too_small"}


def availability(status: str | None, reason: str | None, error: str | None) -> str:
    """A downloads row -> its availability code."""
    if status == schemas.STATUS_OK:
        return "ok"
    text = error or ""
    if reason in ("bot_check", "js_challenge", "throttled", "timeout", "bad_input", "empty_response"):
        return reason
    if reason in _BAD_MEDIA:
        return "bad_media"
    if reason in ("unavailable", "http_error"):
        for code, rx in (("private", _PRIVATE), ("unavailable_in_region", _REGION),
                         ("age_restricted", _AGE), ("removed", _REMOVED)):
            if rx.search(text):
                return code
        return reason
    if reason is None and status is None:
        return "not_tried"
    return "error"


def update_ledger(out: str | Path) -> list[dict[str, Any]]:
    """Merge the current downloads into ``<out>/manifests/ledger.parquet`` (written only when
    it changed); returns the ledger rows."""
    old = {r["source_id"]: r for r in read_rows(out, "ledger")} if has_manifest(out, "ledger") else {}
    sources = read_rows(out, "sources") if has_manifest(out, "sources") else []
    downloads = {d["source_id"]: d for d in read_rows(out, "downloads")} \
        if has_manifest(out, "downloads") else {}
    rows: dict[str, dict[str, Any]] = {}
    for s in sources:
        if s["status"] != schemas.STATUS_OK or s["source_id"] in rows:
            continue
        d = downloads.get(s["source_id"])
        code = availability(d["status"], d["reason"], d["error"]) if d else "not_tried"
        prev = old.get(s["source_id"])
        if prev is not None and code == "not_tried":
            # not downloaded in this run (yet): the last known availability stands
            rows[s["source_id"]] = {**prev, "current": True}
            continue
        changes = (prev["changes"] or 0) + (prev["availability"] != code) if prev else 0
        rows[s["source_id"]] = {
            "source_id": s["source_id"], "ytid": s.get("ytid"), "url": s.get("url"),
            "availability": code, "reason": d["reason"] if d else None,
            "error": d["error"] if d else None, "first": prev["first"] if prev else code,
            "changes": changes, "current": True}
    for sid, prev in old.items():     # sources this run no longer lists: kept
        if sid not in rows:
            rows[sid] = {**prev, "current": False}
    out_rows = sorted(rows.values(), key=lambda r: r["source_id"])
    write_manifest(out, "ledger", out_rows)
    return out_rows


def read_ledger(out: str | Path) -> dict[str, dict[str, Any]]:
    """source_id -> ledger row (built from the downloads when the run predates the ledger)."""
    if not has_manifest(out, "ledger"):
        if not has_manifest(out, "downloads"):
            return {}
        return {r["source_id"]: r for r in update_ledger(out)}
    return {r["source_id"]: r for r in read_rows(out, "ledger")}


# ----------------------------------------------------------------------------- against

def _shard_members(out: str | Path) -> set[tuple[str, str]]:
    """(key, split) of every sample in the run's shards."""
    if not has_manifest(out, "shards"):
        return set()
    return {(r["key"], r["split"]) for r in read_rows(out, "shards")}


def against(out: str | Path, lists: Iterable[str | Path]) -> dict[str, Any]:
    """Which clips of published lists this run reproduced exactly (same name = same
    segment and clip times, status ok, in a shard of the same split), and why the others
    could not be had (the source's availability, else the clip's own failure)."""
    from curate.selection.exact_lists import _split_from, read_entries
    from shards.writer import key_from_name

    ledger = read_ledger(out)
    selected = read_rows(out, "selected") if has_manifest(out, "selected") else []
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in selected:
        if s["name"]:
            by_name.setdefault(s["name"], []).append(s)
    shard = _shard_members(out)
    lines: list[dict[str, Any]] = []
    for lst in lists:
        split = _split_from(lst, None)
        for e in read_entries(lst):
            sp = e.split or split
            row = {"list": str(lst), "name": e.name, "split": sp, "reproduced": False, "why": None,
                   "detail": None}
            if e.clip is None:
                row.update(why="bad_line", detail=e.error)
                lines.append(row)
                continue
            sel = _selected_as(by_name.get(e.clip.name, []), sp, key_from_name(e.clip.name), shard)
            if sel is not None and sel.get("_in_shard"):
                row["reproduced"] = True
            else:
                led = ledger.get(e.clip.source_id)
                if led is None:
                    row.update(why="not_in_run", detail="the run's sources do not list this segment")
                elif led["availability"] != "ok":
                    row.update(why=led["availability"], detail=led["error"])
                elif sel is None:
                    row.update(why="not_selected", detail="downloaded, not among the selected clips")
                else:
                    from curate.reports.reasons import reason_category
                    row.update(why=f"clip {sel['status']}", detail=sel["error"] or "not in a shard")
                    if sel["error"]:
                        row["why"] = f"clip: {reason_category(sel['error'])}"
            lines.append(row)
    missing = [r for r in lines if not r["reproduced"]]
    return {"lines": len(lines), "reproduced": len(lines) - len(missing),
            "missing": len(missing), "by_reason": dict(Counter(r["why"] for r in missing).most_common()),
            "missing_lines": missing, "lists": [str(x) for x in lists]}


def _selected_as(rows: list[dict[str, Any]], split: str | None, key: str,
                 shard: set[tuple[str, str]]) -> dict[str, Any] | None:
    """The run's selected row of a list entry: of the list's split when the list names one
    (``train.txt``, a ``split`` column), else of any split (a list of any other name), an ok
    one in a shard first; ``_in_shard`` says whether it is ok and in a shard of its split."""
    rows = [r for r in rows if split is None or r["split"] == split]
    marked = [{**r, "_in_shard": r["status"] == schemas.STATUS_OK and (key, r["split"]) in shard}
              for r in rows]
    marked.sort(key=lambda r: not r["_in_shard"])
    return marked[0] if marked else None


def format_against(rep: dict[str, Any], limit: int = 50) -> str:
    out = [f"against {', '.join(rep['lists'])}: {rep['lines']} lines, {rep['reproduced']} reproduced "
           f"exactly, {rep['missing']} could not be had"]
    for why, n in rep["by_reason"].items():
        out.append(f"  {why:<28}{n:>7}")
    if rep["missing_lines"]:
        out.append("missing:")
        for r in rep["missing_lines"][:limit]:
            detail = f" ({r['detail'][:100]})" if r.get("detail") else ""
            out.append(f"  {short_text(r['name'])} [{r['split']}]: {r['why']}{detail}")
        if len(rep["missing_lines"]) > limit:
            out.append(f"  ... {len(rep['missing_lines']) - limit} more (--json lists all)")
    return "\n".join(out)


# ----------------------------------------------------------------------------- diff

def _clips(out: str | Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(name, split) -> selected row, of the clips that made it into a shard."""
    if not has_manifest(out, "selected"):
        return {}
    shard = _shard_members(out)
    return {(s["name"], s["split"]): s for s in read_rows(out, "selected")
            if s["status"] == schemas.STATUS_OK and s["name"]
            and (not shard or (s["key"], s["split"]) in shard)}


def diff_runs(a: str | Path, b: str | Path) -> dict[str, Any]:
    """Sources whose availability differs between runs A and B, and clips in one run's
    output and not the other's, each grouped by reason (a clip missing from one run is
    explained by its source's availability there when that is not ok)."""
    for run in (a, b):
        if not (Path(run) / "manifests").is_dir():
            raise FileNotFoundError(f"no curation run at {run} (no manifests/ folder)")
    la, lb = read_ledger(a), read_ledger(b)
    sources: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sid in sorted(set(la) | set(lb)):
        ca = la[sid]["availability"] if sid in la else "absent"
        cb = lb[sid]["availability"] if sid in lb else "absent"
        if ca != cb:
            err = (lb.get(sid) or {}).get("error") if cb != "ok" else (la.get(sid) or {}).get("error")
            sources[f"{ca} -> {cb}"].append({"source_id": sid, "a": ca, "b": cb, "error": err})
    ka, kb = _clips(a), _clips(b)
    clips: dict[str, dict[str, list[dict[str, Any]]]] = {"only_a": defaultdict(list), "only_b": defaultdict(list)}
    for side, mine, other, other_ledger in (("only_a", ka, kb, lb), ("only_b", kb, ka, la)):
        for (name, split), s in sorted(mine.items()):
            if (name, split) in other:
                continue
            led = other_ledger.get(s["source_id"])
            why = ("source absent" if led is None else
                   f"source {led['availability']}" if led["availability"] != "ok" else "not selected")
            clips[side][why].append({"name": name, "split": split, "source_id": s["source_id"]})
    return {"a": str(a), "b": str(b),
            "sources": {k: v for k, v in sorted(sources.items())},
            "clips": {side: dict(sorted(v.items())) for side, v in clips.items()},
            "same": not sources and not any(clips[s] for s in clips)}


def format_diff(d: dict[str, Any], limit: int = 50) -> str:
    n_src = sum(len(v) for v in d["sources"].values())
    n_a = sum(len(v) for v in d["clips"]["only_a"].values())
    n_b = sum(len(v) for v in d["clips"]["only_b"].values())
    out = [f"A = {d['a']}", f"B = {d['b']}",
           f"{n_src} sources differ, {n_a} clips only in A, {n_b} clips only in B"]
    for change, rows in d["sources"].items():
        out.append(f"sources {change}: {len(rows)}")
        for r in rows[:limit]:
            out.append(f"  {r['source_id']}" + (f" ({r['error'][:100]})" if r.get("error") else ""))
    for side, title in (("only_a", "clips only in A"), ("only_b", "clips only in B")):
        for why, rows in d["clips"][side].items():
            out.append(f"{title}, {why}: {len(rows)}")
            for r in rows[:limit]:
                out.append(f"  {r['name']} [{r['split']}]")
    return "\n".join(out)


def summary(ledger_rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Availability code -> sources (current ones), for `curate stats`."""
    c = Counter(r["availability"] for r in ledger_rows if r.get("current", True))
    return {k: c[k] for k in CODES if c.get(k)}
