"""YouTube's JavaScript challenges: the shipped runtime reaches yt-dlp, yt-dlp itself reports it
usable, and an unsolved challenge is recorded as ``js_challenge`` with the fix. No network."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yt_dlp

from curate.ops.fetch import ytdlp
from curate.ops.fetch import DownloadOptions, download_source
from curate.ops.ytopts import JS_FIX, parse_js_runtime, shipped_js_runtime
from curate.reports.ledger import availability


def test_options_carry_the_shipped_runtime():
    import deno
    path = os.fsdecode(deno.find_deno_bin())
    params = ytdlp.ydl_params(DownloadOptions(), Path("/x"), "s")
    assert params["js_runtimes"] == {"deno": {"path": path}}
    assert shipped_js_runtime() == path and os.access(path, os.X_OK)
    # an explicit --js-runtime wins
    explicit = parse_js_runtime("node:/usr/bin/env")
    params = ytdlp.ydl_params(DownloadOptions(js_runtimes=explicit), Path("/x"), "s")
    assert params["js_runtimes"] == {"node": {"path": "/usr/bin/env"}}
    for bad in ("rhino", "deno:/no/such/deno"):
        with pytest.raises(ValueError, match="--js-runtime"):
            parse_js_runtime(bad)


def test_environment_has_the_solver_and_a_working_runtime(tmp_path):
    import yt_dlp_ejs.yt.solver as solver
    assert "jsc" in solver.core()          # the challenge-solver script itself
    env = {**os.environ, "DENO_DIR": str(tmp_path), "NO_COLOR": "1"}
    out = subprocess.run([shipped_js_runtime(), "eval", "console.log(6 * 7)"], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "42"


def test_yt_dlp_reports_the_runtime_available(no_network):
    """Ask yt-dlp, not our code: its YouTube extractor picks the JS clients only when one of
    its challenge providers is available (otherwise the deprecated JS-less mode)."""
    params = ytdlp.ydl_params(DownloadOptions(), Path("/x"), "s")
    with yt_dlp.YoutubeDL(params) as ydl:
        info = ydl._js_runtimes["deno"].info
        assert info is not None and info.supported, info
        ie = ydl.get_info_extractor("Youtube")
        ie.initialize()
        available = {name for name, p in ie._jsc_director.providers.items() if p.is_available()}
    assert "Deno" in available
    # the same question with a runtime that is not there: yt-dlp says none is available
    params["js_runtimes"] = {"deno": {"path": "/no/such/deno"}}
    with yt_dlp.YoutubeDL(params) as ydl:
        ie = ydl.get_info_extractor("Youtube")
        ie.initialize()
        assert not any(p.is_available() for p in ie._jsc_director.providers.values())


def _row() -> dict:
    return {"source_id": "abcdefghijk_000000_000010", "url": "http://127.0.0.1:9/v.mp4",
            "start": 0, "end": 10}


def test_challenge_error_class_is_js_challenge(monkeypatch, tmp_path, no_network):
    """yt-dlp's own JsChallengeProviderError, raised inside extraction, becomes a downloads
    row with reason js_challenge, the fix in its message, and that availability in the ledger."""
    from yt_dlp.extractor.generic import GenericIE
    from yt_dlp.extractor.youtube.jsc.provider import JsChallengeProviderError
    from yt_dlp.utils import ExtractorError

    def fail(self, url):
        raise ExtractorError("n challenge failed", cause=JsChallengeProviderError("solver crashed"))
    monkeypatch.setattr(GenericIE, "_real_extract", fail)
    row = download_source(_row(), tmp_path, DownloadOptions(retries=0))
    assert (row["status"], row["reason"]) == ("failed", "js_challenge"), row
    assert JS_FIX in row["error"]
    assert availability(row["status"], row["reason"], row["error"]) == "js_challenge"


def test_format_missing_after_challenge_warning_is_js_challenge(monkeypatch, tmp_path, no_network):
    """What YouTube really does: the solver fails with a warning, then no format is left."""
    from yt_dlp.extractor.generic import GenericIE
    from yt_dlp.utils import ExtractorError

    def fail(self, url):
        self.report_warning("n challenge solving failed: Some formats may be missing. Ensure "
                            "you have a supported JavaScript runtime and challenge solver script "
                            "distribution installed.")
        raise ExtractorError("Requested format is not available", expected=True)
    monkeypatch.setattr(GenericIE, "_real_extract", fail)
    row = download_source(_row(), tmp_path, DownloadOptions(retries=0))
    assert row["reason"] == "js_challenge", row
    assert JS_FIX in row["error"] and "Requested format is not available" in row["error"]

    # the same failure without the warning stays what it was
    def plain(self, url):
        raise ExtractorError("Requested format is not available", expected=True)
    monkeypatch.setattr(GenericIE, "_real_extract", plain)
    assert download_source(_row(), tmp_path / "b", DownloadOptions(retries=0))["reason"] == "unavailable"
