"""One source fetched: the attempts under the run's gate, retries with backoff, and the
commit of the checked file and its sidecar."""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Mapping

from curate.ops.fetch import cache, segment, ytdlp
from curate.ops.fetch.errors import Failure, outcome
from curate.ops.fetch.options import DownloadOptions
from curate.ops.fetch.plan import Plan, complete, make_plan, validate
from curate.ops.fetch.rows import downloads_row, failed, join_notes, rendition_of
from curate.ops.health import Gate, GateClosed, Permit
from manifests.faults import fault_of
from manifests.names import safe_id
from manifests.scratch import scratch_dir
from manifests.schemas import STATUS_OK

log = logging.getLogger(__name__)


def download_source(row: Mapping[str, Any], media_dir: str | os.PathLike,
                    opts: DownloadOptions | None = None, gate: Gate | None = None) -> dict[str, Any]:
    """Fetch one source's segment to ``media_dir/<source_id>.mp4``; returns a DOWNLOADS row.

    ``gate``: the run's health control (``curate.ops.health``): every request asks it first and
    reports its outcome; a throttled source then waits with every other worker instead of
    spending its retries."""
    opts = opts or DownloadOptions()
    sid = row.get("source_id")
    if row.get("status") not in (None, STATUS_OK):
        # the sources stage already rejected this row; keep its reason, fetch nothing
        return failed(sid, "bad_input", f"source row {row.get('status')}: {row.get('error')}")
    try:
        sid = safe_id(sid)
    except ValueError as e:
        return failed(sid if isinstance(sid, str) else None, "bad_input", str(e))
    media_dir = Path(media_dir)
    target = media_dir / f"{sid}.mp4"
    cached = cache.cached_row(sid, target, opts, row)
    if cached is not None:
        return cached
    try:
        plan = make_plan(row, sid, opts)
    except Failure as f:
        return failed(sid, f.reason, f.message)
    media_dir.mkdir(parents=True, exist_ok=True)
    if gate is not None and plan.url is not None:
        ytdlp.import_yt_dlp()   # seconds in a fresh worker: before the gate's permit, not after
    return _with_retries(plan, target, opts, gate)


def _try_once(plan: Plan, target: Path, opts: DownloadOptions, gate: Gate | None,
              last: Failure, tried: bool) -> tuple[dict[str, Any] | None, Failure, Permit | None]:
    """One attempt under the gate: (the final downloads row -- the file, or the gate closed --
    or None, the failure of this attempt (else ``last``), the gate's permit)."""
    permit: Permit | None = None
    if gate is not None:
        try:
            permit = gate.acquire()
        except GateClosed as g:
            msg = f"{last.message}; {g.message}" if tried else f"not downloaded: {g.message}"
            return failed(plan.source_id, g.reason, msg), last, None
    cookies = opts.cookiefiles
    try_opts = opts
    if permit is not None and len(cookies) > 1:
        try_opts = dataclasses.replace(opts, cookiefile=cookies[permit.cookie % len(cookies)])
    try:
        facts, short, note = _attempt(plan, target, try_opts)
        if gate is not None:
            gate.report(permit, "ok")
        reason = "short" if short else "ok"
        return downloads_row(plan.source_id, str(target), STATUS_OK, reason, join_notes(short, note), facts,
                             rendition_of(plan.path, opts)), last, permit
    except Failure as f:
        return None, f, permit
    except Exception as e:   # noqa: BLE001 - a bug or an odd input must not lose the batch
        fault = fault_of(e)
        if fault is not None:      # the machine's, not the source's: the stage stops
            if gate is not None:
                gate.report(permit, "other")
            raise fault from e
        log.exception("download %s: unexpected error", plan.source_id)
        return None, Failure("error", f"{type(e).__name__}: {e}"), permit


def _with_retries(plan: Plan, target: Path, opts: DownloadOptions,
                  gate: Gate | None = None) -> dict[str, Any]:
    last = Failure("error", "no attempt made")
    waited, timeouts, attempt, cookie_tries, throttles = 0.0, 0, 0, 0, 0
    tried = False
    cookies = opts.cookiefiles
    while True:
        row, last, permit = _try_once(plan, target, opts, gate, last, tried)
        if row is not None:
            return row
        tried = True
        if gate is not None:
            state = gate.report(permit, outcome(last), last.retry_after, last.message[:200])
            if last.reason == "throttled":
                # the control pauses every worker; this source waits with them, its own
                # tries are not spent (a give-up of the control ends it, as ``throttled``).
                # Below the control's threshold it backs off alone, as without a control.
                throttles += 1
                if state.get("state") == "open":
                    time.sleep(min(retry_delay(min(throttles - 1, 6), opts.backoff, last.retry_after),
                                   max(opts.max_wait, 0.0)))
                continue
            if last.reason == "bot_check" and cookie_tries < len(cookies) - 1:
                cookie_tries += 1      # the control moved on to the next cookie file
                continue
        if not last.transient or attempt >= opts.retries:
            break
        # a server that stalled once mostly stalls again: don't hold the worker for
        # retries x socket_timeout
        timeouts += last.reason == "timeout"
        if timeouts > opts.timeout_retries:
            break
        delay = retry_delay(attempt, opts.backoff, last.retry_after)
        if waited + delay > opts.max_wait:
            last.message += (f" (gave up: waiting {delay:.0f} s more would pass max_wait "
                             f"{opts.max_wait:g} s)")
            break
        log.info("download %s: %s (%s), retry %d/%d in %.2f s", plan.source_id, last.reason,
                 last.message, attempt + 1, opts.retries, delay)
        time.sleep(delay)
        waited += delay
        attempt += 1
    log.warning("download %s failed: %s: %s", plan.source_id, last.reason, last.message)
    return failed(plan.source_id, last.reason, last.message)


def retry_delay(attempt: int, backoff: float, retry_after: float | None = None,
                rng: random.Random | None = None) -> float:
    """Seconds before retry ``attempt + 1``: the server's Retry-After when it gave one, else
    exponential backoff with full jitter in [0.5, 1.5) x ``backoff * 2**attempt`` (many
    workers hit by one 429 must not come back in lock step)."""
    if retry_after is not None:
        return max(float(retry_after), 0.0)
    r = (rng or random).random()
    return backoff * 2 ** attempt * (0.5 + r)


def _attempt(plan: Plan, target: Path, opts: DownloadOptions
             ) -> tuple[dict[str, Any], str | None, str | None]:
    """One try: fetch into a private scratch folder outside the output
    (``manifests.scratch``), check, commit (the file, then its sidecar).

    Returns the probe facts with the segment times, a ``short: ...`` note or None, and a
    ``re-encoded: ...`` note or None."""
    with scratch_dir(target.stem) as tmp:
        out = tmp / "segment.mp4"
        declared: float | None = None      # the source's own duration, when we saw the file
        # ``probed``: the probe of ``out`` its writer made (``out`` is unchanged since)
        if plan.path is not None:
            declared, seg, probed = segment.cut(plan.path, plan.start, plan.end, out, opts)
        else:
            fetched, already_cut = ytdlp.fetch(plan, tmp / "dl", opts)
            if already_cut:
                seg, probed = segment.remux(fetched, plan.start, plan.end, out, opts)
            else:
                declared, seg, probed = segment.cut(fetched, plan.start, plan.end, out, opts)
        facts = {**validate(out, probed, opts), **cache.segment_facts(seg)}
        short = complete(plan, declared, facts)
        cache.commit(out, target, seg)
        return facts, short, seg.get("note")
