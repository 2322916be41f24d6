"""Bad-input corpus (issue 10 items 3, 7, 8): every input ends with a status and a reason a
person understands. Generated media, real yt-dlp against the loopback server."""
from __future__ import annotations

import email.utils
import subprocess
import time
import types
from pathlib import Path

import numpy as np
import pytest

from curate.ops import fetch as dl
from curate.ops.fetch import errors, source
from curate.ops.cut import cut_clip
from curate.ops.fetch import DownloadOptions, download_source
from curate.demo.loopback import LoopbackServer
from curate.ops.shots import shot_rows
from curate.ops.windows import make_windows
from decoding.media import NoVideoError, decode_clip, decode_grid, probe
from manifests.source_lists import read_generic, recipe_assigns_split, require_split
from shards.writer import Sample, split_groups, write_shards
from shards.verify import verify_run
from manifests.schemas import write_manifest

FAST = dict(backoff=0.01, retries=2, socket_timeout=5.0)


def _ff(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, capture_output=True)


def _av(path: Path, seconds: float, audio_seconds: float | None = None,
        size: str = "320x240", extra: tuple[str, ...] = ()) -> Path:
    """testsrc video + sine audio (audio as long as the video unless told), moov first."""
    a = audio_seconds if audio_seconds is not None else seconds
    _ff("-f", "lavfi", "-i", f"testsrc=size={size}:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={a}:sample_rate=44100",
        *extra, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
        "-movflags", "+faststart", str(path))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("www")
    v = root / "videos"
    v.mkdir()
    full = _av(v / "full.mp4", 10)
    data = full.read_bytes()
    (v / "trunc_index.mp4").write_bytes(data[: int(len(data) * 0.4)])   # moov first: index survives
    for name in ("limited", "limited_date", "limited_long", "stall"):
        (v / f"{name}.mp4").write_bytes(data)
    _av(v / "five.mp4", 5)
    _av(v / "one.mp4", 1)
    _av(v / "video_short.mp4", 4, audio_seconds=10)
    _ff("-f", "lavfi", "-i", "sine=frequency=440:duration=10", "-c:a", "aac", str(v / "audio_only.mp4"))
    return root


def _local(corpus: Path, name: str, start: float = 0, end: float = 10) -> dict:
    return {"source_id": f"{name}_{int(start):06d}_{int(end):06d}",
            "path": str(corpus / "videos" / f"{name}.mp4"), "start": start, "end": end}


def _url(srv: LoopbackServer, name: str, start: float = 0, end: float = 10) -> dict:
    return {"source_id": f"{name}_{int(start):06d}_{int(end):06d}",
            "url": srv.url(f"videos/{name}.mp4"), "start": start, "end": end}


# ---------------------------------------------------------------- durations

def test_truncated_file_with_index_is_partial_and_failed(corpus, tmp_path):
    row = download_source(_local(corpus, "trunc_index"), tmp_path, DownloadOptions(**FAST))
    assert (row["status"], row["reason"]) == ("failed", "partial"), row
    assert row["error"].startswith("decoded ") and "of 10.00 s" in row["error"]
    assert "truncated or damaged" in row["error"]
    assert not any(tmp_path.iterdir())            # nothing kept, no temp left


def test_truncated_file_decode_is_noted(corpus):
    g = decode_grid(corpus / "videos" / "trunc_index.mp4")
    assert len(g.frames) == 120                   # the grid is still filled ...
    assert len(g.notes) == 1 and g.notes[0].startswith("decoded ")   # ... and says so
    decoded = float(g.notes[0].split()[1])
    assert 2.0 < decoded < 6.0 and g.notes[0].endswith("of 10.00 s")


def test_five_second_file_asked_for_ten_is_ok_and_noted(corpus, tmp_path):
    row = download_source(_local(corpus, "five"), tmp_path, DownloadOptions(**FAST))
    assert (row["status"], row["reason"], row["error"]) == ("ok", "short", "short: 5.0 of 10.0 s")
    # a rerun finds the file and still says it is short
    again = download_source(_local(corpus, "five"), tmp_path, DownloadOptions(**FAST))
    assert (again["status"], again["reason"], again["error"]) == ("ok", "short", "short: 5.0 of 10.0 s")


def test_whole_ten_second_file_has_no_note(corpus, tmp_path):
    row = download_source(_local(corpus, "full"), tmp_path, DownloadOptions(**FAST))
    assert (row["status"], row["reason"], row["error"]) == ("ok", "ok", None)


def test_one_second_source_yields_no_window_with_the_reason(corpus):
    shots = shot_rows("one_000000_000010", corpus / "videos" / "one.mp4")
    windows = make_windows(shots, "cls", "train")
    assert windows == []
    assert [(s["status"], s["error"]) for s in shots] == [("skipped", "too_short: 1.0 s < 3 s window")]


def test_audio_only_is_no_video_not_corrupt(corpus, tmp_path):
    row = download_source(_local(corpus, "audio_only"), tmp_path, DownloadOptions(**FAST))
    assert (row["status"], row["reason"]) == ("failed", "no_video"), row
    assert "audio-only" in row["error"]
    with pytest.raises(NoVideoError):
        probe(corpus / "videos" / "audio_only.mp4")
    with pytest.raises(NoVideoError):
        decode_clip(corpus / "videos" / "audio_only.mp4", 0, 1)


# ---------------------------------------------------------------- network

def test_retry_after_parsing():
    assert dl.parse_retry_after("7") == 7.0
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= dl.parse_retry_after(date, now=now) <= 31
    assert dl.parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    assert dl.parse_retry_after("soon") is None and dl.parse_retry_after(None) is None


def test_backoff_is_jittered_and_retry_after_wins():
    import random
    rng = random.Random(1)
    delays = [dl.retry_delay(k, 1.0, rng=rng) for k in range(4) for _ in range(20)]
    for k in range(4):
        ds = delays[20 * k: 20 * k + 20]
        assert all(0.5 * 2 ** k <= d < 1.5 * 2 ** k for d in ds)
        assert len(set(ds)) == 20                  # not in lock step
    assert dl.retry_delay(0, 1.0, retry_after=12) == 12.0


def _fake_sleep(monkeypatch, sleeps: list[float]) -> None:
    """Record the download module's waits without waiting; other code (subprocess's wait
    loop, yt-dlp) keeps the real time.sleep."""
    fake = types.SimpleNamespace(sleep=sleeps.append, time=time.time)
    monkeypatch.setattr(source, "time", fake)


@pytest.fixture(scope="module")
def server(corpus):
    later = email.utils.formatdate(time.time() + 60, usegmt=True)
    import yt_dlp  # noqa: F401 - imported before any timing (seconds on a loaded machine)
    with LoopbackServer(corpus, stall={"videos/stall.mp4"}, stall_seconds=60.0,
                        rate_limited={"videos/limited.mp4": (1, "3"),
                                      "videos/limited_date.mp4": (1, later),
                                      "videos/limited_long.mp4": (5, "600")}) as srv:
        yield srv


def test_429_honours_retry_after_seconds(server, tmp_path, monkeypatch):
    sleeps: list[float] = []
    _fake_sleep(monkeypatch, sleeps)
    row = download_source(_url(server, "limited"), tmp_path, DownloadOptions(**FAST))
    assert (row["status"], row["reason"]) == ("ok", "ok"), row
    assert sleeps == [3.0]                         # the server's Retry-After, not 0.01


def test_429_honours_retry_after_date(server, tmp_path, monkeypatch):
    sleeps: list[float] = []
    _fake_sleep(monkeypatch, sleeps)
    row = download_source(_url(server, "limited_date"), tmp_path, DownloadOptions(**FAST))
    assert row["status"] == "ok", (row, sleeps)
    # the date (60 s after the server started, the sleep is not real), not 0.01 s of backoff
    assert sleeps and 30.0 < sleeps[0] <= 61.0, sleeps


def test_429_wait_is_bounded(server, tmp_path, monkeypatch):
    sleeps: list[float] = []
    _fake_sleep(monkeypatch, sleeps)
    row = download_source(_url(server, "limited_long"), tmp_path,
                          DownloadOptions(**{**FAST, "max_wait": 60}))
    assert (row["status"], row["reason"]) == ("failed", "throttled"), row     # never http_error
    assert "429" in row["error"] and "Retry-After 600 s" in row["error"]
    assert "max_wait 60 s" in row["error"] and sleeps == []


def test_stalled_url_ends_quickly_with_timeout(server, tmp_path):
    t0 = time.monotonic()
    row = download_source(_url(server, "stall"), tmp_path,
                          DownloadOptions(retries=0, socket_timeout=1.0))
    took = time.monotonic() - t0
    assert (row["status"], row["reason"]) == ("failed", "timeout"), row
    assert took < 20, took                        # not the server's 60-s stall
    with pytest.raises(ValueError):
        DownloadOptions(socket_timeout=0)


def test_stalled_url_is_retried_at_most_timeout_retries(server, tmp_path, monkeypatch):
    _fake_sleep(monkeypatch, [])
    tries: list[int] = []
    attempt = source._attempt

    def counted(*a, **kw):
        tries.append(1)
        return attempt(*a, **kw)
    monkeypatch.setattr(source, "_attempt", counted)
    row = download_source(_url(server, "stall"), tmp_path,
                          DownloadOptions(retries=5, socket_timeout=0.5, timeout_retries=1))
    assert row["reason"] == "timeout"
    assert len(tries) == 2                         # 1 try + 1 retry, not 1 + 5


def test_bot_check_is_classified():
    from yt_dlp.utils import DownloadError
    for msg in ("ERROR: [youtube] dQw4w9WgXcQ: Sign in to confirm you\u2019re not a bot. Use "
                "--cookies-from-browser or --cookies for the authentication.",
                "ERROR: [youtube] abc: Sign in to confirm you're not a bot"):
        f = errors.classify(DownloadError(msg))
        assert (f.reason, f.transient) == ("bot_check", False)
        assert f.message.startswith("bot_check: pass --cookies")
    # the age gate stays "unavailable"
    f = errors.classify(DownloadError("ERROR: [youtube] abc: Sign in to confirm your age"))
    assert f.reason == "unavailable"


# ---------------------------------------------------------------- empty split (item 3)

def test_empty_split_is_rejected_unless_the_recipe_assigns(tmp_path):
    csv = tmp_path / "s.csv"
    csv.write_text("id,url,start,end,label,split\n"
                   "aaa,http://x/a.mp4,0,10,dog,train\n"
                   "bbb,http://x/b.mp4,0,10,dog,\n")
    rows = require_split(read_generic(csv), assigned_by_recipe=False)
    assert [r["status"] for r in rows] == ["ok", "rejected"]
    assert rows[1]["error"].startswith("empty split:")
    kept = require_split(read_generic(csv), assigned_by_recipe=True)
    assert [r["status"] for r in kept] == ["ok", "ok"]
    assert recipe_assigns_split({"test_per_class": 10}) and recipe_assigns_split({"balanced_test": True})
    assert not recipe_assigns_split({"test_per_class": None, "balanced_test": False})


def test_shard_stage_helpers_survive_an_empty_split(tmp_path, corpus):
    rows = [{"key": "c-a_000000_000010_0p0_1p0", "split": "train", "status": "ok"},
            {"key": "c-b_000000_000010_0p0_1p0", "split": None, "status": "ok"},
            {"key": "c-c_000000_000010_0p0_1p0", "split": "test", "status": "ok"}]
    groups, bad = split_groups(rows)                # sorted({None, "train"}) raised TypeError
    assert list(groups) == ["test", "train"]
    assert [(b["key"], b["status"], b["error"]) for b in bad] == [
        ("c-b_000000_000010_0p0_1p0", "failed", "shard: no split")]
    with pytest.raises(ValueError, match="no split"):
        write_shards(tmp_path, [], None)
    # the verifier reads such a run without crashing: the failed row is not due
    clip = tmp_path / "c.mp4"
    cut_clip(corpus / "videos" / "full.mp4", clip, 0, 1, max_short_side=120)
    out = tmp_path / "run"
    shard_rows = []
    for split, rs in groups.items():
        shard_rows += write_shards(out, [Sample(key=r["key"], mp4=clip, meta={}, class_index=0,
                                                text="c", duration=1.0) for r in rs], split)
    write_manifest(out, "selected", [{"key": r["key"], "split": r["split"], "status": r["status"]}
                                     for r in [*sum(groups.values(), []), *bad]])
    write_manifest(out, "shards", shard_rows)
    assert verify_run(out)["ok"]


# ---------------------------------------------------------------- decode edge cases (item 8)

@pytest.fixture(scope="module")
def oriented(tmp_path_factory) -> dict[str, Path]:
    """160x90, white 40x30 box top-left on black; a rotate=90 copy and a SAR 2:1 encode."""
    d = tmp_path_factory.mktemp("orient")
    src = "color=black:size=160x90:rate=10:duration=1,drawbox=x=0:y=0:w=40:h=30:color=white:t=fill"
    _ff("-f", "lavfi", "-i", src, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(d / "base.mp4"))
    _ff("-i", str(d / "base.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(d / "rot.mp4"))
    _ff("-f", "lavfi", "-i", src, "-vf", "setsar=2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
        str(d / "sar.mp4"))
    return {"rot": d / "rot.mp4", "sar": d / "sar.mp4", "dir": d}


def _ffmpeg_frame(path: Path, w: int, h: int) -> np.ndarray:
    """ffmpeg's own upright rendering (it applies rotation itself), scaled to w x h."""
    res = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-frames:v", "1",
                          "-vf", f"scale={w}:{h}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         check=True, capture_output=True)
    return np.frombuffer(res.stdout, np.uint8).reshape(h, w, 3)


def test_rotation_is_applied(oriented):
    info = probe(oriented["rot"])
    assert (info["width"], info["height"], info["rotation"]) == (160, 90, 90)
    assert (info["display_width"], info["display_height"]) == (90, 160)
    g = decode_clip(oriented["rot"], 0, 1, fps=10, short_side=90, crop=None)
    assert g.frames.shape[1:] == (160, 90, 3)       # upright portrait
    ref = _ffmpeg_frame(oriented["rot"], 90, 160)
    assert np.abs(g.frames[0].astype(int) - ref).mean() < 6
    assert np.abs(np.rot90(g.frames[0], 2).astype(int) - ref).mean() > 30   # would catch a wrong turn
    assert g.frames[0][150, 5].mean() > 200 and g.frames[0][5, 5].mean() < 50


def test_non_square_pixels_are_scaled_to_display_aspect(oriented):
    info = probe(oriented["sar"])
    assert info["sar"] == 2.0 and (info["display_width"], info["display_height"]) == (320, 90)
    g = decode_clip(oriented["sar"], 0, 1, fps=10, short_side=90, crop=None)
    assert g.frames.shape[1:] == (90, 320, 3)
    row = g.frames[0][10, :, 0].astype(int)
    assert row[:75].min() > 200 and row[85:].max() < 50   # the 40-px box is 80 px wide on screen


def test_cut_keeps_rotated_and_anamorphic_video_upright(oriented):
    d = oriented["dir"]
    rot = probe(cut_clip(oriented["rot"], d / "rot_clip.mp4", 0, 1)["path"])
    assert (rot["display_width"], rot["display_height"]) == (90, 160)
    sar = probe(cut_clip(oriented["sar"], d / "sar_clip.mp4", 0, 1)["path"])
    assert (sar["width"], sar["height"], sar["sar"]) == (320, 90, 1.0)


def test_video_shorter_than_audio_is_noted(corpus):
    g = decode_grid(corpus / "videos" / "video_short.mp4")
    assert g.notes == ["video_short: video 4.0 s, audio 10.0 s"]
    assert len(g.frames) == 120 and g.has_audio
    ok = decode_grid(corpus / "videos" / "full.mp4")
    assert ok.notes == []
    assert ok.video_end is None and abs(g.video_end - 4.0) < 0.1


def test_score_stage_fails_windows_past_the_video_end_with_the_note(corpus):
    from curate.stages.score import past_video_end

    g = decode_grid(corpus / "videos" / "video_short.mp4")
    inside = {"window_id": "w0", "start": 0.5, "end": 3.5, "status": "ok", "error": None}
    past = {"window_id": "w1", "start": 3.0, "end": 6.0, "status": "ok", "error": None}
    assert past_video_end(inside, g) == inside
    row = past_video_end(past, g)
    assert row["status"] == "failed"
    assert row["error"] == "decode: video_short: video 4.0 s, audio 10.0 s; window past the video's end"
    full = decode_grid(corpus / "videos" / "full.mp4")
    assert past_video_end({**past, "end": 10.0}, full)["status"] == "ok"
