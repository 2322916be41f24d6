"""The small cases of issue 23: an empty HTTP body, a 403 bot-check page, a garbage weight
file, a class folder starting with '-'. Servers on 127.0.0.1 only."""
from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from curate.demo.loopback import LoopbackServer
from curate.ops.fetch import DownloadOptions, download_source
from curate.reports.ledger import availability
from manifests.source_lists import folder_name

FAST = dict(backoff=0.01, retries=2, socket_timeout=5.0)


@pytest.fixture(autouse=True)
def _scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_SCRATCH", str(tmp_path / "scratch"))


def test_a_zero_length_body_is_empty_response_and_not_retried(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "empty.mp4").write_bytes(b"")
    with LoopbackServer(tmp_path / "www") as srv:
        row = {"source_id": "empty_000000_000003", "url": srv.url("empty.mp4"), "start": 0, "end": 3}
        d = download_source(row, tmp_path / "media", DownloadOptions(**FAST))
        once = len(srv.requests)
        download_source(row, tmp_path / "media", DownloadOptions(**{**FAST, "retries": 0}))
    assert (d["status"], d["reason"]) == ("failed", "empty_response"), d
    assert len(srv.requests) == 2 * once          # retries=2 asked no more than retries=0
    assert availability("failed", "empty_response", d["error"]) == "empty_response"


def _serve_403(page: bytes):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(403)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.mark.parametrize("page,reason", [
    (b"<html>Our systems have detected unusual traffic from your computer network. "
     b"Please solve this CAPTCHA.</html>", "bot_check"),
    (b"<html>Forbidden: you may not read this file.</html>", "http_error"),
])
def test_a_403_whose_page_is_a_bot_check_is_recorded_bot_check(tmp_path, page, reason):
    srv = _serve_403(page)
    try:
        row = {"source_id": "forbid_000000_000003", "start": 0, "end": 3,
               "url": f"http://127.0.0.1:{srv.server_address[1]}/v.mp4"}
        d = download_source(row, tmp_path / "media", DownloadOptions(**FAST))
    finally:
        srv.shutdown()
        srv.server_close()
    assert (d["status"], d["reason"]) == ("failed", reason), d
    assert "403" in d["error"]


def test_a_garbage_weight_file_is_not_a_checkpoint(tmp_path):
    from sync_classifier.model import _torch_load
    f = tmp_path / "weights.pt"
    f.write_bytes(b"GARBAGE!" * 200)
    with pytest.raises(ValueError) as e:
        _torch_load(f, "--sync-checkpoint")
    assert "is not a checkpoint" in str(e.value) and "--sync-checkpoint" in str(e.value)
    assert "--trust-checkpoint" not in str(e.value)


@pytest.mark.parametrize("label,folder", [("-y", "y"), ("--rm -rf", "rm_-rf"), ("a-b", "a-b")])
def test_class_folders_never_start_with_a_dash(label, folder):
    assert folder_name(label) == folder


def test_a_label_of_dashes_only_gives_no_folder():
    with pytest.raises(ValueError, match="empty class folder"):
        folder_name("---")


def test_a_missing_yt_dlp_stops_the_stage_instead_of_failing_the_source(tmp_path, monkeypatch):
    import sys
    from manifests.faults import EnvironmentFault
    monkeypatch.setitem(sys.modules, "yt_dlp", None)        # import yt_dlp -> ImportError
    row = {"source_id": "a_000000_000003", "url": "http://127.0.0.1:9/a.mp4", "start": 0, "end": 3}
    with pytest.raises(EnvironmentFault, match="yt-dlp is not installed .*pip install yt-dlp"):
        download_source(row, tmp_path / "media", DownloadOptions(**FAST))
