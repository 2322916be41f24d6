"""One throttle, all workers: a loopback server answers 429 to everything for its first 8 s;
16 download workers (Ray) wait for it together and every source downloads afterwards.
(The 60-s throttle: benchmarks/bench_throttle.py.)"""
from __future__ import annotations

import sys

import pytest

from curate.config.run_state import new_run
from curate.build import stage_value
from curate.ops.health import read_state
from curate.demo.loopback import LoopbackServer
from curate.config.recipes import get_recipe
from testkit.avmedia import event_video_copies, served_sources_csv

WORKERS = 16
THROTTLE_S = 8.0


def run_throttled(tmp_path, throttle_s: float, n: int = WORKERS, executor=None):
    """16 sources, ``--download-workers 16``, a server throttling its first ``throttle_s``
    seconds (Retry-After: 1). Returns (rows, server, health state)."""
    from curate.execution.ray import RayExecutor

    media = tmp_path / "m"
    ids = event_video_copies(media, n)
    import yt_dlp  # noqa: F401 - before the clock starts
    out = tmp_path / "out"
    with LoopbackServer(media, throttle_s=throttle_s, throttle_retry_after="1") as srv:
        served_sources_csv(tmp_path / "s.csv", srv, ids)
        run = new_run(out, get_recipe("demo"), {"download_workers": WORKERS})
        stage_value("sources", out, run, sources=tmp_path / "s.csv")
        ex = executor or RayExecutor(workers=2)
        try:
            rows = stage_value("download", out, run, ex)
        finally:
            if executor is None:
                ex.shutdown()
    return rows, srv, read_state(out)


@pytest.mark.skipif(sys.platform != "linux", reason="local Ray")
def test_a_throttle_pauses_every_worker_and_all_sources_download_after(tmp_path):
    rows, srv, st = run_throttled(tmp_path, THROTTLE_S)
    assert [(r["status"], r["reason"]) for r in rows] == [("ok", "ok")] * WORKERS, \
        [(r["source_id"], r["reason"], r["error"]) for r in rows if r["status"] != "ok"]
    answered_429 = srv.throttled_answers()
    c = st["counts"]
    print(f"429 answers {len(answered_429)}, requests {srv.count()}, pauses {c['pauses']}, "
          f"probes {c['probes']}, paused {st['paused_s']:.1f} s")
    assert st["state"] == "open" and c["pauses"] >= 1 and c["probes"] >= 1
    # one round of the workers (plus the few retries before the pause tipped) plus the
    # probes, not a round per retry
    threshold = 3
    assert len(answered_429) <= WORKERS + threshold - 1 + c["probes"], len(answered_429)
    # while paused the control let nothing but the probes go (requests granted before the
    # pause may still reach the server late on a loaded machine: they are in the bound above)
    assert c["granted_while_paused"] == c["probes"]
    # each source: its throttled try (a few retried before the pause tipped), then one that
    # got through; no retry per worker per second
    assert c["requests"] <= 2 * WORKERS + threshold - 1 + c["probes"], c
    # throttled answers were never recorded as failures: nothing ended http_error
    assert not any(r["reason"] in ("http_error", "throttled") for r in rows)
