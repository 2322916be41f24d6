"""`curate stats` and the HTML report show the sync certificates' histograms (issue 27):
DeSync, Synchformer's offsets and the sync classifier's own clip offset, clips per value."""
from __future__ import annotations

import pyarrow as pa

from curate.reports.html import render_html
from curate.reports.stats import collect, format_text
from manifests import schemas
from manifests.schemas import write_manifest


def _clip(k: int, off: float | None, agree: float | None, desync: float | None, status: str = "ok") -> dict:
    return {"clip_id": f"src_{k}", "source_id": "src", "shot_id": "src_shot000", "class_name": "dog",
            "split": "train", "start": 3.0 * k, "end": 3.0 * k + 3.0, "n_windows": 2, "status": status,
            "error": None, "sync_offset_s": off, "sync_offset_agree": agree, "sync_offset_p": 0.3,
            "desync_s": desync, "sf_offset_first": None if desync is None else -desync,
            "sf_offset_last": None if desync is None else desync}


def test_stats_and_report_show_the_certificate_histograms(tmp_path):
    out = tmp_path / "out"
    write_manifest(out, "clips", [_clip(0, -0.4, 1.0, 0.2), _clip(1, -0.4, 0.5, None),
                                  _clip(2, 0.04, 0.75, 0.0), _clip(3, 0.6, 1.0, 1.0, status="rejected")])
    st = collect(out)
    cert = st["certificates"]
    # the rejected clip is not counted; the classifier's offsets keep their 0.04-s steps
    assert cert["histograms"]["sync_offset_s"] == {"-0.40": 2, "+0.04": 1}
    assert cert["histograms"]["desync_s"] == {"0.0": 1, "0.2": 1}
    assert cert["with_offset"] == 3 and abs(cert["agree_mean"] - 0.75) < 1e-9
    assert cert["certified"] == 2
    text = format_text(st)
    assert "sync classifier offset (clip mode)" in text and "-0.40:2" in text and "DeSync (s)" in text
    empty = pa.table({c: pa.array([], pa.float64()) for c in schemas.ALL_SCORES})
    page = render_html(st, empty, None)
    assert "Sync certificates (merged clips)" in page
    for col in ("desync_s", "sf_offset_first", "sf_offset_last", "sync_offset_s"):
        assert f'<figure class="cert" data-column="{col}"><svg class="chart counts"' in page
    assert '<title>-0.40: 2</title>' in page                     # one bar per value, its count
    assert "certificates" not in page.split('class="unknown"')[-1] if 'class="unknown"' in page else True


def test_no_certificate_block_without_offsets(tmp_path):
    out = tmp_path / "out"
    write_manifest(out, "clips", [_clip(0, None, None, None)])
    assert "certificates" not in collect(out)
