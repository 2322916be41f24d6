"""Shot detection on generated videos with known cuts, and windowing inside shots."""
from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from curate.ops.shots import detect_shots, shot_rows
from curate.ops.windows import make_windows
from manifests.schemas import ALL_SCORES, NOTE_COLUMNS, SHOTS, WINDOWS, to_table

FPS = 25
CUTS = (2.0, 5.2, 7.6)
DURATION = 10.0
SIZE = "160x120"


def _ffmpeg(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory) -> Path:
    """10 s at 25 fps: testsrc2 | mandelbrot | smptebars | flat colour, cuts at CUTS."""
    out = tmp_path_factory.mktemp("shots") / "cuts.mp4"
    bounds = (0.0, *CUTS, DURATION)
    lens = [round(b - a, 3) for a, b in zip(bounds, bounds[1:])]
    sources = [
        f"testsrc2=size={SIZE}:rate={FPS}",
        f"mandelbrot=size={SIZE}:rate={FPS}",
        f"smptebars=size={SIZE}:rate={FPS}",
        f"color=c=0x2040c0:size={SIZE}:rate={FPS}",
    ]
    args: list[str] = []
    for src in sources:
        args += ["-f", "lavfi", "-i", src]
    trims = ";".join(f"[{i}:v]trim=duration={d},setpts=PTS-STARTPTS[v{i}]" for i, d in enumerate(lens))
    graph = trims + ";" + "".join(f"[v{i}]" for i in range(4)) + "concat=n=4:v=1:a=0,format=yuv420p[v]"
    # one keyframe for the whole file, so the detector cannot lean on GOP boundaries
    _ffmpeg([*args, "-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-g", "300", str(out)])
    return out


@pytest.fixture(scope="module")
def static_video(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shots") / "static.mp4"
    _ffmpeg(["-f", "lavfi", "-i", f"smptebars=size={SIZE}:rate={FPS}:duration=4",
             "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)])
    return out


# ------------------------------------------------------------------------- shots

def test_detect_shots_finds_cuts(cut_video):
    shots = detect_shots(cut_video)
    assert len(shots) == len(CUTS) + 1
    detected = [s for s, _ in shots[1:]]
    for got, want in zip(detected, CUTS):
        assert abs(got - want) <= 2 / FPS, (detected, CUTS)
    # shots tile the whole file without gaps
    assert shots[0][0] == 0.0
    assert abs(shots[-1][1] - DURATION) <= 1 / FPS
    assert all(a[1] == b[0] for a, b in zip(shots, shots[1:]))


def test_static_video_is_one_shot(static_video):
    shots = detect_shots(static_video)
    assert len(shots) == 1
    assert shots[0][0] == 0.0 and abs(shots[0][1] - 4.0) <= 1 / FPS


def test_threshold_is_passed_through(cut_video):
    # no frame difference reaches 255: the cut video becomes one shot
    assert len(detect_shots(cut_video, threshold=255.0)) == 1


def test_shot_rows(cut_video):
    rows = shot_rows("AbC-d_e_000030_000040", cut_video)
    assert to_table(rows, SHOTS).num_rows == 4
    assert [r["shot_id"] for r in rows] == [f"AbC-d_e_000030_000040_shot{k:03d}" for k in range(4)]
    assert [r["shot_index"] for r in rows] == [0, 1, 2, 3]
    assert all(r["status"] == "ok" and r["error"] is None for r in rows)


def test_corrupt_and_missing_files_give_failed_rows(tmp_path, cut_video):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(cut_video.read_bytes()[:2000])  # header-less: moov is at the end
    audio_only = tmp_path / "audio.m4a"
    _ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(audio_only)])
    for path in (corrupt, truncated, audio_only, tmp_path / "missing.mp4"):
        rows = shot_rows("src_000000_000010", path)
        assert len(rows) == 1, path
        (row,) = rows
        assert row["status"] == "failed" and row["shot_index"] is None and row["shot_id"] is None
        assert row["source_id"] == "src_000000_000010"
        assert row["error"] and row["error"].startswith("shots: ")
        to_table(rows, SHOTS)
    # an unsafe source id is refused the same way, not raised
    (row,) = shot_rows("../x", cut_video)
    assert row["status"] == "failed" and "unsafe id" in row["error"]


# ------------------------------------------------------------------------- windows

def _shots(source: str, bounds_ms: list[int], failed: set[int] = frozenset()) -> list[dict]:
    return [
        {"shot_id": f"{source}_shot{k:03d}", "source_id": source, "shot_index": k,
         "start": a / 1000, "end": b / 1000, "status": "failed" if k in failed else "ok",
         "error": "x" if k in failed else None}
        for k, (a, b) in enumerate(zip(bounds_ms, bounds_ms[1:]))
    ]


def _expected_count(length_ms: int) -> int:
    # floor((L - 3) / 0.5) + 1 per shot, none when L < 3 (computed in integer ms)
    return (length_ms - 3000) // 500 + 1 if length_ms >= 3000 else 0


def _layouts() -> list[list[int]]:
    rng = random.Random(1234)
    fixed = [
        [0, 10000],                    # no cut
        [0, 2000, 5200, 7600, 10000],  # the generated video
        [0, 3000, 6000, 9000, 10000],  # shots of exactly 3 s
        [0, 2999, 6000, 9001, 10000],  # just under / over 3 s
        [40, 3540, 10000],             # starts not on the stride grid
    ]
    randoms = []
    for _ in range(40):
        cuts = sorted(rng.sample(range(1, 10000), rng.randint(0, 6)))
        randoms.append([0, *cuts, 10000])
    return fixed + randoms


@pytest.mark.parametrize("bounds", _layouts())
def test_windows_stay_inside_shots(bounds):
    shots = _shots("src_000000_000010", bounds)
    rows = make_windows(shots, "dog_barking", "train")
    assert to_table(rows, WINDOWS).num_rows == len(rows)
    cuts = bounds[1:-1]
    by_shot = {s["shot_id"]: s for s in shots}
    for w in rows:
        shot = by_shot[w["shot_id"]]
        assert shot["start"] <= w["start"] and w["end"] <= shot["end"]
        assert not any(w["start"] < c / 1000 < w["end"] for c in cuts), (w, cuts)
        assert round((w["end"] - w["start"]) * 1000) == 3000
        # anchored at the shot start, 0.5-s steps, exact in ms
        assert (round(w["start"] * 1000) - round(shot["start"] * 1000)) % 500 == 0
        assert w["window_id"] == f"src_000000_000010_{round(w['start'] * 1000):06d}"
    for s in shots:
        n = sum(w["shot_id"] == s["shot_id"] for w in rows)
        assert n == _expected_count(round(s["end"] * 1000) - round(s["start"] * 1000))
    assert len({w["window_id"] for w in rows}) == len(rows)


def test_window_row_content():
    rows = make_windows(_shots("s_000000_000010", [0, 4000]), "hammering", "test")
    assert [(w["start"], w["end"]) for w in rows] == [(0.0, 3.0), (0.5, 3.5), (1.0, 4.0)]
    assert [w["window_id"] for w in rows] == ["s_000000_000010_000000", "s_000000_000010_000500",
                                              "s_000000_000010_001000"]
    w = rows[0]
    assert (w["class_name"], w["split"], w["status"], w["error"]) == ("hammering", "test", "ok", None)
    assert all(w[c] is None for c in (*ALL_SCORES, *NOTE_COLUMNS))


def test_windows_no_float_drift_and_params():
    # 0.1 + 0.2 = 0.30000000000000004: the window still starts at exactly 300 ms
    shot = {"shot_id": "s_shot000", "source_id": "s", "start": 0.1 + 0.2, "end": 3.3, "status": "ok"}
    (w,) = make_windows([shot], "c", "train")
    assert w["window_id"] == "s_000300" and w["start"] == 0.3 and w["end"] == 3.3
    rows = make_windows(_shots("s", [0, 10000]), "c", "train", length=2.0, stride=1.0)
    assert [w["start"] for w in rows] == [float(t) for t in range(9)]
    with pytest.raises(ValueError):
        make_windows([shot], "c", "train", stride=0)


def test_failed_shots_make_no_windows():
    shots = _shots("s", [0, 4000, 10000], failed={1})
    rows = make_windows(shots, "c", "train")
    assert {w["shot_id"] for w in rows} == {"s_shot000"}
    failed_row = {"shot_id": None, "source_id": "s", "shot_index": None, "start": None,
                  "end": None, "status": "failed", "error": "shots: boom"}
    assert make_windows([failed_row], "c", "train") == []


def test_end_to_end_windows_respect_detected_cuts(cut_video):
    rows = make_windows(shot_rows("v_000000_000010", cut_video), "dog_barking", "train")
    # shots of 2.0, 3.2, 2.4, 2.4 s: only the 3.2-s shot holds a 3-s window
    assert len(rows) == 1
    (w,) = rows
    assert w["shot_id"] == "v_000000_000010_shot001"
    assert not any(w["start"] < c < w["end"] for c in CUTS)
