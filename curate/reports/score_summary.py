"""What the scores look like, for `curate stats` and the report: a small histogram of every
score column of the windows, and per class the share of windows in which somebody talks
(the speech filter, issue 26). Columnar: numpy over Arrow columns, no row dicts."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: bins of the text histogram
BINS = 10
_BARS = " ▁▂▃▄▅▆▇█"
#: the speech fraction above which a window "has speech" when no threshold is in force
SPEECH_DEFAULT = 0.5


def _values(col: Any) -> np.ndarray:
    v = pc.drop_null(col).to_numpy(zero_copy_only=False).astype(np.float64)
    return v[np.isfinite(v)]


def histograms(win: pa.Table, columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{column: {n, min, p10, p50, p90, max, counts (``BINS`` bins from min to max)}} of the
    scored values of each column present in ``win`` (columns with no value left out)."""
    out = {}
    for c in columns:
        if c not in win.column_names:
            continue
        v = _values(win.column(c))
        if not v.size:
            continue
        lo, hi = float(v.min()), float(v.max())
        counts, _ = np.histogram(v, bins=BINS, range=(lo, hi if hi > lo else lo + 1.0))
        p10, p50, p90 = (float(x) for x in np.percentile(v, [10, 50, 90]))
        out[c] = {"n": int(v.size), "min": lo, "p10": p10, "p50": p50, "p90": p90, "max": hi,
                  "counts": counts.tolist()}
    return out


def speech_by_class(win: pa.Table, threshold: float | None) -> dict[str, Any] | None:
    """Per class: windows with a speech score, those above ``threshold`` (the speech filter's
    ``max`` in force, else ``SPEECH_DEFAULT``) and their share; None without speech scores."""
    if "speech" not in win.column_names or win.column("speech").null_count == win.num_rows:
        return None
    thr = SPEECH_DEFAULT if threshold is None else float(threshold)
    sp = pc.fill_null(win.column("speech"), float("nan")).to_numpy(zero_copy_only=False)
    classes = pc.fill_null(win.column("class_name").cast(pa.string()), "").to_numpy(zero_copy_only=False)
    scored = np.isfinite(sp)
    talk = scored & (np.nan_to_num(sp, nan=0.0) > thr)
    per = {}
    for c in sorted(set(classes[scored].tolist())):
        m = classes == c
        n, k = int((scored & m).sum()), int((talk & m).sum())
        per[str(c)] = {"windows": n, "with_speech": k, "share": k / n if n else 0.0}
    return {"threshold": thr, "classes": per}


def _bar(counts: Sequence[int]) -> str:
    top = max(counts) or 1
    return "".join(_BARS[int(np.ceil(8 * n / top))] if n else _BARS[0] for n in counts)


def format_histograms(h: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [f"  {c:<16}n={s['n']:<8} min {s['min']:<9.4g} p10 {s['p10']:<9.4g} "
            f"p50 {s['p50']:<9.4g} p90 {s['p90']:<9.4g} max {s['max']:<9.4g} |{_bar(s['counts'])}|"
            for c, s in h.items()]


def format_speech(sp: Mapping[str, Any]) -> list[str]:
    out = [f"  {'class':<28}{'windows':>9}{'speech':>9}{'share':>9}"]
    for c, r in sp["classes"].items():
        out.append(f"  {c[:28]:<28}{r['windows']:>9}{r['with_speech']:>9}{100 * r['share']:>8.1f}%")
    return out
