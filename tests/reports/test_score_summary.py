"""Score histograms and the per-class speech share of `curate stats` (issue 26)."""
from __future__ import annotations

import pyarrow as pa

from curate.reports.score_summary import (format_histograms, format_speech, histograms,
                                          speech_by_class)


def _win() -> pa.Table:
    return pa.table({
        "class_name": ["dog", "dog", "dog", "dog", "cat", "cat", "cat"],
        "speech": [0.0, 0.9, 0.6, None, 0.1, 0.2, float("nan")],
        "bandwidth_hz": [8000.0, 8000.0, 20000.0, 21000.0, None, None, None],
    })


def test_histograms_count_the_scored_values_only():
    h = histograms(_win(), ["speech", "bandwidth_hz", "not_there"])
    assert set(h) == {"speech", "bandwidth_hz"}
    assert h["speech"]["n"] == 5 and sum(h["speech"]["counts"]) == 5
    assert h["speech"]["min"] == 0.0 and h["speech"]["max"] == 0.9
    assert h["bandwidth_hz"]["p50"] == 14000.0
    lines = format_histograms(h)
    assert lines[0].lstrip().startswith("speech") and "n=5" in lines[0]


def test_speech_share_per_class_against_the_threshold_in_force():
    sp = speech_by_class(_win(), None)             # default 0.5
    assert sp["threshold"] == 0.5
    assert sp["classes"]["dog"] == {"windows": 3, "with_speech": 2, "share": 2 / 3}
    assert sp["classes"]["cat"] == {"windows": 2, "with_speech": 0, "share": 0.0}
    assert speech_by_class(_win(), 0.15)["classes"]["cat"]["with_speech"] == 1
    assert "66.7%" in format_speech(sp)[1] or "66.7%" in format_speech(sp)[2]
    assert speech_by_class(pa.table({"class_name": ["a"], "speech": pa.array([None], pa.float64())}), None) is None
