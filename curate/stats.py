"""`curate stats`: the funnel, per-class counts, failures by reason, from the manifests alone."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from manifests import schemas
from manifests.schemas import has_manifest, read_rows

OK = schemas.STATUS_OK


def _rows(out: Path, table: str) -> list[dict] | None:
    return read_rows(out, table) if has_manifest(out, table) else None


def _reason(row: dict, stage: str) -> str:
    if row.get("reason") and row["reason"] not in ("ok", "cached"):
        return f"{stage}: {row['reason']}"
    err = (row.get("error") or "unknown").split(":")[0].split("(")[0].strip()
    return f"{stage}: {err[:60]}"


def collect(out: str | Path) -> dict[str, Any]:
    """Every figure `curate stats` shows, as a JSON-able dict."""
    out = Path(out)
    if not (out / "manifests").is_dir():
        raise FileNotFoundError(f"no curation run at {out} (no manifests/ folder)")
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    st: dict[str, Any] = {"out": str(out), "recipe": run.get("recipe", {}).get("name"),
                          "funnel": [], "per_class": defaultdict(lambda: defaultdict(int)),
                          "failures": Counter(), "skipped": Counter(), "warnings": [], "resolutions": defaultdict(Counter)}
    pc = st["per_class"]

    unit = ["sources"]

    def stage(name: str, n: int) -> None:
        # percentages are relative to the first stage of the same unit (sources, windows, clips)
        st["funnel"].append({"stage": name, "count": n, "unit": unit[0]})

    sources = _rows(out, "sources")
    if sources is not None:
        stage("sources", len(sources))
        for r in sources:
            if r["status"] == schemas.STATUS_SKIPPED:
                st["skipped"][(r.get("error") or "skipped")[:60]] += 1
            elif r["status"] != OK:
                st["failures"][_reason(r, "sources " + r["status"])] += 1
            else:
                pc[r["class_name"]]["sources"] += 1
        stage("sources accepted", sum(r["status"] == OK for r in sources))
    cls_of = {r["source_id"]: r["class_name"] for r in sources or []}
    downloads = _rows(out, "downloads")
    if downloads is not None:
        ok = [d for d in downloads if d["status"] == OK]
        stage("downloaded", len(ok))
        for d in downloads:
            if d["status"] != OK:
                st["failures"][_reason(d, "download")] += 1
        for d in ok:
            pc[cls_of.get(d["source_id"])]["downloaded"] += 1
        st["hours_downloaded"] = sum(d["duration"] or 0 for d in ok) / 3600
    shots = _rows(out, "shots")
    if shots is not None:
        unit[0] = "shots"
        stage("shots", sum(s["status"] == OK for s in shots))
        for s in shots:
            if s["status"] != OK:
                st["failures"][_reason(s, "split")] += 1
    windows = _rows(out, "windows")
    if windows is not None:
        unit[0] = "windows"
        stage("windows", len(windows))
        for w in windows:
            pc[w["class_name"]]["windows"] += 1
            if w["status"] != OK:
                st["failures"][_reason(w, "score")] += 1
        _window_funnel(out, run, windows, st, stage)
    clips = _rows(out, "clips")
    if clips is not None:
        unit[0] = "clips"
        stage("merged clips", sum(c["status"] == OK for c in clips))
        for c in clips:
            if c["status"] == OK:
                pc[c["class_name"]]["clips"] += 1
    selected = _rows(out, "selected")
    if selected is not None:
        sel = [s for s in selected if s["status"] == OK]
        stage("selected", len(sel))
        res = {d["source_id"]: f"{d['width']}x{d['height']}" for d in downloads or [] if d["width"]}
        for s in sel:
            pc[s["class_name"]][f"selected_{s['split']}"] += 1
            st["resolutions"][s["class_name"]][res.get(s["source_id"], "unknown")] += 1
        st["hours_selected"] = sum(s["end"] - s["start"] for s in sel) / 3600
    shards = _rows(out, "shards")
    if shards is not None:
        stage("sharded", len(shards))
        st["shard_files"] = len({s["shard"] for s in shards})
    st["hours"] = st.get("hours_selected", st.get("hours_downloaded"))
    st["per_class"] = {str(k): dict(v) for k, v in sorted(pc.items(), key=lambda kv: str(kv[0]))}
    st["failures"] = dict(st["failures"].most_common())
    st["skipped"] = dict(st["skipped"].most_common())
    st["resolutions"] = {k: dict(v) for k, v in st["resolutions"].items()}
    return st


def _window_funnel(out: Path, run: dict, windows: list[dict], st: dict, stage) -> None:
    if not run or not any(w.get(c) is not None for w in windows for c in schemas.ALL_SCORES):
        return
    from curate.pipeline import gating, thresholds
    from curate.select import funnel as window_funnel

    th = thresholds(run, run.get("selection_overrides"))
    gate, score_only = gating(run)
    fun = window_funnel(windows, th, gate=set(gate))
    for step in fun["funnel"][1:]:
        stage(f"after {step['filter']}", step["remaining"])
    stage("windows kept", fun["kept"])
    if fun["needs_scoring"]:
        st["warnings"].append(f"{fun['needs_scoring']} windows admitted by the current thresholds "
                              "were never scored: run `curate score`")
    for f, why in score_only.items():
        st["warnings"].append(f"filter '{f}' is score-only: {why}")
    if run.get("options", {}).get("allow_random_weights"):
        st["warnings"].append("--allow-random-weights was used: model scores of random models "
                              "are stored but do not gate; this is for demos and tests only")


def format_text(st: dict[str, Any]) -> str:
    lines = [f"curation run: {st['out']} (recipe: {st.get('recipe')})", "", "funnel:"]
    base: dict[str, int] = {}
    for f in st["funnel"]:
        first = base.setdefault(f["unit"], f["count"])
        pct = f"{100 * f['count'] / first:7.2f}% of {f['unit']}" if first else ""
        lines.append(f"  {f['stage']:<28}{f['count']:>9}  {pct}")
    for key in ("hours_downloaded", "hours_selected"):
        if key in st:
            lines.append(f"  {key.replace('_', ' '):<28}{st[key]:>9.3f}")
    if st["failures"]:
        lines += ["", "failures by reason:"]
        lines += [f"  {r:<50}{n:>7}" for r, n in st["failures"].items()]
    if st["skipped"]:
        lines += ["", "skipped (not failures):"]
        lines += [f"  {r:<50}{n:>7}" for r, n in st["skipped"].items()]
    if st["per_class"]:
        cols = sorted({c for v in st["per_class"].values() for c in v})
        lines += ["", "per class:", "  " + f"{'class':<28}" + "".join(f"{c:>16}" for c in cols)]
        for k, v in st["per_class"].items():
            lines.append("  " + f"{k[:28]:<28}" + "".join(f"{v.get(c, 0):>16}" for c in cols))
    if st["warnings"]:
        lines += ["", "warnings:"] + [f"  ! {w}" for w in st["warnings"]]
    return "\n".join(lines)


def write_report(out: str | Path, html: str | Path, st: dict[str, Any] | None = None) -> Path:
    """The HTML report: the figures above plus a histogram of every score with its thresholds."""
    from curate.report import write_html

    out = Path(out)
    st = st if st is not None else collect(out)
    windows = schemas.read_manifest(out, "windows") if has_manifest(out, "windows") else []
    th: dict = {}
    if (out / "run.json").exists():
        from curate.pipeline import load_run, thresholds
        run = load_run(out)
        th = thresholds(run, run.get("selection_overrides"))
    return write_html(out, html, st, windows, th)
