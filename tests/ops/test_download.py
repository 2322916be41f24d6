"""The download stage, with real yt-dlp against the loopback server (no external network)."""
from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from curate.ops import fetch as dl
from curate.ops.fetch import errors, segment, source, ytdlp
from curate.demo import synth
from curate.ops.fetch import DownloadOptions, download_source
from curate.demo.loopback import LoopbackServer, serve_directory
from decoding.media import decode_grid, probe
from manifests.schemas import DOWNLOADS, to_table

FAST = dict(backoff=0.01, retries=2, socket_timeout=5.0)
COPIES = ("ok", "cut", "ranges", "rerun", "small", "trunc", "gone", "stall", "damaged")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("www")
    videos = root / "videos"
    videos.mkdir()
    events = [0.5, 1.5, 2.75, 3.5, 4.25, 5.5, 6.25, 7.5, 8.75, 9.5]
    truth = synth.make_event_video(videos / "base.mp4", duration=10.0, event_times=events,
                                   seed=1)
    for name in COPIES:
        shutil.copyfile(videos / "base.mp4", videos / f"{name}.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=320x240:rate=24:duration=4", "-an", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(videos / "mute.mp4")], check=True)
    return root, truth


@pytest.fixture(scope="module")
def server(media):
    root, _ = media
    with LoopbackServer(root, not_found={"videos/gone.mp4"}, truncated={"videos/trunc.mp4"},
                        stall={"videos/stall.mp4"}, stall_seconds=3.0) as srv:
        yield srv


def _row(server: LoopbackServer, name: str, start: float = 0, end: float = 10) -> dict:
    return {"source_id": f"{name}_{int(start):06d}_{int(end):06d}",
            "url": server.url(f"videos/{name}.mp4"), "start": start, "end": end}


def _gets(server: LoopbackServer, name: str) -> int:
    return sum(r.method == "GET" for r in server.requests if r.path == f"videos/{name}.mp4")


def _leftovers(media_dir: Path) -> list[str]:
    return sorted(p.name for p in media_dir.iterdir() if p.name.startswith("."))


def _onsets(audio: np.ndarray, expected, sr: int = 16000) -> list[float]:
    a = np.abs(audio)
    out = []
    for t in expected:
        i0 = max(int((t - 0.05) * sr), 0)
        hits = np.flatnonzero(a[i0:int((t + 0.15) * sr)] > 0.2)
        out.append((i0 + hits[0]) / sr if len(hits) else float("nan"))
    return out


def test_success_downloads_and_probes(server, tmp_path):
    row = download_source(_row(server, "ok"), tmp_path, DownloadOptions(**FAST))
    assert (row["status"], row["reason"], row["error"]) == ("ok", "ok", None)
    target = tmp_path / "ok_000000_000010.mp4"
    assert row["path"] == str(target) and target.is_file()
    assert abs(row["duration"] - 10.0) < 0.1
    assert (row["width"], row["height"], row["has_audio"]) == (320, 240, True)
    assert row["sample_rate"] == 44100 and row["audio_channels"] == 2
    assert _leftovers(tmp_path) == []
    to_table([row], DOWNLOADS)          # the row fits the declared schema


def _spy(monkeypatch, name: str) -> list:
    calls: list = []
    real = getattr(segment, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(segment, name, wrapper)
    return calls


def test_direct_file_is_cut_to_segment(server, media, tmp_path, monkeypatch):
    _, truth = media
    cuts, remuxes = _spy(monkeypatch, "cut"), _spy(monkeypatch, "remux")
    row = download_source(_row(server, "cut", 2, 5), tmp_path, DownloadOptions(**FAST))
    assert row["status"] == "ok", row
    # auto mode: a direct file is fetched whole, then cut locally
    assert len(cuts) == 1 and cuts[0][1:3] == (2.0, 5.0) and remuxes == []
    assert abs(row["duration"] - 3.0) < 0.1
    # a stream copy on the source's clock: the segment lies at [2, 5) inside the file, and
    # decoding it by those times puts the beeps at segment times
    assert (row["seg_start"], row["seg_end"], row["stream_copy"]) == (2.0, 5.0, True)
    g = decode_grid(row["path"], 0.0, row["duration"], offset=row["seg_start"])
    expected = [t - 2 for t in truth["audio_event_times"] if 2 <= t < 4.8]
    assert np.allclose(_onsets(g.audio, expected), expected, atol=0.02)


def test_download_ranges_path_with_yt_dlp(server, media, tmp_path, monkeypatch):
    """The path YouTube takes (download_ranges, yt-dlp's ffmpeg stream-copying the range
    with the source's timestamps), forced on."""
    _, truth = media
    cuts, remuxes = _spy(monkeypatch, "cut"), _spy(monkeypatch, "remux")
    opts = DownloadOptions(use_ranges="always", **FAST)
    row = download_source(_row(server, "ranges", 3, 6), tmp_path, opts)
    assert row["status"] == "ok", row
    assert cuts == [] and len(remuxes) == 1             # yt-dlp cut it
    assert abs(row["duration"] - 3.0) < 0.15
    assert row["seg_start"] == 3.0 and row["stream_copy"] is True and row["error"] is None
    g = decode_grid(row["path"], 0.0, row["duration"], offset=row["seg_start"])
    expected = [t - 3 for t in truth["audio_event_times"] if 3 <= t < 5.8]
    assert np.allclose(_onsets(g.audio, expected), expected, atol=0.03)


def test_404_is_http_error_without_retries(server, tmp_path):
    before = _gets(server, "gone")
    row = download_source(_row(server, "gone"), tmp_path, DownloadOptions(**FAST))
    assert (row["status"], row["reason"]) == ("failed", "http_error")
    assert "404" in row["error"] and row["path"] is None and row["duration"] is None
    assert _gets(server, "gone") - before == 1          # permanent: not retried
    assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_fails_and_leaves_nothing(server, tmp_path, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(source.time, "sleep", sleeps.append)
    before = _gets(server, "trunc")
    row = download_source(_row(server, "trunc"), tmp_path, DownloadOptions(**FAST))
    assert row["status"] == "failed" and row["reason"] in ("http_error", "corrupt")
    assert row["error"] and row["path"] is None
    assert not (tmp_path / "trunc_000000_000010.mp4").exists()
    assert list(tmp_path.iterdir()) == []               # no partial or temp file
    # transient: 1 try + 2 retries, each try = extractor GET + download GET
    assert _gets(server, "trunc") - before == 6
    # exponential backoff with jitter: attempt k waits backoff * 2**k * [0.5, 1.5)
    assert len(sleeps) == 2
    assert 0.005 <= sleeps[0] < 0.015 and 0.01 <= sleeps[1] < 0.03, sleeps


def test_stalled_server_is_timeout(server, tmp_path):
    opts = DownloadOptions(backoff=0.01, retries=1, socket_timeout=0.5)
    row = download_source(_row(server, "stall"), tmp_path, opts)
    assert (row["status"], row["reason"]) == ("failed", "timeout"), row
    assert _gets(server, "stall") >= 4                  # retried once
    assert list(tmp_path.iterdir()) == []


def test_rerun_returns_cached_without_network(server, tmp_path):
    opts = DownloadOptions(**FAST)
    first = download_source(_row(server, "rerun"), tmp_path, opts)
    assert first["reason"] == "ok"
    n = server.count()
    mtime = Path(first["path"]).stat().st_mtime_ns
    second = download_source(_row(server, "rerun"), tmp_path, opts)
    assert (second["status"], second["reason"]) == ("ok", "cached")
    assert server.count() == n                          # the server saw nothing
    assert Path(second["path"]).stat().st_mtime_ns == mtime
    assert second["duration"] == first["duration"]


def test_damaged_cached_file_is_fetched_again(server, tmp_path):
    target = tmp_path / "damaged_000000_000010.mp4"
    target.write_bytes(b"\x00" * 1000)
    row = download_source(_row(server, "damaged"), tmp_path, DownloadOptions(**FAST))
    assert (row["status"], row["reason"]) == ("ok", "ok")
    assert probe(target)["duration"] > 9.9


def test_too_small(server, tmp_path):
    opts = DownloadOptions(min_width=640, min_height=360, **FAST)
    row = download_source(_row(server, "small"), tmp_path, opts)
    assert (row["status"], row["reason"]) == ("failed", "too_small")
    assert "320x240" in row["error"]
    assert list(tmp_path.iterdir()) == []


def test_no_audio(server, tmp_path):
    row = download_source(_row(server, "mute", 0, 4), tmp_path, DownloadOptions(**FAST))
    assert (row["status"], row["reason"]) == ("failed", "no_audio")
    assert list(tmp_path.iterdir()) == []
    ok = download_source(_row(server, "mute", 0, 4), tmp_path,
                         DownloadOptions(require_audio=False, **FAST))
    assert (ok["status"], ok["has_audio"]) == ("ok", False)


def test_local_path_row_needs_no_network(server, media, tmp_path):
    root, truth = media
    n = server.count()
    row = {"source_id": "local_000001_000005", "path": str(root / "videos" / "base.mp4"),
           "start": 1, "end": 5}
    out = download_source(row, tmp_path, DownloadOptions(**FAST))
    assert (out["status"], out["reason"]) == ("ok", "ok")
    assert abs(out["duration"] - 4.0) < 0.1
    g = decode_grid(out["path"], 0.0, out["duration"], offset=out["seg_start"])
    expected = [t - 1 for t in truth["audio_event_times"] if 1 <= t < 4.8]
    assert np.allclose(_onsets(g.audio, expected), expected, atol=0.02)
    # a whole-file local row is stream-copied: same frames, same length
    whole = download_source({"source_id": "local_000000_000010", "path": "videos/base.mp4",
                             "start": 0, "end": 10}, tmp_path,
                            DownloadOptions(source_root=str(root), **FAST))
    assert whole["status"] == "ok" and abs(whole["duration"] - 10.0) < 0.05
    assert server.count() == n
    missing = download_source({"source_id": "gone_000000_000010", "path": str(root / "nope.mp4"),
                               "start": 0, "end": 10}, tmp_path, DownloadOptions(**FAST))
    assert (missing["status"], missing["reason"]) == ("failed", "unavailable")


@pytest.mark.parametrize("row, fragment", [
    ({"source_id": "../../etc/passwd", "url": "http://127.0.0.1:9/x.mp4"}, "unsafe id"),
    ({"source_id": "a/b", "url": "http://127.0.0.1:9/x.mp4"}, "unsafe id"),
    ({"source_id": None, "url": "http://127.0.0.1:9/x.mp4"}, "unsafe id"),
    ({"source_id": "x_000000_000010", "ytid": "abc;rm -rf", "start": 0, "end": 10}, "unsafe id"),
    ({"source_id": "x_000000_000010", "start": 0, "end": 10}, "neither"),
    ({"source_id": "x_000000_000010", "url": "ftp://host/x.mp4"}, "http or https"),
    ({"source_id": "x_000000_000010", "url": "http://h/x.mp4", "start": 5, "end": 2}, "segment"),
    ({"source_id": "x_000000_000010", "url": "http://h/x.mp4", "start": "soon"}, "not a number"),
    ({"source_id": None, "status": "failed", "error": "bad start 'x'"}, "bad start"),
])
def test_bad_input(row, fragment, tmp_path):
    out = download_source(row, tmp_path, DownloadOptions(**FAST))
    assert (out["status"], out["reason"]) == ("failed", "bad_input")
    assert fragment in out["error"]
    assert list(tmp_path.iterdir()) == []


def test_classification_of_site_messages():
    from yt_dlp.utils import DownloadError
    cases = {
        "ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader":
            ("unavailable", False),
        "ERROR: [youtube] abc: Private video. Sign in if you've been granted access":
            ("unavailable", False),
        "ERROR: unable to download video data: HTTP Error 403: Forbidden": ("http_error", False),
        "ERROR: unable to download video data: HTTP Error 503: Service Unavailable":
            ("http_error", True),
        "ERROR: [youtube] abc: Read timed out.": ("timeout", True),
        "ERROR: Unsupported URL: http://example.com/": ("bad_input", False),
        "ERROR: something nobody expected": ("error", False),
    }
    for msg, (reason, transient) in cases.items():
        f = errors.classify(DownloadError(msg))
        assert (f.reason, f.transient) == (reason, transient), msg
        assert not f.message.startswith("ERROR")


def test_options_are_validated():
    with pytest.raises(ValueError):
        DownloadOptions(min_height=1080, max_height=720)
    with pytest.raises(ValueError):
        DownloadOptions(use_ranges="sometimes")
    with pytest.raises(ValueError):
        DownloadOptions(url_template="https://example.com/")
    opts = DownloadOptions(proxy="http://p:1", ydl_opts={"retries": 7})
    p = ytdlp.ydl_params(opts, Path("/x"), "s")
    assert p["cachedir"] is False and p["proxy"] == "http://p:1" and p["retries"] == 7
    assert "[height<=?720]" in p["format"]


# ---------------------------------------------------------------------------- loopback

def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_loopback_ranges_head_and_traversal(media):
    root, _ = media
    data = (root / "videos" / "ok.mp4").read_bytes()
    with serve_directory(root) as base:
        assert base.startswith("http://127.0.0.1:")
        status, headers, body = _get(base + "videos/ok.mp4")
        assert status == 200 and body == data and int(headers["Content-Length"]) == len(data)
        status, headers, body = _get(base + "videos/ok.mp4", {"Range": "bytes=10-19"})
        assert status == 206 and body == data[10:20]
        assert headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        status, _, body = _get(base + "videos/ok.mp4", {"Range": "bytes=-5"})
        assert status == 206 and body == data[-5:]
        status, headers, _ = _get(base + "videos/ok.mp4", {"Range": f"bytes={len(data)}-"})
        assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
        req = urllib.request.Request(base + "videos/ok.mp4", method="HEAD")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200 and int(r.headers["Content-Length"]) == len(data)
            assert r.read() == b""
        assert _get(base + "videos/nothing.mp4")[0] == 404
        assert _get(base + "../" * 5 + "etc/passwd")[0] == 404
        assert _get(base + "videos/%2e%2e/%2e%2e/%2e%2e/etc/passwd")[0] == 404


def test_loopback_refuses_other_hosts(media):
    root, _ = media
    with pytest.raises(ValueError):
        LoopbackServer(root, host="0.0.0.0")
