"""Self-contained HTML report of a curation run (one file, PNGs inlined as base64).

Sections: funnel, per-class counts, one histogram per score column with its thresholds as
vertical lines, resolution table (clips per class per resolution, like the Landscape paper's
table 1), hours of video, failures by reason, warnings, and any other stats key as JSON.
``stats`` comes from the stats module and is rendered as given; missing keys are skipped.
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from manifests.schemas import ALL_SCORES, SCORE_COLUMNS  # noqa: E402
from manifests.atomic import write_text

log = logging.getLogger(__name__)

KNOWN_KEYS = ("funnel", "per_class", "failures", "resolutions", "hours", "warnings", "unfinished",
              "finished", "rejected", "truth")
_CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;
margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}.warn{color:#a40}figure{display:inline-block;
margin:.5em}figcaption{font-size:90%}pre{background:#f6f6f6;padding:1em}"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _column_values(windows_rows: Any, col: str) -> "np.ndarray":
    """Non-null, finite values of one score column from row dicts or a pyarrow Table (read as
    numpy: a 1.1M-window table never becomes Python floats)."""
    if hasattr(windows_rows, "column_names"):
        if col not in windows_rows.column_names:
            return np.zeros(0, dtype=np.float64)
        import pyarrow.compute as pc
        arr = pc.drop_null(windows_rows.column(col)).to_numpy().astype(np.float64)
    else:
        arr = np.array([float(v) for v in (r.get(col) for r in windows_rows) if v is not None],
                       dtype=np.float64)
    return arr[np.isfinite(arr)]


def thresholds_for(col: str, thresholds: Mapping[str, Any] | None) -> dict[str, float]:
    """Threshold lines for a score column, from ``thresholds`` keyed by column or filter.

    Accepted shapes: ``{col: 0.3}``, ``{col: {"min": a, "max": b}}``, ``{filter: {"min": a}}``,
    ``{filter: {col: {...}}}`` and ``{filter: {"ia_min": a}}`` (keys naming the column's
    suffix, e.g. ``ia`` for ``imagebind_ia``).
    """
    if not thresholds:
        return {}
    if col in thresholds:
        return _numbers(thresholds[col], "threshold")
    for filt, cols in SCORE_COLUMNS.items():
        if col in cols and filt in thresholds:
            spec = thresholds[filt]
            if not isinstance(spec, Mapping):
                return _numbers(spec, "threshold")
            if col in spec:
                return _numbers(spec[col], "threshold")
            if len(cols) == 1:
                return _numbers(spec, "threshold")
            return _pick_suffix(col, filt, cols, _numbers(spec, "threshold"))
    return {}


def _pick_suffix(col: str, filt: str, cols: tuple[str, ...],
                 spec: dict[str, float]) -> dict[str, float]:
    """Keys naming this column's suffix (``ia_min`` for imagebind_ia), plus keys naming no
    column of the filter (a plain ``min`` applies to every column of the filter)."""
    suffixes = {c[len(filt) + 1:] for c in cols if c.startswith(filt + "_")}
    mine = col[len(filt) + 1:]
    return {k: v for k, v in spec.items()
            if mine in k.split("_") or not suffixes & set(k.split("_"))}


def _numbers(spec: Any, label: str) -> dict[str, float]:
    if isinstance(spec, bool):
        return {}
    if isinstance(spec, (int, float)):
        return {label: float(spec)}
    if isinstance(spec, Mapping):
        return {str(k): float(v) for k, v in spec.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def histogram_png(col: str, values: Any, lines: Mapping[str, float]) -> str:
    """Base64 PNG: histogram of ``values`` with each threshold as a labelled vertical line."""
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    if len(values):
        # counts from numpy, drawn as one bar set: fast for a million values
        counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=50)
        ax.stairs(counts, edges, fill=True, color="#4a7ab5")
    else:
        ax.text(0.5, 0.5, "no scored values", ha="center", va="center", transform=ax.transAxes)
    for i, (lab, x) in enumerate(sorted(lines.items())):
        ax.axvline(x, color=("#c0392b", "#27ae60", "#8e44ad")[i % 3], linestyle="--",
                   label=f"{lab} = {x:g}")
    if lines:
        ax.legend(fontsize=7)
    ax.set_title(col, fontsize=10)
    ax.set_xlabel("score")
    ax.set_ylabel("windows")
    return _png(fig)


def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _funnel(funnel: Any) -> str:
    """Entries are [stage, count] or {stage, count, unit}; percentages are of the unit's first."""
    rows, firsts, prev = [], {}, None
    for f in funnel:
        stage, count, unit = (f["stage"], f["count"], f.get("unit", "")) if isinstance(f, Mapping) \
            else (f[0], f[1], "")
        first = firsts.setdefault(unit, count)
        pct_first = f"{100 * count / first:.2f}%" if first else "-"
        pct_prev = f"{100 * count / prev:.2f}%" if prev else "-"
        rows.append([stage, count, pct_first, pct_prev])
        prev = count
    return "<h2>Funnel</h2>" + _table(["stage", "count", "% of first of its unit", "% of previous"], rows)


def _per_class(per_class: Mapping[str, Mapping[str, Any]]) -> str:
    stages: list[str] = []
    for counts in per_class.values():
        stages += [s for s in counts if s not in stages]
    rows = [[c, *[counts.get(s, "") for s in stages]] for c, counts in sorted(per_class.items())]
    return "<h2>Per class</h2>" + _table(["class", *stages], rows)


def _resolutions(res: Mapping[str, Mapping[str, int]]) -> str:
    """Rows: resolution (largest first), columns: classes, plus totals (Landscape table 1)."""
    classes = sorted(res)
    reso = sorted({r for c in classes for r in res[c]}, key=_pixels, reverse=True)
    rows = [[r, *[res[c].get(r, 0) for c in classes], sum(res[c].get(r, 0) for c in classes)]
            for r in reso]
    rows.append(["sum", *[sum(res[c].values()) for c in classes],
                 sum(sum(res[c].values()) for c in classes)])
    return "<h2>Resolutions (clips)</h2>" + _table(["resolution", *classes, "total"], rows)


def _pixels(r: str) -> int:
    try:
        w, h = r.lower().split("x")
        return int(w) * int(h)
    except ValueError:
        return -1


def _histograms(windows_rows: Any, thresholds: Mapping[str, Any] | None) -> str:
    figs = []
    for col in ALL_SCORES:
        vals, lines = _column_values(windows_rows, col), thresholds_for(col, thresholds)
        cap = f"{col}: {len(vals)} scored" + "".join(f", {k}={v:g}" for k, v in lines.items())
        figs.append(f'<figure class="hist" data-column="{_esc(col)}"><img alt="{_esc(col)}" '
                    f'src="data:image/png;base64,{histogram_png(col, vals, lines)}">'
                    f"<figcaption>{_esc(cap)}</figcaption></figure>")
    return "<h2>Score histograms (windows)</h2>" + "".join(figs)


def _truth(truth: Mapping[str, Any]) -> str:
    cols = ["windows", *truth.get("filters", []), "kept"]
    rows = [[k, *[v.get(c, 0) for c in cols]] for k, v in truth.get("kinds", {}).items()]
    return ("<h2>Windows passing each filter, by truth kind</h2>"
            + _table(["kind", *cols], rows))


def _sections(stats: Mapping[str, Any]) -> list[str]:
    out = []
    if stats.get("unfinished"):
        out.append('<h2>Run unfinished</h2><ul>' + "".join(
            f'<li class="warn">{_esc(u)}</li>' for u in stats["unfinished"]) + "</ul>")
    if stats.get("hours") is not None:
        out.append(f"<h2>Hours of video</h2><p>{float(stats['hours']):.2f} h</p>")
    if stats.get("funnel"):
        out.append(_funnel(stats["funnel"]))
    if stats.get("per_class"):
        out.append(_per_class(stats["per_class"]))
    if stats.get("resolutions"):
        out.append(_resolutions(stats["resolutions"]))
    if stats.get("failures") is not None:
        rows = sorted(stats["failures"].items(), key=lambda kv: -kv[1])
        out.append("<h2>Failures by reason</h2>" + _table(["reason", "count"], rows))
    if stats.get("rejected"):
        rows = sorted(stats["rejected"].items(), key=lambda kv: -kv[1])
        out.append("<h2>Rejected by reason</h2>" + _table(["reason", "count"], rows))
    if stats.get("truth"):
        out.append(_truth(stats["truth"]))
    if stats.get("warnings"):
        out.append("<h2>Warnings</h2><ul>" + "".join(
            f'<li class="warn">{_esc(w)}</li>' for w in stats["warnings"]) + "</ul>")
    extra = {k: v for k, v in stats.items() if k not in KNOWN_KEYS}
    if extra:
        dump = json.dumps(extra, indent=1, default=str)
        out.append(f"<h2>Other</h2><pre>{_esc(dump)}</pre>")
    return out


def render_html(stats: Mapping[str, Any], windows_rows: Any,
                thresholds: Mapping[str, Any] | None, title: str = "curate report") -> str:
    """The report as one HTML string."""
    body = [*_sections(stats), _histograms(windows_rows, thresholds)]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1>"
            + "".join(body) + "</body></html>")


def write_html(out_dir: str | os.PathLike, html_path: str | os.PathLike | None,
               stats: Mapping[str, Any], windows_rows: Any,
               thresholds: Mapping[str, Any] | None) -> Path:
    """Write the report (default ``<out>/report.html``) atomically; returns its path.

    ``windows_rows``: WINDOWS rows (dicts) or a pyarrow Table of them (faster for 1M rows).
    ``thresholds``: see ``thresholds_for``. The title names the run's recipe from
    ``<out>/run.json`` when present.
    """
    out = Path(out_dir)
    path = Path(html_path) if html_path is not None else out / "report.html"
    title = f"curate report: {out.name}"
    run = out / "run.json"
    if run.is_file():
        try:
            recipe = json.loads(run.read_text()).get("recipe")
            name = recipe.get("name") if isinstance(recipe, Mapping) else recipe
            title += f" (recipe {name})" if name else ""
        except (json.JSONDecodeError, AttributeError) as e:
            log.warning("report: cannot read %s: %s", run, e)
    text = render_html(stats, windows_rows, thresholds, title)
    write_text(path, text)
    return path
