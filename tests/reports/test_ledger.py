"""The ledger of sources, `curate stats --against LIST` and `curate diff`, on reproduce runs
through real yt-dlp against a loopback server (tests/cli/test_reproduce_cli.py's setting)."""
from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from curate.build import reproduce
from curate.cli import app
from curate.reports.ledger import against, availability, diff_runs, read_ledger
from curate.demo.loopback import LoopbackServer
from curate.execution.local import LocalExecutor
from curate.demo.synth import make_event_video
from manifests.schemas import read_rows

# 12 segments shaped like the release (ids with '-' and '_', times like 2.5 / 3.25, a clip
# shorter than 3 s); 9 segments with 3 clips, 3 with one clip: 30 lines
CLASSES = ["dog_barking", "playing_violin__fiddle", "hammering", "lions_roaring",
           "frog_croaking", "baby_babbling__crying"]
YTIDS = ["AbC-dEf_GhI", "_x9-Yz_Q0wE", "Zz_9__zz-aa", "L1on-Roar_0", "fr0g_CROAK-", "B-a_b-y_123",
         "Q-w_E-r_T1y", "m0nKey_-_Z9", "Hh-hh_Hh-h0", "one_Clip-A1", "one_Clip-B2", "one_Clip-C3"]
STARTS = [3, 0, 12, 5, 20, 15, 0, 7, 30, 0, 2, 9]
THREE = [("0.0", "3.0"), ("2.5", "6.0"), ("6.5", "10.0")]
ONE = [("1.25", "2.5")]
REMOVED = YTIDS[9:]          # the single-clip segments


def _lines() -> tuple[list[str], list[str]]:
    train, test = [], []
    for k, (ytid, s) in enumerate(zip(YTIDS, STARTS)):
        cls = CLASSES[k % len(CLASSES)]
        for j, (cs, ce) in enumerate(THREE if k < 9 else ONE):
            line = f"{cls}/{ytid}_{s:06d}_{s + 10:06d}_{cs}_{ce}.mp4"
            (test if k in (1, 5) and j == 2 else train).append(line)
    return train, test


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ledger")
    media = root / "media"
    media.mkdir()
    for ytid, s in zip(YTIDS, STARTS):
        if not (media / f"{s}.mp4").exists():
            make_event_video(media / f"{s}.mp4", duration=s + 10.0, size=(64, 48), fps=12, seed=2,
                             event_times=[s + 1.0, s + 3.0, s + 5.5, s + 8.0])
        shutil.copyfile(media / f"{s}.mp4", media / f"{ytid}.mp4")
    train, test = _lines()
    assert len(train) + len(test) == 30
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "test.txt").write_text("\n".join(test) + "\n")
    return root


def _reproduce(corpus, out, not_found=(), lists=None):
    lists = lists or [corpus / "train.txt", corpus / "test.txt"]
    with LoopbackServer(corpus / "media", not_found=not_found) as srv:
        reproduce(lists, out, LocalExecutor(), url_template=srv.base_url + "{ytid}.mp4",
                  echo=lambda s: None)


@pytest.fixture(scope="module")
def runs(corpus):
    full, gone = corpus / "full", corpus / "gone"
    _reproduce(corpus, full)
    _reproduce(corpus, gone, not_found={f"{y}.mp4" for y in REMOVED})
    return full, gone


def test_stats_against_reports_30_reproduced_and_27_with_3_removed(corpus, runs):
    full, gone = runs
    lists = [str(corpus / "train.txt"), str(corpus / "test.txt")]
    res = CliRunner().invoke(app, ["stats", str(full), "--against", lists[0], "--against", lists[1]])
    assert res.exit_code == 0, res.output
    assert "30 lines, 30 reproduced exactly, 0 could not be had" in res.output
    res = CliRunner().invoke(app, ["stats", str(gone), "--against", lists[0], "--against", lists[1]])
    assert res.exit_code == 0, res.output
    assert "30 lines, 27 reproduced exactly, 3 could not be had" in res.output
    rep = against(gone, lists)
    assert rep["by_reason"] == {"removed": 3}
    named = {r["name"].split("/")[1].rsplit("_", 4)[0] for r in rep["missing_lines"]}
    assert named == set(REMOVED)
    for r in rep["missing_lines"]:
        assert r["name"] in res.output and "404" in r["detail"]


def test_ledger_keeps_every_source_with_its_reason_across_reruns(corpus, runs):
    _, gone = runs
    led = read_ledger(gone)
    assert len(led) == 12
    assert {sid.rsplit("_", 2)[0] for sid, r in led.items() if r["availability"] == "removed"} == set(REMOVED)
    assert all(r["availability"] == "ok" for sid, r in led.items() if sid.rsplit("_", 2)[0] not in REMOVED)
    # a rerun over a list without the removed segments keeps their rows (not current)
    keep = [ln for ln in (corpus / "train.txt").read_text().splitlines()
            if not any(y in ln for y in REMOVED)]
    (corpus / "train_kept.txt").write_text("\n".join(keep) + "\n")
    _reproduce(corpus, gone, lists=[corpus / "train_kept.txt"])
    led2 = read_ledger(gone)
    assert set(led2) == set(led)
    gone_rows = [r for sid, r in led2.items() if sid.rsplit("_", 2)[0] in REMOVED]
    assert all(r["availability"] == "removed" and r["current"] is False for r in gone_rows)


def test_diff_of_two_runs_that_differ_by_one_removed_source(corpus, tmp_path):
    lines = [f"dog_barking/{y}_{s:06d}_{s + 10:06d}_1.0_4.0" for y, s in zip(YTIDS[:3], STARTS[:3])]
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n")
    a, b = tmp_path / "a", tmp_path / "b"
    _reproduce(corpus, a, lists=[tmp_path / "test.txt"])
    _reproduce(corpus, b, not_found={f"{YTIDS[1]}.mp4"}, lists=[tmp_path / "test.txt"])
    d = diff_runs(a, b)
    sid = f"{YTIDS[1]}_{STARTS[1]:06d}_{STARTS[1] + 10:06d}"
    assert list(d["sources"]) == ["ok -> removed"]
    assert [r["source_id"] for r in d["sources"]["ok -> removed"]] == [sid]
    assert d["clips"]["only_b"] == {}
    assert [(r["name"], r["split"]) for r in d["clips"]["only_a"]["source removed"]] == [(lines[1], "test")]
    assert diff_runs(a, a)["same"]
    res = CliRunner().invoke(app, ["diff", str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert "1 sources differ, 1 clips only in A, 0 clips only in B" in res.output
    assert sid in res.output and lines[1] in res.output
    # stats shows the availability from the ledger
    res = CliRunner().invoke(app, ["stats", str(b)])
    assert "sources by availability" in res.output and "removed" in res.output
    assert [r["status"] for r in read_rows(b, "selected")] == ["ok", "failed", "ok"]


def test_availability_codes_from_site_messages():
    cases = [
        ("ok", None, None, "ok"),
        ("failed", "unavailable", "[youtube] x: Private video. Sign in if you've been granted access", "private"),
        ("failed", "unavailable", "[youtube] x: Video unavailable. This video has been removed by the uploader", "removed"),
        ("failed", "unavailable", "[youtube] x: Video unavailable. The uploader has not made this video "
                                  "available in your country", "unavailable_in_region"),
        ("failed", "unavailable", "[youtube] x: Sign in to confirm your age. This video may be "
                                  "inappropriate for some users.", "age_restricted"),
        ("failed", "unavailable", "[youtube] x: This video is not available", "unavailable"),
        ("failed", "bot_check", "bot_check: pass --cookies ...", "bot_check"),
        ("failed", "throttled", "HTTP Error 429: Too Many Requests", "throttled"),
        ("failed", "timeout", "Read timed out.", "timeout"),
        ("failed", "http_error", "HTTP Error 404: Not Found", "removed"),
        ("failed", "http_error", "HTTP Error 503: Service Unavailable", "http_error"),
        ("failed", "corrupt", "moov atom not found", "bad_media"),
        ("failed", "partial", "decoded 4.04 of 10.00 s", "bad_media"),
        ("failed", "worker_died", "worker died", "error"),
    ]
    for status, reason, error, code in cases:
        assert availability(status, reason, error) == code, (reason, error)
