"""The self-contained HTML report."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.reports.html import histogram_png, thresholds_for, write_html
from manifests.schemas import ALL_SCORES, WINDOWS

THRESHOLDS = {
    "pixel_diff": {"min": 0.01, "max": 0.15},
    "clip_diff": {"min": 0.17, "max": 0.55},
    "amplitude": {"min": 0.03},
    "imagebind": {"ia_min": 0.15, "it_min": 0.22},
    "sync": {"a2v_min": 0.341, "v2a_min": 0.341},
}

STATS = {
    "funnel": [["sources", 200], ["downloaded", 160], ["windows", 1000], ["kept", 91]],
    "per_class": {"dog_barking": {"sources": 120, "selected": 100},
                  "hammering": {"sources": 80, "selected": 64}},
    "failures": {"download: unavailable": 30, "decode: corrupt": 10},
    "resolutions": {"raining": {"2560x1440": 1674, "1280x720": 141},
                    "volcano_eruption": {"2560x1440": 60}},
    "hours": 25.78,
    "warnings": ["sync scored with random weights <script>"],
    "seed": 0,
}


def windows(n: int = 400) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        row = {c: float(rng.random()) for c in ALL_SCORES}
        row["sync_v2a"] = None if i % 2 else row["sync_v2a"]   # nulls are skipped, counted
        rows.append(row)
    return rows


def test_thresholds_for_each_score_column() -> None:
    assert thresholds_for("pixel_diff", THRESHOLDS) == {"min": 0.01, "max": 0.15}
    assert thresholds_for("imagebind_ia", THRESHOLDS) == {"ia_min": 0.15}
    assert thresholds_for("imagebind_it", THRESHOLDS) == {"it_min": 0.22}
    assert thresholds_for("sync_a2v", THRESHOLDS) == {"a2v_min": 0.341}
    assert thresholds_for("sync_v2a", {"sync": {"min": 0.3}}) == {"min": 0.3}
    assert thresholds_for("sync_v2a", {"sync_v2a": 0.3}) == {"threshold": 0.3}
    assert thresholds_for("amplitude", None) == {}


def test_threshold_lines_change_the_plot() -> None:
    vals = list(np.linspace(0, 1, 100))
    assert histogram_png("x", vals, {}) != histogram_png("x", vals, {"min": 0.3})


def test_report_has_one_histogram_per_score_column_and_all_sections(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"recipe": {"name": "avsync15"}}))
    path = write_html(tmp_path, None, STATS, windows(), THRESHOLDS)
    text = path.read_text()
    assert path == tmp_path / "report.html"
    figs = re.findall(r'<figure class="hist" data-column="([a-z_0-9]+)"><img alt="[^"]+" '
                      r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert [c for c, _ in figs] == list(ALL_SCORES)
    assert all(base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n" for _, b64 in figs)
    assert "sync_v2a: 200 scored" in text and "ia_min=0.15" in text
    assert "recipe avsync15" in text and "25.78 h" in text
    assert "<td>kept</td><td>91</td><td>45.50%</td><td>9.10%</td>" in text   # funnel percentages
    assert "<td>sum</td><td>1815</td><td>60</td><td>1875</td>" in text         # resolution totals
    assert "<td>download: unavailable</td><td>30</td>" in text
    assert "&lt;script&gt;" in text and "<script>" not in text                # escaped, no JS
    # an unknown key is named in a collapsed list, its value never dumped
    assert '<details class="unknown"><summary>1 more figure' in text and "<li>seed</li>" in text
    assert "&quot;seed&quot;" not in text and "<pre>" not in text
    assert "http://" not in text and "https://" not in text                   # self-contained


def test_report_accepts_an_arrow_table_and_sparse_stats(tmp_path: Path) -> None:
    rows = [{**{n: None for n in WINDOWS.names}, **r} for r in windows(50)]
    table = pa.Table.from_pylist(rows, schema=WINDOWS)
    path = write_html(tmp_path, tmp_path / "sub" / "r.html", {"hours": 1.0}, table, None)
    text = path.read_text()
    assert text.count('<figure class="hist"') == len(ALL_SCORES)
    assert "Funnel" not in text and "pixel_diff: 50 scored" in text
