"""The synthetic corpus: files agree with the truth recorded next to them."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from curate.demo import synth
from decoding.media import decode_clip, decode_grid, probe

DURATION = 4.0
N = 8          # the first 8 videos of the plan cover all 7 kinds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("synth")
    truth = synth.synthesize(out, n_videos=N, seed=3, duration=DURATION)
    grids = {v["id"]: decode_grid(out / v["path"]) for v in truth["videos"]}
    return out, truth, grids


def _f(grid) -> np.ndarray:
    return grid.frames.astype(np.float32) / 255.0


def _pixel_diff(grid, t0: float) -> float:
    """The pixel_diff protocol: 10 frames uniformly over [t0, t0+3] (1/3 s apart)."""
    fr = _f(grid)[[grid.frame_index(t0 + k / 3) for k in range(10)]]
    return float(np.abs(fr[1:] - fr[:-1]).mean())


def _onsets(audio: np.ndarray, expected: list[float], sr: int = 16000) -> list[float]:
    """For each expected time, the first sample above 0.2 in [t - 50 ms, t + 150 ms)."""
    a = np.abs(audio)
    found = []
    for t in expected:
        i0 = max(int((t - 0.05) * sr), 0)
        seg = a[i0:int((t + 0.15) * sr)]
        hits = np.flatnonzero(seg > 0.2)
        found.append((i0 + hits[0]) / sr if len(hits) else float("nan"))
    return found


def test_files_match_truth(corpus):
    out, truth, _ = corpus
    assert json.loads((out / "truth.json").read_text())["videos"] == truth["videos"]
    assert set(v["kind"] for v in truth["videos"]) == set(synth.KINDS)
    for v in truth["videos"]:
        info = probe(out / v["path"])
        assert abs(info["duration"] - DURATION) < 0.1, v["id"]
        assert (info["width"], info["height"]) == tuple(v["size"])
        assert info["fps"] == pytest.approx(v["fps"])
        assert info["has_audio"] and info["sample_rate"] == v["sample_rate"]


def test_static_videos_fail_pixel_filter(corpus):
    _, truth, grids = corpus
    static = [v for v in truth["videos"] if v["static"]]
    assert static
    for v in static:
        g = grids[v["id"]]
        assert _pixel_diff(g, 0.0) < 0.01
        assert np.abs(np.diff(_f(g), axis=0)).mean(axis=(1, 2, 3)).max() < 0.01
        assert np.abs(g.audio).max() > 0.1          # the tone is audible


def test_moving_videos_inside_pixel_band(corpus):
    _, truth, grids = corpus
    moving = [v for v in truth["videos"] if not v["static"]]
    assert len(moving) >= 5
    for v in moving:
        g = grids[v["id"]]
        # every window whose 10 samples stay inside one shot
        for t0 in np.arange(0.0, DURATION - 3.0 + 1e-6, 0.5):
            if any(t0 < c <= t0 + 3.0 for c in v["cuts"]):
                continue
            assert 0.01 <= _pixel_diff(g, t0) <= 0.15, (v["id"], v["kind"], t0)


def test_silence_and_loudness(corpus):
    _, truth, grids = corpus
    for v in truth["videos"]:
        peak = float(np.abs(grids[v["id"]].audio_channels).max())
        if v["silent"]:
            assert peak < 0.03, v["id"]
        else:
            assert peak >= 0.1, v["id"]


def test_flash_frames_are_brighter(corpus):
    _, truth, grids = corpus
    checked = 0
    for v in truth["videos"]:
        if not v["event_times"] or v["kind"] == "drum":
            continue
        g = grids[v["id"]]
        centre = _f(g)[:, 100:124, 100:124].mean(axis=(1, 2, 3))   # inside the disc
        flash = [g.frame_index(t + 0.04) for t in v["event_times"]]
        quiet = [i for i in range(len(centre))
                 if all(abs(i / g.fps - t) > 0.3 for t in v["event_times"])]
        assert quiet and flash
        assert centre[flash].min() > centre[quiet].max() + 0.05, v["id"]
        checked += 1
    assert checked >= 2


def test_sounds_at_recorded_times(corpus):
    _, truth, grids = corpus
    for v in truth["videos"]:
        if v["kind"] not in ("flash_click", "flash_click_shifted", "drum"):
            continue
        times = [t for t in v["audio_event_times"] if t < DURATION - 0.2]
        assert times, v["id"]
        found = _onsets(grids[v["id"]].audio, times)
        assert np.allclose(found, times, atol=0.01), (v["id"], found, times)


def test_shifted_audio_is_a_shift(corpus):
    _, truth, _ = corpus
    shifted = [v for v in truth["videos"] if v["kind"] == "flash_click_shifted"]
    in_sync = [v for v in truth["videos"] if v["kind"] in ("flash_click", "drum")]
    assert shifted and in_sync
    for v in shifted:
        assert abs(v["audio_offset"]) == synth.SHIFT_S     # one size, a drawn sign
        sounds = set(np.round(v["audio_event_times"], 4))
        for e in v["event_times"]:
            if 0 <= e + v["audio_offset"] < DURATION:
                assert round(e + v["audio_offset"], 4) in sounds
    for v in in_sync:
        assert v["audio_offset"] == 0 and v["audio_event_times"] == v["event_times"]


def test_hard_cuts_are_visible_on_the_recorded_frame(corpus):
    out, truth, _ = corpus
    cut_videos = [v for v in truth["videos"] if v["cuts"]]
    assert cut_videos and all(v["kind"] == "hard_cuts" for v in cut_videos)
    for v in cut_videos:
        # every source frame (24 fps), so an off-by-one-frame cut shows
        g = decode_clip(out / v["path"], 0.0, DURATION, fps=v["fps"], short_side=120, crop=None)
        step = np.abs(np.diff(_f(g), axis=0)).mean(axis=(1, 2, 3))   # step[i]: frame i -> i+1
        for c in v["cuts"]:
            i = int(round(c * v["fps"]))      # first frame of the new shot
            assert step[i - 1] > 5 * np.median(step), (v["id"], c)
            assert step[i] < 2 * np.median(step) and step[i - 2] < 2 * np.median(step)


def test_sources_csv_paths_and_urls(corpus, tmp_path):
    out, truth, _ = corpus
    with open(out / "sources.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "path", "start", "end", "label", "split"]
    assert [r["id"] for r in rows] == [v["id"] for v in truth["videos"]]
    for r, v in zip(rows, truth["videos"]):
        assert (out / r["path"]).is_file()
        assert (r["label"], r["split"], float(r["end"])) == (v["label"], v["split"], DURATION)
    # the url flavour, one short video is enough
    synth.synthesize(tmp_path, n_videos=1, duration=1.0, url_base="http://127.0.0.1:9/videos/")
    with open(tmp_path / "sources.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["url"] == "http://127.0.0.1:9/videos/synth0000.mp4"


def test_sources_csv_reads_as_generic_manifest(corpus):
    from manifests.source_lists import read_generic
    out, truth, _ = corpus
    rows = read_generic(out / "sources.csv")
    assert [r["status"] for r in rows] == ["ok"] * N
    assert rows[0]["source_id"] == "synth0000_000000_000004"
    assert all(Path(r["path"]).is_file() for r in rows)


def test_corpus_plan_labels_and_splits():
    specs = synth.corpus_specs(32, seed=0)
    labels = Counter(s.label for s in specs)
    assert len(labels) >= 4 and set(labels.values()) == {8}
    assert Counter(s.split for s in specs) == {"train": 24, "test": 8}
    for label in labels:       # each class has train and test videos
        assert {s.split for s in specs if s.label == label} == {"train", "test"}
    assert {s.kind for s in specs} == set(synth.KINDS)
    assert len({s.id for s in specs}) == 32
    # deterministic, and the seed matters
    again = synth.corpus_specs(32, seed=0)
    assert [s.truth() for s in again] == [s.truth() for s in specs]
    other = synth.corpus_specs(32, seed=1)
    assert [s.event_times for s in other] != [s.event_times for s in specs]


def test_rendering_is_deterministic(tmp_path):
    spec = synth.make_spec("det", "flash click", "flash_click", "train", seed=11, duration=1.0)
    a = decode_grid(synth.render(spec, tmp_path / "a.mp4"))
    b = decode_grid(synth.render(spec, tmp_path / "b.mp4"))
    assert np.array_equal(a.frames, b.frames)
    assert np.array_equal(a.audio_channels, b.audio_channels)


def test_make_event_video(tmp_path):
    events = [0.5, 1.25, 2.0]
    truth = synth.make_event_video(tmp_path / "ev.mp4", duration=3.0, event_times=events,
                                   audio_offset=0.25, seed=5)
    assert truth["event_times"] == events and truth["audio_offset"] == 0.25
    assert truth["audio_event_times"] == [0.75, 1.5, 2.25]
    g = decode_grid(tmp_path / "ev.mp4")
    assert np.allclose(_onsets(g.audio, truth["audio_event_times"]),
                       truth["audio_event_times"], atol=0.01)
    centre = _f(g)[:, 100:124, 100:124].mean(axis=(1, 2, 3))
    assert centre[g.frame_index(0.5 + 0.04)] > centre[g.frame_index(0.25)] + 0.05
    # no sound where the flash is: audio is late by 0.25 s
    assert np.abs(g.audio_slice(0.5, 0.55)).max() < 0.03


def test_bad_arguments():
    with pytest.raises(ValueError):
        synth.make_spec("x", "l", "no_such_kind", "train", 0)
    with pytest.raises(ValueError):
        synth.synthesize("/nonexistent-never-created", n_videos=0)


_RENDER = ("import sys; from curate.demo import synth; "
           "synth.render(synth.make_spec('v', 'dog', 'flash_click', 'train', seed=5, duration=3.0), sys.argv[1])")


def _render_on(cpus: set[int], path: Path) -> bytes:
    """Render one video in a fresh process allowed to run on ``cpus`` only."""
    import os
    import subprocess
    import sys
    subprocess.run([sys.executable, "-c", _RENDER, str(path)], check=True, timeout=120,
                   preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    return path.read_bytes()


def test_the_same_video_is_the_same_bytes_on_one_or_all_cores(tmp_path):
    """The corpus does not depend on how many CPUs the generating process may use (x264's
    automatic threads made it: with 1 core and with 2 the same spec gave other bytes)."""
    import os
    cpus = sorted(os.sched_getaffinity(0))
    one = _render_on({cpus[0]}, tmp_path / "one.mp4")
    again = _render_on({cpus[0]}, tmp_path / "again.mp4")
    every = _render_on(set(cpus), tmp_path / "all.mp4")
    assert one == again
    assert one == every, f"bytes differ between 1 and {len(cpus)} CPUs"


def test_shift_is_one_both_sync_models_can_find():
    """The shifted videos' shift lies on a Synchformer class centre and on the paper's
    classifier's search grid, inside its search and not at its edge: a shift off either grid
    or beyond +-0.6 s could never be agreed on, so repair could never undo it."""
    from filters import sampling
    from filters.synchformer import offset_grid
    shifts = np.asarray(sampling.offset_shifts_s())
    assert np.isclose(np.abs(offset_grid() - synth.SHIFT_S), 0).any()
    assert np.isclose(np.abs(shifts - synth.SHIFT_S), 0).any()
    assert np.isclose(np.abs(shifts + synth.SHIFT_S), 0).any()
    assert synth.SHIFT_S <= shifts.max() - 0.1 and synth.SHIFT_S >= 0.1
    signs = {np.sign(s.audio_offset) for s in synth.corpus_specs(32, seed=0) if s.kind == "flash_click_shifted"}
    assert signs == {-1.0, 1.0}           # the demo holds audio both late and early
