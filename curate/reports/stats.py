"""`curate stats`: the funnel, per-class counts, failures by reason, from the manifests alone.

Columnar: every table is read as Arrow (only the columns a figure needs) and counted with
pyarrow.compute / numpy, so a 1.1M-window run never becomes Python dicts. Only the selected
clips' resolutions look at rows.

Besides the figures it says whether the run is unfinished (a stage without its manifest,
items a stage has not reached yet) and, for a run over a synthetic corpus (``curate synth``
writes ``truth.json`` beside the videos), how many windows of each truth kind each filter kept.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests import schemas
from manifests.names import ytid_of
from manifests.schemas import has_manifest
from curate.reports.reasons import reason_category

OK = schemas.STATUS_OK
log = logging.getLogger(__name__)

#: manifests each stage writes (the last one written is the one that says the stage ran)
STAGE_TABLES = {"sources": ("sources",), "download": ("downloads",), "split": ("shots", "windows"),
                "select": ("clips", "selected"), "shard": ("shards",)}


# ----------------------------------------------------------------------------- reasons


#: where a source row's message starts: ``file.csv:12: `` or ``file.parquet:row 3: ``
_WHERE = re.compile(r"^[^:]*:(?:row )?\d+: ")


def source_reasons(error: str | None) -> list[str]:
    """The reason categories of a rejected source row: its message without the file:line it
    names, each ``; ``-separated reason on its own (``"s.csv:5: unsafe id 'x'; empty label"``
    -> ``["unsafe id '…'", "empty label"]``)."""
    if not error or error == "None":
        return ["unknown"]
    body = _WHERE.sub("", str(error), count=1)
    return list(dict.fromkeys(reason_category(r) for r in body.split("; ") if r.strip())) or ["unknown"]


def _reason_key(stage: str, reason: str | None, error: str | None) -> str:
    """``stage: category``; a table's own ``reason`` column wins over the error text."""
    if reason and reason not in ("ok", "cached", "error"):
        return f"{stage}: {reason}"
    return f"{stage}: {reason_category(error)}"


def _count_reasons(counter: Counter, stage: str, tbl: pa.Table, mask: np.ndarray) -> None:
    """Add rows under ``mask`` to ``counter`` by reason; distinct (reason, error) pairs only are
    formatted in Python (a million identical errors cost one call)."""
    if not mask.any():
        return
    from manifests.columns import undictionary

    keys = ["error"] + (["reason"] if "reason" in tbl.column_names else [])
    sub = undictionary(tbl.select(keys).filter(pa.array(mask)))
    keys = ["error"] + (["reason"] if "reason" in sub.column_names else [])
    grouped = sub.select(keys).group_by(keys, use_threads=False).aggregate([([], "count_all")])
    for row in grouped.to_pylist():
        counter[_reason_key(stage, row.get("reason"), row["error"])] += row["count_all"]


# ----------------------------------------------------------------------------- reading

def _table(out: Path, name: str, columns: Sequence[str], dictionary: Sequence[str] = ()) -> pa.Table | None:
    """Only ``columns`` of a manifest (cast to the declared types; ``dictionary`` columns
    dictionary-encoded), or None when absent."""
    if not has_manifest(out, name):
        return None
    from manifests.columns import read_columns
    return read_columns(out, name, columns, dictionary=dictionary)


def _eq(col: Any, value: str) -> np.ndarray:
    if len(col) == 0:
        return np.zeros(0, dtype=bool)
    return pc.fill_null(pc.equal(col, value), False).to_numpy(zero_copy_only=False)


def _counts(values: Any) -> dict[str, int]:
    """{str(value): count} in first-appearance order (None -> "None", as the row code gave)."""
    if len(values) == 0:
        return {}
    vc = pc.value_counts(values)
    return {str(v): int(n) for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())}


def _seq_sum(values: np.ndarray) -> float:
    """Left-to-right sum (the row code's ``sum``), so figures match to the last digit."""
    return float(np.cumsum(values)[-1]) if len(values) else 0.0


def _arr(col: Any) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _in(ids: Any, value_set: Any) -> np.ndarray:
    """Mask of ``ids`` found in ``value_set`` (null ids are not found)."""
    if len(ids) == 0:
        return np.zeros(0, dtype=bool)
    return pc.fill_null(pc.is_in(ids, value_set=_arr(value_set)), False).to_numpy(zero_copy_only=False)


# ----------------------------------------------------------------------------- collect

class _Stats:
    def __init__(self, out: Path, run: dict) -> None:
        self.out, self.run = out, run
        self.truth: dict | None = None
        self.unit = "sources"
        self.st: dict[str, Any] = {
            "out": str(out), "recipe": run.get("recipe", {}).get("name"), "finished": True,
            "unfinished": [], "funnel": [], "per_class": defaultdict(lambda: defaultdict(int)),
            "failures": Counter(), "rejected": Counter(), "skipped": Counter(), "warnings": [],
            "resolutions": defaultdict(Counter)}
        if run.get("sync_convention"):   # recorded by the score stage (issue 15)
            self.st["sync_convention"] = run["sync_convention"]
        licences = run_licences(run)
        if licences:
            self.st["licences"] = licences

    def stage(self, name: str, n: int) -> None:
        # percentages are relative to the first stage of the same unit (sources, windows, clips)
        self.st["funnel"].append({"stage": name, "count": int(n), "unit": self.unit})

    def add_class_counts(self, key: str, classes: Any) -> None:
        for c, n in _counts(classes).items():
            self.st["per_class"][c][key] += n

    def pending(self, msg: str) -> None:
        self.st["unfinished"].append(msg)


def run_licences(run: dict) -> Any:
    """The licences the run's scores depend on: run.json ``licences`` where recorded, else
    the ``licence`` of each recorded weight file (``weights``: filter -> file record)."""
    if run.get("licences"):
        return run["licences"]
    weights = run.get("weights")
    if isinstance(weights, dict):
        return {f: w["licence"] for f, w in weights.items() if isinstance(w, dict) and w.get("licence")}
    return None


def collect(out: str | Path) -> dict[str, Any]:
    """Every figure `curate stats` shows, as a JSON-able dict."""
    out = Path(out)
    if not (out / "manifests").is_dir():
        raise FileNotFoundError(f"no curation run at {out} (no manifests/ folder)")
    from curate.config.run_state import load_run
    run = load_run(out) if (out / "run.json").exists() else {}    # bounded; a bad one is named
    s = _Stats(out, run)
    sources = _sources(s)
    downloads = _downloads(s, sources)
    _shots(s, downloads)
    _windows(s)
    _clips(s)
    _selected(s, downloads)
    _missing_stages(s)
    st = s.st
    st["finished"] = not st["unfinished"]
    st["hours"] = st.get("hours_selected", st.get("hours_downloaded"))
    pc_ = st["per_class"]
    st["per_class"] = {str(k): dict(v) for k, v in sorted(pc_.items(), key=lambda kv: str(kv[0]))}
    for key in ("failures", "rejected", "skipped"):
        st[key] = dict(st[key].most_common())
    st["resolutions"] = {k: dict(v) for k, v in st["resolutions"].items()}
    from curate.ops.health import read_state
    st["download_health"] = read_state(out)     # the last download run's health control
    if has_manifest(out, "ledger"):
        from curate.reports.ledger import summary
        st["availability"] = summary(_table(out, "ledger", ["availability", "current"]).to_pylist())
    return st


def _sources(s: _Stats) -> pa.Table | None:
    src = _table(s.out, "sources", ["source_id", "class_name", "status", "error"], dictionary=["status", "error"])
    if src is None:
        return None
    s.stage("sources", src.num_rows)
    status = src.column("status")
    ok, skipped = _eq(status, OK), _eq(status, schemas.STATUS_SKIPPED)
    for err, n in _counts(pc.filter(src.column("error"), pa.array(skipped))).items():
        s.st["skipped"][(err if err != "None" else "skipped")[:60]] += n
    bad = ~ok & ~skipped
    for st_name in pc.unique(pc.filter(status, pa.array(bad))).to_pylist():
        mask = bad & _eq(status, str(st_name))
        for err, n in _counts(pc.filter(src.column("error"), pa.array(mask))).items():
            for why in source_reasons(err):
                s.st["failures"][f"sources {st_name}: {why}"] += n
    s.add_class_counts("sources", pc.filter(src.column("class_name"), pa.array(ok)))
    s.stage("sources accepted", int(ok.sum()))
    return src


def _downloads(s: _Stats, sources: pa.Table | None) -> pa.Table | None:
    dl = _table(s.out, "downloads", ["source_id", "status", "reason", "error", "duration", "width", "height"],
                dictionary=["status", "reason", "error"])
    if dl is None:
        return None
    ok = _eq(dl.column("status"), OK)
    s.stage("downloaded", int(ok.sum()))
    _count_reasons(s.st["failures"], "download", dl, ~ok)
    okd = dl.filter(pa.array(ok))
    if sources is not None:
        # the class of any source row (as the row code's lookup did), ok or not
        pos = pc.index_in(okd.column("source_id"), value_set=_arr(sources.column("source_id")))
        s.add_class_counts("downloaded", _arr(sources.column("class_name")).take(pos))
        ok_src = sources.column("source_id").filter(pa.array(_eq(sources.column("status"), OK)))
        missing = int((~_in(ok_src, dl.column("source_id"))).sum())
        if missing:
            s.pending(f"download: {missing} accepted sources have no downloads row yet")
    else:
        s.add_class_counts("downloaded", pa.nulls(okd.num_rows, pa.string()))
    dur = pc.fill_null(okd.column("duration"), 0.0).to_numpy(zero_copy_only=False)
    s.st["hours_downloaded"] = _seq_sum(dur) / 3600
    return okd


def _shots(s: _Stats, ok_downloads: pa.Table | None) -> None:
    shots = _table(s.out, "shots", ["source_id", "status", "error"], dictionary=["status", "error"])
    if shots is None:
        return
    s.unit = "shots"
    ok = _eq(shots.column("status"), OK)
    s.stage("shots", int(ok.sum()))
    _by_status(s, "split", shots)      # a shot too short for a window is skipped, not failed
    if ok_downloads is not None:
        missing = int((~_in(ok_downloads.column("source_id"), shots.column("source_id"))).sum())
        if missing:
            s.pending(f"split: {missing} downloaded sources have no shots row yet")


def _window_columns(with_source: bool) -> list[str]:
    """What the window figures read (the source id only for a truth table)."""
    return [*(["source_id"] if with_source else []), "class_name", "status", "error",
            *schemas.ALL_SCORES, *schemas.NOTE_COLUMNS]


def _windows(s: _Stats) -> None:
    s.truth = find_truth(s.out, s.run) if s.run else None
    win = _table(s.out, "windows", _window_columns(s.truth is not None),
                 dictionary=["source_id", "class_name", "status", "error", *schemas.NOTE_COLUMNS])
    if win is None:
        return
    s.unit = "windows"
    s.stage("windows", win.num_rows)
    s.add_class_counts("windows", win.column("class_name"))
    ok = _eq(win.column("status"), OK)
    _count_reasons(s.st["failures"], "score", win, ~ok)
    unscored = _unscored(win, ok, s.run.get("recipe", {}).get("filters", schemas.FILTERS))
    if unscored:
        s.pending(f"score: {unscored} of {win.num_rows} windows are not scored yet")
    _window_funnel(s, win)
    _score_summaries(s, win)


def _score_summaries(s: _Stats, win: pa.Table) -> None:
    """A histogram of every score column, and per class the share of windows with speech."""
    from curate.reports.score_summary import histograms, speech_by_class

    s.st["scores"] = histograms(win, schemas.ALL_SCORES)
    limit = None
    if s.run:
        from curate.config.run import resolve
        limit = resolve(s.run).threshold_dict().get("speech", {}).get("max")
    speech = speech_by_class(win, limit)
    if speech is not None:
        s.st["speech_by_class"] = speech


def _unscored(win: pa.Table, ok: np.ndarray, filters: Iterable[str]) -> int:
    """ok windows with a filter that has neither a score nor a note (never reached by scoring)."""
    todo = np.zeros(win.num_rows, dtype=bool)
    for f in filters:
        if f not in schemas.SCORE_COLUMNS:
            continue
        none = pc.is_null(win.column(f"{f}_note")).to_numpy(zero_copy_only=False)
        for c in schemas.SCORE_COLUMNS[f]:
            none &= pc.is_null(win.column(c)).to_numpy(zero_copy_only=False)
        todo |= none
    return int((todo & ok).sum())


def _window_funnel(s: _Stats, win: pa.Table) -> None:
    run, st = s.run, s.st
    if not run or not any(win.column(c).null_count < win.num_rows for c in schemas.ALL_SCORES):
        return
    from curate.selection.rules import WindowMasks, decide_masks, funnel_masks
    from curate.config.run import resolve

    r = resolve(run)
    th, gate, score_only, order = r.threshold_dict(), list(r.gate), dict(r.score_only), r.order
    masks = WindowMasks(win, th)
    fun = funnel_masks(masks, th, set(gate), order)
    for step in fun["funnel"][1:]:
        s.stage(f"after {step['filter']}", step["remaining"])
    s.stage("windows kept", fun["kept"])
    if fun["needs_scoring"]:
        st["warnings"].append(f"{fun['needs_scoring']} windows admitted by the current thresholds "
                              "were never scored: run `curate score`")
    for f, why in score_only.items():
        st["warnings"].append(f"filter '{f}' is score-only: {why}")
    if run.get("options", {}).get("allow_random_weights"):
        st["warnings"].append("--allow-random-weights was used: model scores of random models "
                              "are stored but do not gate; this is for demos and tests only")
    truth = s.truth
    if truth is not None:
        keep, _ = decide_masks(masks, set(gate), order)
        st["truth"] = truth_table(win.column("source_id"), masks, keep, truth,
                                  [f for f in schemas.FILTERS if f in run["recipe"].get("filters", schemas.FILTERS)])
        st["truth"]["file"] = str(truth["path"])


def _clips(s: _Stats) -> None:
    clips = _table(s.out, "clips", ["class_name", "status", "error"])
    if clips is None:
        return
    s.unit = "clips"
    ok = _eq(clips.column("status"), OK)
    s.stage("merged clips", int(ok.sum()))
    s.add_class_counts("clips", pc.filter(clips.column("class_name"), pa.array(ok)))
    _by_status(s, "merge", clips)
    _certificates(s)


#: the certificate histograms of the merged clips: column -> (title, bin width); Synchformer's
#: (certify stage) and the sync classifier's own clip offset (``filters.sync``, 0.04-s steps)
CERT_HISTOGRAMS = {"desync_s": ("DeSync (s)", 0.1), "sf_offset_first": ("Synchformer offset, first 4.8 s", 0.1),
                   "sf_offset_last": ("Synchformer offset, last 4.8 s", 0.1),
                   "sync_offset_s": ("sync classifier offset (clip mode)", 0.04)}


def _certificates(s: _Stats) -> None:
    """The sync certificates of the ok merged clips: how many Synchformer certified (mean
    DeSync), how many carry the sync classifier's offset (mean agreement of their windows),
    and a histogram (clips per value) of each ``CERT_HISTOGRAMS`` column present."""
    have = set(schemas.CLIPS.names)
    cols = [c for c in CERT_HISTOGRAMS if c in have]
    clips = _table(s.out, "clips", [*cols, "status", *(["sync_offset_agree"] if "sync_offset_agree" in have else [])])
    if clips is None:
        return
    clips = clips.filter(pa.array(_eq(clips.column("status"), OK)))
    hist = {}
    for c in cols:
        v = pc.drop_null(pc.cast(clips.column(c), pa.float64())).to_numpy(zero_copy_only=False)
        v = v[~np.isnan(v)]
        if len(v):
            step = CERT_HISTOGRAMS[c][1]
            fmt = "{:.1f}" if c == "desync_s" else ("{:+.1f}" if step >= 0.1 else "{:+.2f}")
            hist[c] = {fmt.format(k): int(n) for k, n in sorted(Counter(np.round(np.round(v / step) * step, 2).tolist()).items())}
    if not hist:
        return
    cert: dict[str, Any] = {"histograms": hist, "titles": {c: CERT_HISTOGRAMS[c][0] for c in hist}}
    if "desync_s" in hist:
        d = pc.drop_null(clips.column("desync_s")).to_numpy(zero_copy_only=False)
        cert.update(certified=int(len(d)), desync_mean=float(np.mean(d)))
    if "sync_offset_s" in hist:
        a = pc.drop_null(clips.column("sync_offset_agree")).to_numpy(zero_copy_only=False)
        cert.update(with_offset=int(len(a)), agree_mean=float(np.mean(a)) if len(a) else None)
    s.st["certificates"] = cert


def _by_status(s: _Stats, stage: str, tbl: pa.Table) -> None:
    """failed -> failures, rejected -> rejected, skipped -> skipped; each by reason."""
    for status, key in ((schemas.STATUS_FAILED, "failures"), (schemas.STATUS_REJECTED, "rejected"),
                        (schemas.STATUS_SKIPPED, "skipped")):
        _count_reasons(s.st[key], stage, tbl, _eq(tbl.column("status"), status))


def _selected(s: _Stats, ok_downloads: pa.Table | None) -> None:
    sel_t = _table(s.out, "selected", ["key", "source_id", "class_name", "split", "start", "end",
                                       "status", "error"])
    if sel_t is None:
        return
    ok = _eq(sel_t.column("status"), OK)
    _by_status(s, "select", sel_t)
    sel_t = sel_t.filter(pa.array(ok))
    s.stage("selected", sel_t.num_rows)
    res: dict[str, str] = {}
    if ok_downloads is not None and sel_t.num_rows:
        d = ok_downloads.filter(pa.array(_in(ok_downloads.column("source_id"), sel_t.column("source_id"))))
        res = {r["source_id"]: f"{r['width']}x{r['height']}" for r in d.to_pylist() if r["width"]}
    sel = sel_t.select(["key", "source_id", "class_name", "split", "start", "end"]).to_pylist()
    for r in sel:          # selected clips only: thousands of rows
        s.st["per_class"][r["class_name"]][f"selected_{r['split']}"] += 1
        s.st["resolutions"][r["class_name"]][res.get(r["source_id"], "unknown")] += 1
    s.st["hours_selected"] = _seq_sum(np.array([r["end"] - r["start"] for r in sel], dtype=np.float64)) / 3600
    shards = _table(s.out, "shards", ["key", "shard"])
    if shards is not None:
        s.stage("sharded", shards.num_rows)
        s.st["shard_files"] = len(pc.unique(shards.column("shard")))
        missing = int((~_in(sel_t.column("key"), shards.column("key"))).sum())
        if missing:
            s.pending(f"shard: {missing} selected clips are in no shard yet")
    _repairs(s)


def repair_outcome(status: str | None, repaired: bool | None, note: str, error: str | None = None) -> str:
    """One selected clip's repair in a few words (the note without its figures)."""
    if status == OK and repaired:
        return "repaired (rescore found offset 0)"
    if status == schemas.STATUS_REJECTED and (error or "").startswith("repair: the rescore"):
        return "rejected: the rescore of the repaired clip is not offset 0"
    if status == schemas.STATUS_REJECTED and (error or "").startswith("repair:"):
        return "rejected: " + error[len("repair: "):].split(" (")[0]
    from curate.selection.rules import desync_gated
    out_of_sync = status == schemas.STATUS_REJECTED and (error or "").startswith("sync:")
    if note.startswith("repair refused"):
        why = "refused: the shifted audio would run past the source"
    else:
        why = "not repaired: " + note.split(" (")[0].split(":")[0]
    if out_of_sync:
        return f"rejected (out of sync), {why}"
    return f"rejected (desync above max), {why}" if desync_gated(status, error) else why


def _repairs(s: _Stats) -> None:
    """With repair on (recipe ``repair``): how many selected clips shipped repaired, were
    refused, rejected by their rescore, or not repaired and why; nothing with repair off."""
    t = _table(s.out, "selected", ["status", "error", "repaired", "repair_note"])
    if t is None:
        return
    rows = [r for r in t.to_pylist() if r["repair_note"] is not None]
    if rows:
        s.st["repairs"] = dict(Counter(repair_outcome(r["status"], r["repaired"], r["repair_note"],
                                                      r["error"]) for r in rows).most_common())


def _expected_stages(run: dict) -> list[str]:
    recipe = run.get("recipe") or {}
    if str(recipe.get("name", "")).endswith("-exact"):
        return ["sources", "download", "select", "shard"]
    stages = [st for st in recipe.get("stages", []) if st in STAGE_TABLES or st == "score"]
    if recipe.get("clip_mode") == "fixed":
        stages = [st for st in stages if st not in ("split", "score")]
    return stages


def _missing_stages(s: _Stats) -> None:
    """Stages of the recipe whose manifest is not there yet (listed first)."""
    missing = []
    for st in _expected_stages(s.run):
        tables = STAGE_TABLES.get(st, ())
        if st == "select" and str(s.run.get("recipe", {}).get("name", "")).endswith("-exact"):
            tables = ("selected",)
        absent = [t for t in tables if not has_manifest(s.out, t)]
        if absent:
            missing.append(f"{st}: not run yet (no {', '.join(absent)} manifest)")
    s.st["unfinished"][:0] = missing


# ----------------------------------------------------------------------------- synthetic truth

def find_truth(out: Path, run: dict) -> dict | None:
    """The ``truth.json`` of a synthetic corpus this run was built from, or None.

    Looked for where `curate build demo` puts it (``<out>/synth``), where the run's options
    name it (``truth``), and beside the videos of the sources (``curate synth`` writes
    ``videos/<id>.mp4`` next to ``truth.json``).
    """
    cands = [out / "synth" / "truth.json"]
    if run.get("options", {}).get("truth"):
        cands.insert(0, Path(run["options"]["truth"]))
    src = schemas.manifest_path(out, "sources")
    if src.exists():
        paths = pq.ParquetFile(src).read(columns=["path"]).column("path").drop_null()
        if len(paths):
            p = Path(paths[0].as_py())
            cands += [p.parent / "truth.json", p.parent.parent / "truth.json"]
    for c in cands:
        if c.is_file():
            try:
                data = json.loads(c.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and isinstance(data.get("videos"), list):
                return {"path": c, "kinds": {str(v.get("id")): v.get("kind") for v in data["videos"]}}
    return None


def truth_table(source_ids: Any, masks: Any, keep: np.ndarray, truth: dict,
                filters: Sequence[str]) -> dict[str, Any]:
    """Per truth kind: windows, windows each filter's scores pass (thresholds alone, whatever
    the cascade), and windows kept by the decision. Windows of sources outside the truth are
    counted under ``unknown``."""
    names: list[str] = []

    def code(sid: str | None) -> int:
        k = (truth["kinds"].get(ytid_of(sid)) if sid is not None else None) or "unknown"
        if k not in names:
            names.append(k)
        return names.index(k)
    kind = _codes(source_ids, code)
    order = sorted(range(len(names)), key=lambda i: names[i])
    remap = np.empty(len(names), dtype=np.int64)
    remap[order] = np.arange(len(names))
    kind, names = remap[kind] if len(kind) else kind, [names[i] for i in order]
    table: dict[str, dict[str, int]] = {}
    for i, name in enumerate(names):
        sel = kind == i
        if not sel.any():           # "unknown" registered for a null id that no row has
            continue
        row = {"windows": int(sel.sum())}
        for f in filters:
            row[f] = int((sel & masks.passes[f]).sum())
        row["kept"] = int((sel & keep).sum())
        table[name] = row
    return {"filters": list(filters), "kinds": table}


def _codes(col: Any, fn: Any) -> np.ndarray:
    """``fn(value) -> int`` for every row of a string column, called once per distinct value
    (per chunk dictionary), so a million windows of 100k segments cost 100k calls."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    parts = []
    for ch in chunks:
        if not pa.types.is_dictionary(ch.type):
            ch = pc.dictionary_encode(ch)
        codes = np.array([fn(v) for v in ch.dictionary.to_pylist()] + [fn(None)], dtype=np.int64)
        idx = pc.fill_null(ch.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        parts.append(codes[idx])        # -1 (a null id) picks fn(None), the last entry
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# ----------------------------------------------------------------------------- text

def format_text(st: dict[str, Any]) -> str:
    lines = [f"curation run: {st['out']} (recipe: {st.get('recipe')})"]
    if st.get("sync_convention"):
        lines.append(f"sync classifier convention: {st['sync_convention']}")
    if st.get("unfinished"):
        lines += ["", "run unfinished:"] + [f"  - {u}" for u in st["unfinished"]]
    lines += ["", "funnel:"]
    base: dict[str, int] = {}
    for f in st["funnel"]:
        first = base.setdefault(f["unit"], f["count"])
        pct = f"{100 * f['count'] / first:7.2f}% of {f['unit']}" if first else ""
        lines.append(f"  {f['stage']:<28}{f['count']:>9}  {pct}")
    for key in ("hours_downloaded", "hours_selected"):
        if key in st:
            lines.append(f"  {key.replace('_', ' '):<28}{st[key]:>9.3f}")
    if st.get("availability"):
        lines += ["", "sources by availability (ledger):"] + \
            [f"  {k:<50}{n:>7}" for k, n in st["availability"].items()]
    if st.get("download_health"):
        from curate.ops.health import format_state
        lines += ["", f"download health: {format_state(st['download_health'])}"]
    for key, title in (("failures", "failures by reason:"), ("rejected", "rejected by reason:"),
                       ("skipped", "skipped (not failures):")):
        if st.get(key):
            lines += ["", title] + [f"  {r:<50}{n:>7}" for r, n in st[key].items()]
    if st["per_class"]:
        cols = sorted({c for v in st["per_class"].values() for c in v})
        lines += ["", "per class:", "  " + f"{'class':<28}" + "".join(f"{c:>16}" for c in cols)]
        for k, v in st["per_class"].items():
            lines.append("  " + f"{k[:28]:<28}" + "".join(f"{v.get(c, 0):>16}" for c in cols))
    if st.get("certificates"):
        lines += format_certificates(st["certificates"])
    if st.get("repairs"):
        lines += ["", "repairs (selected clips, recipe repair on):"] + \
            [f"  {r:<60}{n:>7}" for r, n in st["repairs"].items()]
    if st.get("scores"):
        from curate.reports.score_summary import format_histograms
        lines += ["", "scores (windows):"] + format_histograms(st["scores"])
    if st.get("speech_by_class"):
        from curate.reports.score_summary import format_speech
        lines += ["", f"windows with speech (speech > {st['speech_by_class']['threshold']:g}), per class:"]
        lines += format_speech(st["speech_by_class"])
    if st.get("truth"):
        lines += ["", f"windows passing each filter, by truth kind ({st['truth'].get('file', 'truth')}):"]
        lines += format_truth(st["truth"])
    if st["warnings"]:
        lines += ["", "warnings:"] + [f"  ! {w}" for w in st["warnings"]]
    return "\n".join(lines)


def format_certificates(cert: dict[str, Any]) -> list[str]:
    """The sync-certificate block: counts, then each histogram (clips per value)."""
    head = []
    if cert.get("certified"):
        head.append(f"Synchformer {cert['certified']} clips, mean DeSync {cert['desync_mean']:.3f} s")
    if cert.get("with_offset"):
        head.append(f"sync classifier offset {cert['with_offset']} clips, mean window agreement "
                    f"{cert['agree_mean']:.2f}")
    out = ["", "sync certificates (merged clips): " + "; ".join(head)]
    titles = cert.get("titles") or {}
    for col, counts in cert["histograms"].items():
        out.append(f"  {titles.get(col, col):<38}" + "  ".join(f"{k}:{n}" for k, n in counts.items()))
    return out


def format_truth(truth: dict[str, Any]) -> list[str]:
    cols = ["windows", *truth["filters"], "kept"]
    width = {c: max(12, len(c) + 2) for c in cols}     # audio_quality: 13 characters
    out = ["  " + f"{'kind':<22}" + "".join(f"{c:>{width[c]}}" for c in cols)]
    for kind, row in truth["kinds"].items():
        out.append("  " + f"{kind[:22]:<22}" + "".join(f"{row.get(c, 0):>{width[c]}}" for c in cols))
    return out


def write_report(out: str | Path, html: str | Path, st: dict[str, Any] | None = None) -> Path:
    """The HTML report: the figures above, what was kept and rejected as pictures
    (``gallery``) and a histogram of every score with its thresholds."""
    from curate.reports.html import write_html

    out = Path(out)
    st = st if st is not None else collect(out)
    th: dict = {}
    score_only: list[str] = []
    if (out / "run.json").exists():
        from curate.config.models import gating
        from curate.config.run_state import load_run
        from curate.config.thresholds import run_thresholds
        run = load_run(out)
        th = run_thresholds(run)
        try:
            score_only = list(gating(run)[1]) if run.get("recipe", {}).get("filters") else []
        except ValueError as e:      # weights not recorded: every filter shown as gating
            log.warning("report: %s", e)
    from curate.reports.gallery import collect_gallery
    gallery = collect_gallery(out, th, score_only=score_only)   # before the scores: one peak
    windows = (_table(out, "windows", list(schemas.ALL_SCORES)) if has_manifest(out, "windows")
               else pa.table({c: pa.array([], pa.float64()) for c in schemas.ALL_SCORES}))
    return write_html(out, html, st, windows, th, gallery)
