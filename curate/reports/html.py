"""Self-contained HTML report of a curation run: one file, images inlined, no script, no
network.

Sections: a summary in words (run, hours, sync convention, licences, download health), the
run's unfinished parts and warnings, the funnel as a table beside an SVG chart, clips kept per
class as bars and a table, what was kept as pictures (``gallery``: per class the selected
clips with first / middle / last frame, duration, split and scores against the thresholds),
the rejected windows nearest each filter's thresholds, tables (resolutions, failures,
rejections, skipped items, availability, truth kinds) and one histogram per score column with
its thresholds as vertical lines. ``stats`` comes from the stats module; a key this module does
not know is named in a collapsed list, its value never dumped.
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

from manifests import schemas  # noqa: E402
from manifests.atomic import write_text  # noqa: E402
from curate.reports.charts import class_bars_svg, funnel_rows, funnel_svg  # noqa: E402
from curate.reports.numbers import (bounds, bounds_text, duration_text, hours_text,  # noqa: E402
                                    score_text, thresholds_for, when_text)

log = logging.getLogger(__name__)

#: stats keys the report shows (anything else is named in a collapsed list)
KNOWN_KEYS = ("out", "recipe", "funnel", "per_class", "failures", "resolutions", "hours",
              "hours_downloaded", "hours_selected", "warnings", "unfinished", "finished",
              "rejected", "skipped", "truth", "download_health", "availability", "shard_files",
              "sync_convention", "licences", "licenses", "scores", "speech_by_class", "repairs",
              "certificates")
_CSS = """body{font-family:sans-serif;margin:2em;max-width:1400px;color:#222}table{border-collapse:
collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:
#eee}td:first-child,th:first-child{text-align:left}.warn{color:#a40}figure{display:inline-block;
margin:.5em}figcaption{font-size:90%}.side{display:flex;flex-wrap:wrap;gap:2em;align-items:
flex-start}.scroll{max-height:640px;overflow-y:auto}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ccc;border-radius:4px;padding:6px;width:300px;font-size:12px}.card img{
display:block;max-width:100%}.noframes{height:54px;background:#f3f3f3;color:#a40;padding:4px;
overflow:hidden}.name{font-weight:bold;word-break:break-all;margin-top:4px}.meta{color:#555}
.verdict{color:#a40;margin-top:2px}table.scores{margin:4px 0 0;font-size:11px}table.scores td{
padding:1px 4px;border-color:#ddd}tr.fail td{background:#fbe3e0}tr.pass td{background:#e6f4e6}
tr.info td{color:#777}.more{color:#555;font-style:italic}.summary p{margin:.4em 0}
details{margin:1em 0}"""


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
    """The funnel's table (percentages of the first stage of each unit and of the previous
    stage) beside its chart."""
    rows, firsts, prev = [], {}, None
    for stage, count, unit in funnel_rows(funnel):
        first = firsts.setdefault(unit, count)
        pct_first = f"{100 * count / first:.2f}%" if first else "-"
        pct_prev = f"{100 * count / prev:.2f}%" if prev else "-"
        rows.append([stage, count, pct_first, pct_prev])
        prev = count
    table = _table(["stage", "count", "% of first of its unit", "% of previous"], rows)
    return (f'<h2>Funnel</h2><div class="side"><div>{table}</div>'
            f'<div>{funnel_svg(funnel)}</div></div>')


def _per_class(per_class: Mapping[str, Mapping[str, Any]]) -> str:
    stages: list[str] = []
    for counts in per_class.values():
        stages += [s for s in counts if s not in stages]
    rows = [[c, *[counts.get(s, "") for s in stages]] for c, counts in sorted(per_class.items())]
    bars = ""
    if any(s == "selected" or s.startswith("selected_") for s in stages):
        bars = f'<h3>Clips kept per class</h3><div class="scroll">{class_bars_svg(per_class)}</div>'
    return "<h2>Per class</h2>" + bars + _table(["class", *stages], rows)


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
    for col in schemas.ALL_SCORES:
        vals, lines = _column_values(windows_rows, col), thresholds_for(col, thresholds)
        cap = f"{col}: {len(vals)} scored" + "".join(f", {k}={v:g}" for k, v in lines.items())
        figs.append(f'<figure class="hist" data-column="{_esc(col)}"><img alt="{_esc(col)}" '
                    f'src="data:image/png;base64,{histogram_png(col, vals, lines)}">'
                    f"<figcaption>{_esc(cap)}</figcaption></figure>")
    return "<h2>Score histograms (windows)</h2>" + "".join(figs)


def _speech(sp: Mapping[str, Any]) -> str:
    rows = [[c, r["windows"], r["with_speech"], f"{100 * r['share']:.1f}%"]
            for c, r in sp.get("classes", {}).items()]
    return (f"<h2>Windows with speech (speech &gt; {float(sp.get('threshold', 0.5)):g}), per class</h2>"
            + _table(["class", "windows", "with speech", "share"], rows))


def _certificates(cert: Mapping[str, Any]) -> str:
    """The sync certificates of the merged clips: one bar chart per histogram (DeSync,
    Synchformer's offsets, the sync classifier's clip offset), clips per value."""
    from curate.reports.charts import counts_svg
    words = []
    if cert.get("certified"):
        words.append(f"Synchformer certified {cert['certified']} clips (mean DeSync "
                     f"{float(cert['desync_mean']):.3f} s)")
    if cert.get("with_offset"):
        words.append(f"the sync classifier's offset is known for {cert['with_offset']} clips "
                     f"(mean share of their windows that agree: {float(cert['agree_mean']):.2f})")
    titles = cert.get("titles") or {}
    figs = [f'<figure class="cert" data-column="{_esc(col)}">'
            f'{counts_svg(titles.get(col, col) + ": clips per value", counts)}'
            f"<figcaption>{_esc(titles.get(col, col))}</figcaption></figure>"
            for col, counts in (cert.get("histograms") or {}).items()]
    return ("<h2>Sync certificates (merged clips)</h2>" + (f"<p>{_esc('; '.join(words))}.</p>" if words else "")
            + "".join(figs))


def _truth(truth: Mapping[str, Any]) -> str:
    cols = ["windows", *truth.get("filters", []), "kept"]
    rows = [[k, *[v.get(c, 0) for c in cols]] for k, v in truth.get("kinds", {}).items()]
    return ("<h2>Windows passing each filter, by truth kind</h2>"
            + _table(["kind", *cols], rows))


# ----------------------------------------------------------------------------- words

#: what each sync classifier preprocessing convention means, for the summary
SYNC_CONVENTIONS = {
    "released": "the released AVSync15 code's preprocessing (frames and audio cut as its "
                "evaluation script does)",
    "ours": "this package's preprocessing (one decoded grid, frames at or before each instant)",
}


def health_sentence(state: Mapping[str, Any]) -> str:
    """The download health control's last state in words: ``32 download requests: 0 throttled,
    0 server errors, 0 bot checks; never paused. ...`` (local dates, durations)."""
    c = state.get("counts") or {}
    n = lambda k: int(c.get(k, 0) or 0)  # noqa: E731
    pauses = n("pauses")
    paused = ("never paused" if not pauses else
              f"paused {pauses} time{'s' if pauses != 1 else ''}, "
              f"{duration_text(state.get('paused_s') or 0)} in all")
    text = (f"{n('requests')} download requests: {n('throttled')} throttled, "
            f"{n('server_error')} server errors, {n('bot_check')} bot checks; {paused}.")
    history = [h for h in state.get("history") or [] if isinstance(h, Mapping)]
    if history:
        h = max(history, key=lambda h: h.get("seconds") or 0)
        text += (f" Longest pause: {duration_text(h.get('seconds'))} from "
                 f"{when_text(h.get('paused_at'))} ({h.get('why') or 'no reason recorded'}).")
    rate = (state.get("config") or {}).get("rate_per_s")
    text += f" Requests capped at {rate:g} per second over all workers." if rate else " No request-rate cap."
    s = state.get("state")
    if s == "stopped":
        text += f" Downloads STOPPED at {when_text(state.get('since'))}: {state.get('message')}."
    elif s in ("paused", "probing"):
        text += (f" Paused since {when_text(state.get('paused_since'))} ({state.get('why')})"
                 + (f", resuming at {when_text(state.get('resumes_at'))}" if state.get("resumes_at") else "")
                 + ".")
    return text + f" Last recorded {when_text(state.get('at'))}."


def licence_lines(licences: Any) -> list[str]:
    """``name: licence`` lines from a mapping (name -> licence text, or -> {licence: ...}) or a
    list of {name, licence} records."""
    items = licences.items() if isinstance(licences, Mapping) else \
        [(r.get("name") or r.get("model") or "?", r) for r in licences or [] if isinstance(r, Mapping)]
    out = []
    for name, v in items:
        if isinstance(v, Mapping):
            v = v.get("licence") or v.get("license") or ", ".join(
                f"{k} {x}" for k, x in v.items() if isinstance(x, (str, int, float)))
        out.append(f"{name}: {v}")
    return out


def _summary(stats: Mapping[str, Any]) -> str:
    p = []
    if stats.get("out"):
        p.append(f"Run folder <code>{_esc(stats['out'])}</code>"
                 + (f", recipe <b>{_esc(stats['recipe'])}</b>." if stats.get("recipe") else "."))
    if "finished" in stats:
        p.append("Every stage of the recipe has run." if stats["finished"] else
                 '<span class="warn">The run is unfinished (below).</span>')
    hours = [(k, stats[k]) for k in ("hours_downloaded", "hours_selected") if stats.get(k) is not None]
    if hours:
        p.append("Video: " + "; ".join(f"{hours_text(v)} {k.split('_')[1]}" for k, v in hours) + ".")
    elif stats.get("hours") is not None:
        p.append(f"Video: {hours_text(stats['hours'])}.")
    if stats.get("shard_files"):
        p.append(f"Written as {int(stats['shard_files'])} shard files.")
    if stats.get("sync_convention"):
        conv = str(stats["sync_convention"])
        p.append(f"Sync scores use the <b>{_esc(conv)}</b> convention: "
                 f"{_esc(SYNC_CONVENTIONS.get(conv, 'as recorded by the score stage'))}.")
    lic = licence_lines(stats.get("licences") or stats.get("licenses"))
    if lic:
        p.append("The scores depend on these licences: " + "; ".join(map(_esc, lic)) + ".")
    if stats.get("download_health"):
        p.append(f'<span id="health">Download health: {_esc(health_sentence(stats["download_health"]))}</span>')
    return '<div class="summary"><h2>Summary</h2>' + "".join(f"<p>{x}</p>" for x in p) + "</div>"


def _unknown(stats: Mapping[str, Any]) -> str:
    """Keys the report does not show, by name only (values are never dumped)."""
    extra = [k for k in stats if k not in KNOWN_KEYS]
    if not extra:
        return ""
    return (f'<details class="unknown"><summary>{len(extra)} more figure{"s" if len(extra) != 1 else ""}'
            " this report does not show (see <code>curate stats --json</code>)</summary><ul>"
            + "".join(f"<li>{_esc(k)}</li>" for k in extra) + "</ul></details>")


def _count_table(title: str, counts: Mapping[str, Any], head: str = "reason") -> str:
    rows = sorted(counts.items(), key=lambda kv: -kv[1])
    return f"<h2>{_esc(title)}</h2>" + _table([head, "count"], rows)


def _sections(stats: Mapping[str, Any]) -> list[str]:
    out = [_summary(stats)]
    if stats.get("unfinished"):
        out.append('<h2>Run unfinished</h2><ul>' + "".join(
            f'<li class="warn">{_esc(u)}</li>' for u in stats["unfinished"]) + "</ul>")
    if stats.get("warnings"):
        out.append("<h2>Warnings</h2><ul>" + "".join(
            f'<li class="warn">{_esc(w)}</li>' for w in stats["warnings"]) + "</ul>")
    if stats.get("funnel"):
        out.append(_funnel(stats["funnel"]))
    if stats.get("per_class"):
        out.append(_per_class(stats["per_class"]))
    return out


def _tables(stats: Mapping[str, Any]) -> list[str]:
    out = []
    if stats.get("resolutions"):
        out.append(_resolutions(stats["resolutions"]))
    for key, title in (("failures", "Failures by reason"), ("rejected", "Rejected by reason"),
                       ("skipped", "Skipped by reason (not failures)")):
        if stats.get(key):
            out.append(_count_table(title, stats[key]).replace("<table>", f'<table class="{key}">', 1))
        elif key == "failures" and stats.get(key) is not None:
            out.append(f"<h2>{title}</h2><p>No failures.</p>")
    if stats.get("availability"):
        out.append(_count_table("Sources by availability (ledger)", stats["availability"], "availability"))
    if stats.get("repairs"):
        out.append(_count_table("Repairs (selected clips)", stats["repairs"], "outcome"))
    if stats.get("speech_by_class"):
        out.append(_speech(stats["speech_by_class"]))
    if stats.get("certificates"):
        out.append(_certificates(stats["certificates"]))
    if stats.get("truth"):
        out.append(_truth(stats["truth"]))
    return out


# ----------------------------------------------------------------------------- pictures

def _score_rows(item: Any, thresholds: Mapping[str, Any] | None, score_only: set[str]) -> str:
    rows, unscored = [], [c for c, v in item.scores.items() if v is None]
    for col, v in item.scores.items():
        lo, hi = bounds(col, thresholds)
        if v is None:
            continue
        if col in score_only:
            cls, mark = "info", "score-only"
        elif (lo is not None and v < lo) or (hi is not None and v > hi):
            cls, mark = "fail", "✗"
        else:
            cls, mark = "pass", "✓" if lo is not None or hi is not None else ""
        ref = min((b for b in (lo, hi) if b is not None and v is not None),
                  key=lambda b: abs(v - b), default=None)        # digits enough to differ from it
        rows.append(f'<tr class="{cls}"><td>{_esc(col)}</td><td>{score_text(v, ref)}</td>'
                    f"<td>{_esc(bounds_text(lo, hi))}</td><td>{mark}</td></tr>")
    table = '<table class="scores">' + "".join(rows) + "</table>" if rows else ""
    return table + (f'<div class="meta">not scored: {_esc(", ".join(unscored))}</div>' if unscored else "")


def _card(item: Any, thresholds: Mapping[str, Any] | None, score_only: set[str],
          show_class: bool = False) -> str:
    if item.picture:
        at = ", ".join(f"{t:.2f}" for t in item.times)
        pic = (f'<img class="frames" alt="first, middle and last frame of {_esc(item.name)}" '
               f'title="frames at {at} s of the segment" src="data:image/jpeg;base64,{item.picture}">')
    else:
        pic = f'<div class="noframes">no picture: {_esc(item.note)}</div>'
    meta = [duration_text(item.duration), f"{item.start:.2f}–{item.end:.2f} s", str(item.split or "no split")]
    if show_class and item.class_name:
        meta.insert(0, str(item.class_name))
    if item.n_windows:
        meta.append(f"mean of {item.n_windows} window{'s' if item.n_windows != 1 else ''}")
    verdict = f'<div class="verdict">{_esc(item.verdict)}</div>' if item.verdict else ""
    return (f'<div class="card" data-name="{_esc(item.name)}">{pic}<div class="name">'
            f'{_esc(item.name)}</div><div class="meta">{_esc(" · ".join(meta))}</div>{verdict}'
            f"{_score_rows(item, thresholds, score_only)}</div>")


def _more(strip: Any, what: str) -> str:
    return f'<p class="more">{strip.more:,} more {what} not shown.</p>' if strip.more > 0 else ""


def _kept(gallery: Any, thresholds: Mapping[str, Any] | None) -> str:
    if not gallery.kept:
        return ""
    parts = [f"<h2>What was kept</h2><p>Per class, the selected clips, best ranked first (at most "
             f"{gallery.per_class} per class): first, middle and last frame, duration, times in the "
             "segment, split, and each score (the clip's mean over its windows) against its "
             "thresholds.</p>"]
    for cls, strip in gallery.kept.items():
        splits = ", ".join(f"{n} {s}" for s, n in sorted(strip.splits.items()))
        cards = "".join(_card(i, thresholds, gallery.score_only) for i in strip.items)
        parts.append(f'<section class="strip" data-class="{_esc(cls)}"><h3>{_esc(cls)}: '
                     f'{strip.total} kept ({_esc(splits)})</h3><div class="cards">{cards}</div>'
                     f"{_more(strip, 'kept clips of ' + cls)}</section>")
    return "".join(parts)


def _rejected(gallery: Any, thresholds: Mapping[str, Any] | None) -> str:
    if not gallery.rejected:
        return ""
    parts = ["<h2>Rejected windows nearest the thresholds</h2><p>Per filter, the windows it "
             f"rejected (first failing filter of the cascade) that came closest to its thresholds, "
             f"the nearest below a minimum and above a maximum in turn (at most {gallery.per_reason}): "
             "what loosening that threshold would admit.</p>"]
    for f, strip in gallery.rejected.items():
        cards = "".join(_card(i, thresholds, gallery.score_only, show_class=True) for i in strip.items)
        parts.append(f'<section class="rejected" data-reason="{_esc(f)}"><h3>rejected by {_esc(f)}: '
                     f'{strip.total:,} windows</h3><div class="cards">{cards}</div>'
                     f"{_more(strip, f'windows rejected by {f}')}</section>")
    return "".join(parts)


# ----------------------------------------------------------------------------- page

def render_html(stats: Mapping[str, Any], windows_rows: Any, thresholds: Mapping[str, Any] | None,
                title: str = "curate report", gallery: Any = None) -> str:
    """The report as one HTML string (``gallery``: a ``gallery.Gallery`` or None)."""
    body = _sections(stats)
    if gallery is not None:
        body += [_kept(gallery, thresholds), _rejected(gallery, thresholds)]
    body += [*_tables(stats), _histograms(windows_rows, thresholds), _unknown(stats)]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1>"
            + "".join(body) + "</body></html>")


def write_html(out_dir: str | os.PathLike, html_path: str | os.PathLike | None,
               stats: Mapping[str, Any], windows_rows: Any,
               thresholds: Mapping[str, Any] | None, gallery: Any = None) -> Path:
    """Write the report (default ``<out>/report.html``) atomically; returns its path.

    ``windows_rows``: WINDOWS rows (dicts) or a pyarrow Table of them (faster for 1M rows).
    ``thresholds``: see ``numbers.thresholds_for``. The title names the run's recipe from
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
    text = render_html(stats, windows_rows, thresholds, title, gallery)
    write_text(path, text)
    return path
