"""The download health control (curate/ops/health.py): pure logic on a fake clock, then the
download loop against a fake source that answers with YouTube's bot-check text."""
from __future__ import annotations

import pytest

from curate.ops import health
from curate.ops.health import Gate, GateClosed, HealthConfig, HealthControl


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _control(**kw) -> tuple[HealthControl, Clock]:
    clock = Clock()
    return HealthControl(HealthConfig(seed=0, **kw), clock=clock, wall=lambda: clock.t + 1e9), clock


def test_threshold_pauses_everyone_then_one_probe_reopens():
    c, clock = _control(threshold=3, pause_s=2.0, jitter=0.25)
    grants = [c.acquire() for _ in range(16)]          # one round of 16 workers
    assert all(g["go"] and not g["probe"] for g in grants)
    for g in grants[:2]:
        c.report(g["ticket"], "throttled")
    assert c.state == "open"
    c.report(grants[2]["ticket"], "throttled", retry_after=1.0)
    assert c.state == "paused"
    for g in grants[3:]:                                 # answers to requests sent before
        c.report(g["ticket"], "throttled", retry_after=1.0)
    assert c.state == "paused"
    # nobody goes while paused: every worker asking is told to wait
    waits = [c.acquire() for _ in range(16)]
    assert not any(w["go"] for w in waits)
    assert all(1.5 <= w["wait"] <= 2.5 for w in waits)  # 2 s x jitter [0.75, 1.25)
    clock.t += 2.6
    first = c.acquire()
    assert first["go"] and first["probe"]
    others = [c.acquire() for _ in range(15)]            # one probe only
    assert not any(o["go"] for o in others)
    c.report(first["ticket"], "ok")
    assert c.state == "open"
    assert c.acquire()["go"]
    st = c.state_dict()
    assert st["counts"]["probes"] == 1 and st["counts"]["granted_while_paused"] == 1
    assert st["counts"]["throttled"] == 16 and st["counts"]["pauses"] == 1
    assert st["history"] and st["history"][0]["seconds"] == pytest.approx(2.6)


def test_failed_probes_back_off_exponentially_and_honour_retry_after():
    c, clock = _control(threshold=1, pause_s=2.0, jitter=0.0, max_pause_s=10.0)
    c.report(c.acquire()["ticket"], "throttled")
    pauses = []
    for _ in range(5):
        pauses.append(c.resumes_at - clock.t)
        clock.t = c.resumes_at
        p = c.acquire()
        assert p["probe"]
        c.report(p["ticket"], "throttled")
    assert pauses == [2.0, 4.0, 8.0, 10.0, 10.0]          # doubling, capped
    clock.t = c.resumes_at
    p = c.acquire()
    c.report(p["ticket"], "throttled", retry_after=30.0)  # the server asks for longer
    assert c.resumes_at - clock.t == 30.0


def test_server_errors_pause_too_other_failures_do_not():
    c, _ = _control(threshold=2)
    for _ in range(5):
        c.report(c.acquire()["ticket"], "other")          # 404s, removed videos
    assert c.state == "open"
    c.report(c.acquire()["ticket"], "server_error")
    c.report(c.acquire()["ticket"], "server_error")
    assert c.state == "paused" and "5xx" in c.why


def test_trouble_outside_the_window_does_not_add_up():
    c, clock = _control(threshold=3, window_s=10.0)
    for _ in range(5):
        c.report(c.acquire()["ticket"], "throttled")
        clock.t += 6.0
    assert c.state == "open"


def test_rate_cap_spaces_requests():
    c, clock = _control(rate_per_s=4.0)
    waits = [c.acquire()["wait"] for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    clock.t += 10
    assert c.acquire()["wait"] == 0.0


def test_only_bot_checks_for_n_minutes_stop_downloading():
    c, clock = _control(bot_stop_n=3, bot_stop_s=120.0)
    for _ in range(5):                                  # many, but not for long enough
        c.report(c.acquire()["ticket"], "bot_check")
    assert c.state == "open"
    c.report(c.acquire()["ticket"], "ok")              # one success resets the streak
    clock.t += 200
    c.report(c.acquire()["ticket"], "bot_check")
    clock.t += 100
    c.report(c.acquire()["ticket"], "bot_check")
    assert c.state == "open"
    clock.t += 30
    c.report(c.acquire()["ticket"], "bot_check")
    assert c.state == "stopped" and c.stop_reason == "bot_check"
    a = c.acquire()
    assert not a["go"] and "--cookies" in a["stop"] and "--max-requests-per-s" in a["stop"]
    with pytest.raises(GateClosed) as e:
        Gate(c.acquire, c.report, sleep=lambda s: None).acquire()
    assert e.value.reason == "bot_check"


def test_cookie_files_rotate_once_per_bot_check_of_the_current_file():
    c, _ = _control(n_cookies=3)
    grants = [c.acquire() for _ in range(4)]
    assert {g["cookie"] for g in grants} == {0}
    for g in grants:                                    # 4 workers hit it with file 0
        c.report(g["ticket"], "bot_check", None, g["cookie"])
    assert c.cookie == 1                                # moved on once, not four times
    g = c.acquire()
    c.report(g["ticket"], "bot_check", None, g["cookie"])
    assert c.cookie == 2


def test_a_throttle_that_never_ends_gives_up_as_throttled():
    c, clock = _control(threshold=1, pause_s=1.0, jitter=0.0, give_up_s=50.0)
    c.report(c.acquire()["ticket"], "throttled")
    while c.state != "stopped":
        clock.t = max(clock.t + 1, c.resumes_at or clock.t)
        p = c.acquire()
        if p["go"]:
            c.report(p["ticket"], "throttled")
    assert c.stop_reason == "throttled" and "throttled for" in c.message


def test_gate_waits_while_paused_without_requests():
    c, clock = _control(threshold=1, pause_s=3.0, jitter=0.0)
    c.report(c.acquire()["ticket"], "throttled")
    slept = []

    def sleep(s):
        slept.append(s)
        clock.t += s
    permit = Gate(c.acquire, c.report, sleep=sleep).acquire()
    assert permit.probe and sum(slept) == pytest.approx(3.0)
    assert all(s <= health.MAX_POLL_S for s in slept)


def test_config_is_validated_and_state_formats(tmp_path):
    with pytest.raises(ValueError, match="unknown download.health"):
        HealthConfig.from_dict({"treshold": 3})
    with pytest.raises(ValueError):
        HealthConfig(threshold=0)
    c, _ = _control(threshold=1)
    c.report(c.acquire()["ticket"], "throttled")
    health.write_state(tmp_path, c.state_dict())
    line = health.format_state(health.read_state(tmp_path))
    assert line.startswith("paused since") and "resumes at" in line and "1 throttled" in line


# ------------------------------------------------------------------ the download loop

BOT_TEXT = ("ERROR: [youtube] dQw4w9WgXcQ: Sign in to confirm you\u2019re not a bot. Use "
            "--cookies-from-browser or --cookies for the authentication. See  "
            "https://github.com/yt-dlp/yt-dlp/wiki/FAQ#how-do-i-pass-cookies-to-yt-dlp  for how "
            "to manually pass cookies. Also see  https://github.com/yt-dlp/yt-dlp/wiki/Extractors"
            "#exporting-youtube-cookies  for tips on effectively exporting YouTube cookies")


def _fake_youtube(monkeypatch, calls: list, ok_with: str | None = None):
    """A fake source: yt-dlp's bot-check error, unless the cookie file is ``ok_with``."""
    from yt_dlp.utils import DownloadError
    from curate.ops.fetch import errors, ytdlp

    def fetch(plan, outdir, opts):
        calls.append((plan.source_id, opts.cookiefile))
        if ok_with is not None and opts.cookiefile == ok_with:
            raise errors.Failure("corrupt", "fake source: no media (but no bot check)")
        raise errors.classify(DownloadError(BOT_TEXT))
    monkeypatch.setattr(ytdlp, "fetch", fetch)


def _run_downloads(tmp_path, n: int, health_block: dict, options: dict | None = None):
    from curate.config.run_state import new_run
    from curate.build import stage_value
    from curate.config.recipes import get_recipe
    from curate.execution.local import LocalExecutor

    src = tmp_path / "s.csv"
    src.write_text("id,url,start,end,label,split\n" + "".join(
        f"v{i:02d},http://127.0.0.1:9/v{i:02d}.mp4,0,3,x,train\n" for i in range(n)))
    recipe = get_recipe("demo")
    recipe["engine"] = {**recipe["engine"], "download_health": health_block}
    out = tmp_path / "out"
    run = new_run(out, recipe, options or {})
    stage_value("sources", out, run, sources=src)
    echoed: list[str] = []
    rows = stage_value("download", out, run, LocalExecutor(), echo=echoed.append)
    return out, rows, echoed


def test_bot_checks_stop_the_downloads_after_n_with_one_message(tmp_path, monkeypatch):
    calls: list = []
    _fake_youtube(monkeypatch, calls)
    out, rows, echoed = _run_downloads(tmp_path, 10, {"bot_stop_n": 3, "bot_stop_s": 0.0})
    assert len(calls) == 3                              # then no request anywhere
    assert [r["reason"] for r in rows] == ["bot_check"] * 10
    assert all("pass --cookies" in r["error"] for r in rows[:3])
    assert all(r["error"].startswith("not downloaded: downloads stopped") or
               "downloads stopped" in r["error"] for r in rows[3:])
    stops = [e for e in echoed if e.startswith("downloads stopped")]
    assert len(stops) == 1 and "--cookies" in stops[0] and "goes on" in stops[0]
    st = health.read_state(out)
    assert st["state"] == "stopped" and st["counts"]["bot_check"] == 3
    # stats says it too
    from curate.reports.stats import collect, format_text
    assert "STOPPED" in format_text(collect(out))


def test_several_cookie_files_are_used_in_turn_after_a_bot_check(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    for p in (a, b):
        p.write_text("# Netscape HTTP Cookie File\n")
    calls: list = []
    _fake_youtube(monkeypatch, calls, ok_with=str(b))
    from curate.ops.ytopts import cookie_files
    _, rows, _ = _run_downloads(tmp_path, 4, {"bot_stop_n": 50},
                                {"cookiefile": cookie_files([str(a), str(b)])})
    # the first source hit the bot check with a.txt, then everyone used b.txt
    assert calls[0] == ("v00_000000_000003", str(a))
    assert [c[1] for c in calls[1:]] == [str(b)] * 4
    assert [r["reason"] for r in rows] == ["corrupt"] * 4


def test_extractor_args_allow_list():
    from curate.ops.fetch import DownloadOptions
    from curate.ops.fetch.ytdlp import ydl_params
    from curate.ops.ytopts import parse_extractor_args
    args = parse_extractor_args(["youtube:player_client=web,mweb;po_token=web.gvs+AbC/9=",
                                 "youtubepot-bgutilhttp:base_url=http://127.0.0.1:4416"])
    assert args == {"youtube": {"player_client": ["web", "mweb"], "po_token": ["web.gvs+AbC/9="]},
                    "youtubepot-bgutilhttp": {"base_url": ["http://127.0.0.1:4416"]}}
    from pathlib import Path
    p = ydl_params(DownloadOptions(extractor_args=args), Path("/x"), "s")
    assert p["extractor_args"]["youtube"]["po_token"] == ["web.gvs+AbC/9="]
    for bad in ("youtube:outtmpl=/etc/x", "nosuchsite:a=b", "youtube:player_client=a b",
                "youtube", "youtube:po_token"):
        with pytest.raises(ValueError, match="--yt-extractor-args"):
            parse_extractor_args([bad])
    with pytest.raises(ValueError, match="--yt-extractor-args"):
        DownloadOptions(extractor_args={"youtube": {"exec": ["rm"]}})


def test_cli_names_a_missing_cookie_file_and_a_refused_extractor_arg(tmp_path):
    from typer.testing import CliRunner
    from curate.cli import app
    res = CliRunner().invoke(app, ["download", str(tmp_path), "--cookies", str(tmp_path / "no.txt")])
    assert res.exit_code == 2 and "--cookies" in res.output and "no.txt" in res.output
    res = CliRunner().invoke(app, ["download", str(tmp_path), "--yt-extractor-args", "youtube:exec=x"])
    assert res.exit_code == 2 and "youtube:exec is not allowed" in res.output
