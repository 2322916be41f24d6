"""The report a person looks at: kept clips and rejected windows as pictures with their
scores, the funnel and kept counts as charts, the run's health in words and no raw JSON;
opened in headless Chromium, and bounded in size at 150 classes."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from curate.config.run_state import load_run
from curate.reports.gallery import PER_REASON, TOTAL, class_cap, clip_times, nearest
from curate.reports.html import health_sentence
from curate.reports.stats import collect, write_report
from curate.build import stage_value
from manifests import schemas
from manifests.schemas import read_rows
from tests.browser import chrome, visible_json_blocks
from tests.selection.test_select_columnar import _write_run, random_run

#: the 150-class page (VGGSS has 149 classes) stays under this: measured 3.75 MB with noise
#: thumbnails (the worst case for JPEG) and 7 score columns; room for the columns to come
MAX_BYTES_150_CLASSES = 5_000_000

HEALTH = {"state": "open", "why": None, "since": 1796513119.339, "paused_since": None,
          "resumes_at": None, "message": None, "stop_reason": None, "cookie": 0, "paused_s": 130.4,
          "version": 5, "counts": {"requests": 32, "throttled": 4, "server_error": 1, "pauses": 2},
          "history": [{"paused_at": 1796513000.0, "reopened_at": 1796513100.0,
                       "why": "3 throttled answers in 30 s", "seconds": 100.0}],
          "bot_checks_in_a_row": 0, "config": {"rate_per_s": 2.0, "threshold": 3},
          "at": 1796513200.5}


def pattern_video(path: Path, noise: bool = False, fps: int = 6) -> Path:
    """10 s of a 320x180 test pattern, a keyframe each second; ``noise``: moving noise over it,
    the worst case for JPEG size."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size=320x180:rate={fps}:duration=10",
                    *(["-vf", "noise=alls=40:allf=t"] if noise else []), "-g", str(fps),
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
                   check=True, timeout=120)
    return path


def picture_run(out: Path, mp4: Path, n_sources: int, n_classes: int | None = None,
                per_class: int = 3) -> Path:
    """A run of generated tables (``random_run``: failures, cascade skips, ties) selected by
    the real select stage, each downloaded segment a link to ``mp4``; ``n_classes`` renames
    the classes ``class_000``..."""
    tables = random_run(11, n_sources=n_sources)
    if n_classes:
        cls = {s["source_id"]: f"class_{i % n_classes:03d}" for i, s in enumerate(tables["sources"])}
        for name in ("sources", "windows"):
            for r in tables[name]:
                r["class_name"] = cls[r["source_id"]]
    from curate.config.recipes import get_recipe
    recipe = get_recipe("avsync15")
    recipe["classes"] = None
    recipe["select"] = {"per_class": per_class, "test_per_class": 1, "seed": 0}
    _write_run(out, tables, recipe)
    run = json.loads((out / "run.json").read_text())
    run["sync_convention"] = "released"
    run["licences"] = {"imagebind": "CC BY-NC 4.0", "silero_vad": "MIT"}
    (out / "run.json").write_text(json.dumps(run))
    stage_value("select", out, load_run(out))
    raw = out / "media" / "raw"
    raw.mkdir(parents=True)
    for d in tables["downloads"]:
        if d["status"] == "ok":
            os.link(mp4, raw / f"{d['source_id']}.mp4")
    (out / "work" / "download").mkdir(parents=True)
    (out / "work" / "download" / "health.json").write_text(json.dumps(HEALTH))
    return out


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pictures")
    out = picture_run(root / "run", pattern_video(root / "pattern.mp4"), n_sources=150)
    st = collect(out)
    st["figure_of_a_later_issue"] = {"nested": [1, 2], "since": 1796513119.339}
    write_report(out, out / "report.html", st)
    return out


def test_health_in_words_with_local_dates_and_durations() -> None:
    text = health_sentence(HEALTH)
    local = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(1796513200.5))
    assert text.startswith("32 download requests: 4 throttled, 1 server errors, 0 bot checks; "
                           "paused 2 times, 2 min 10 s in all.")
    assert "Longest pause: 1 min 40 s from " in text and "(3 throttled answers in 30 s)" in text
    assert "capped at 2 per second" in text and text.endswith(f"Last recorded {local}.")
    assert "1796513" not in text                      # no epoch seconds
    stopped = health_sentence({**HEALTH, "state": "stopped", "message": "bot checks for 600 s",
                               "counts": {"requests": 3}})
    assert "never paused" in stopped and "STOPPED at " in stopped and "bot checks for 600 s" in stopped


def test_nearest_takes_below_and_above_in_turn_and_spreads_over_sources() -> None:
    dist = np.array([0.5, 0.1, 0.2, 0.05, 0.3, np.inf])
    side = np.array([-1, -1, 1, 1, -1, -1], dtype=np.int8)
    assert nearest(dist, side, 4) == [1, 3, 4, 2]          # below 0.1, above 0.05, 0.3, 0.2
    assert nearest(dist, side, 10) == [1, 3, 4, 2, 0, 5]   # the unscored one (inf) last
    src = np.array(["a", "a", "b", "a", "a", "c"])
    assert nearest(dist, side, 3, src, per_group=1) == [1, 2, 5]  # one of each source first
    assert nearest(dist, side, 5, src, per_group=1) == [1, 2, 5, 3, 4]   # then the rest


def test_class_cap_bounds_the_clips_shown() -> None:
    assert class_cap(4) == 12 and class_cap(150) == 4 and class_cap(5000) == 1
    assert clip_times(1.0, 4.0) == (1.0, 2.5, 3.999)


def test_report_in_chromium_shows_pictures_scores_charts_and_no_json(small_run: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    out = small_run
    text = (out / "report.html").read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text
    selected = [r for r in read_rows(out, "selected") if r["status"] == "ok"]
    driver = chrome(tmp_path)
    try:
        driver.get((out / "report.html").as_uri())
        assert visible_json_blocks(driver) == []
        health = driver.find_element(By.ID, "health").text
        assert "32 download requests" in health and "Last recorded 2026-" in health
        assert "released convention" in driver.find_element(By.CLASS_NAME, "summary").text
        assert "imagebind: CC BY-NC 4.0; silero_vad: MIT" in driver.find_element(By.CLASS_NAME, "summary").text
        skipped = driver.find_elements(By.CSS_SELECTOR, "table.skipped tr")
        assert len(skipped) > 1 and "select: rank N beyond per_class N" in skipped[1].text
        funnel = collect(out)["funnel"]
        bars = driver.find_elements(By.CSS_SELECTOR, "svg.chart.funnel rect title")
        assert len(bars) == len(funnel) and bars[-1].get_attribute("textContent").startswith(funnel[-1]["stage"])
        assert driver.find_elements(By.CSS_SELECTOR, "svg.chart.per-class rect")
        _check_cards(driver, out, selected)
        rejected = driver.find_elements(By.CSS_SELECTOR, "section.rejected")
        assert rejected and all(s.find_elements(By.CSS_SELECTOR, ".card .verdict") for s in rejected)
        unknown = driver.find_element(By.CSS_SELECTOR, "details.unknown")     # named, collapsed
        assert unknown.get_attribute("open") is None
        assert "figure_of_a_later_issue" in unknown.get_attribute("textContent")
        assert "nested" not in text and "1796513119" not in text              # never dumped
    finally:
        driver.quit()


def _check_cards(driver, out: Path, selected: list[dict]) -> None:
    """Each selected clip: one card in its class's strip, a decoded three-frame picture, and a
    score row for each score its merged clip has."""
    from selenium.webdriver.common.by import By
    clips = {c["clip_id"]: c for c in read_rows(out, "clips")}
    for r in selected:
        card = driver.find_element(By.CSS_SELECTOR, f'section.strip[data-class="{r["class_name"]}"] '
                                                    f'.card[data-name="{r["name"]}"]')
        img = card.find_element(By.CSS_SELECTOR, "img.frames")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == 3 * 96 + 4
        scored = [c for c in schemas.ALL_SCORES if clips[r["clip_id"]][c] is not None]
        rows = card.find_elements(By.CSS_SELECTOR, "table.scores tr")
        assert [x.find_element(By.TAG_NAME, "td").text for x in rows] == scored
        assert f"{r['end'] - r['start']:.1f} s" in card.text and r["split"] in card.text


def test_pictures_are_the_first_middle_and_last_frames(tmp_path: Path) -> None:
    """The strip of a clip holds the frames at its start, middle and end, not others."""
    from PIL import Image
    from curate.reports.gallery import strip_jpeg
    from testkit.avmedia import brightness, make_av
    mp4 = make_av(tmp_path / "ramp.mp4", 10.0, 6, size=(160, 90))
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(strip_jpeg(mp4, clip_times(2.0, 5.0))))))
    assert img.shape == (54, 3 * 96 + 4, 3)
    levels = [img[:, k * 98:k * 98 + 96].mean() for k in range(3)]
    assert levels == pytest.approx([brightness(12), brightness(21), brightness(29)], abs=3)


def test_150_classes_keep_the_page_under_its_bound(tmp_path: Path) -> None:
    out = picture_run(tmp_path / "run", pattern_video(tmp_path / "noise.mp4", noise=True, fps=3), n_sources=2400,
                      n_classes=150, per_class=12)
    path = write_report(out, out / "report.html")
    size = path.stat().st_size
    print(f"150-class report: {size:,} bytes")
    text = path.read_text()
    cards = text.count('<div class="card"')
    assert cards <= TOTAL + len(schemas.FILTERS) * PER_REASON
    assert text.count('<section class="strip"') == 150 and "more kept clips of class_" in text
    assert size < MAX_BYTES_150_CLASSES


LUMEN = """
from filters.spec import Bound, FilterSpec


def run(seg, alive):
    return {}


FILTER = FilterSpec(name="lumen", columns=("lumen",), run=run,
                    bounds=(Bound("lumen", "floor", "min", 0.3),))
"""


def test_a_newly_declared_filter_shows_without_editing_the_report(add_filter_module) -> None:
    """A filter module declared with a bound whose key names no min/max (``floor``) gets its
    histogram, its threshold and its row in each card from its declaration alone."""
    from curate.reports.gallery import Gallery, Shown, Strip
    from curate.reports.html import render_html
    from filters import registry
    add_filter_module("lumen", LUMEN)
    th = registry.default_thresholds()
    assert th["lumen"] == {"floor": 0.3}
    item = Shown(name="c/x_000000_000010_1_4", class_name="c", split="train", start=1.0, end=4.0,
                 scores={"pixel_diff": 0.05, "lumen": 0.2996})
    page = render_html({}, [{"lumen": 0.2}, {"lumen": 0.5}], th,
                       gallery=Gallery(kept={"c": Strip(items=[item], total=3)}, rejected={},
                                       per_class=12, per_reason=12))
    assert '<figure class="hist" data-column="lumen">' in page and "floor=0.3" in page
    assert ('<tr class="fail"><td>lumen</td><td>0.2996</td><td>≥ 0.3</td><td>✗</td></tr>'
            in page)                                   # digits enough to differ from 0.3
    assert '<tr class="pass"><td>pixel_diff</td><td>0.05</td><td>0.01–0.15</td>' in page
    assert "2 more kept clips of c not shown" in page


def test_licences_come_from_the_run_or_its_recorded_weights() -> None:
    from curate.reports.html import licence_lines
    from curate.reports.stats import run_licences
    assert run_licences({"licences": {"silero_vad": "MIT"}}) == {"silero_vad": "MIT"}
    weights = {"imagebind": {"file": "/c/imagebind_huge.pth", "licence": "CC BY-NC 4.0"},
               "sync": {"file": "/c/s.pt"}}
    assert run_licences({"weights": weights}) == {"imagebind": "CC BY-NC 4.0"}
    assert run_licences({}) is None
    assert licence_lines([{"name": "clip", "licence": "MIT"}]) == ["clip: MIT"]
    assert licence_lines({"imagebind": {"licence": "CC BY-NC 4.0", "sha256": "ab"}}) == \
        ["imagebind: CC BY-NC 4.0"]


def test_a_clip_without_its_file_is_shown_without_picture_and_says_why(tmp_path: Path) -> None:
    import shutil
    from curate.config.thresholds import thresholds
    from curate.reports.gallery import collect_gallery
    out = picture_run(tmp_path / "run", pattern_video(tmp_path / "p.mp4"), n_sources=40)
    shutil.rmtree(out / "media" / "raw")
    run = load_run(out)
    g = collect_gallery(out, thresholds(run, run.get("selection_overrides")))
    items = [i for s in [*g.kept.values(), *g.rejected.values()] for i in s.items]
    assert items and all(i.picture is None and "no downloaded segment" in i.note for i in items)
