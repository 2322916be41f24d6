"""One health control for every download worker (pure logic; no Ray here).

YouTube throttles a crawler as a whole: a 429 seen by one worker means every worker's next
request will get one too. So every download request of a run asks one ``HealthControl``
for permission first and tells it the outcome afterwards (``curate.ops.fetch``). The
control keeps one state for all workers:

- ``open``: requests go, at most ``rate_per_s`` per second over all workers (a token bucket);
- ``paused``: ``threshold`` throttled (HTTP 429) or server-error (5xx) answers within
  ``window_s`` seconds pause *every* download: no new request anywhere until ``resumes_at``
  (exponential backoff with jitter, at least the server's Retry-After);
- ``probing``: after the pause exactly one request (the probe) goes; when it succeeds the
  control reopens, when it is throttled again the next pause is twice as long (capped at
  ``max_pause_s``);
- ``stopped``: downloads stop for the rest of the run, either because nothing but bot checks
  came back for ``bot_stop_s`` seconds (at least ``bot_stop_n`` in a row), or because one
  throttle episode lasted ``give_up_s``. Every later request is refused with one clear
  message; the run goes on with the sources it has.

Cookies: with several cookie files the control names the one to use (``cookie`` of a
permit); a bot check seen with the current file moves every worker on to the next.

The download stage declares one ``HealthControl`` as a stage run's shared object
(``curate.execution.shared``: in process for the serial executor, one Ray actor otherwise) and
wraps its per-item function so each download gets a ``Gate`` over it
(``curate.stagekit.gated``). Without one (a plain ``download_source`` call) there is no gate
and each source handles its own retries.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

#: what a worker reports after a request
OUTCOMES = ("ok", "throttled", "server_error", "bot_check", "other")
STATES = ("open", "paused", "probing", "stopped")
#: how often a waiting worker asks again while a probe is out
PROBE_POLL_S = 0.25
#: how long a worker sleeps at most between two questions while paused (sees a stop soon)
MAX_POLL_S = 1.0


@dataclass
class HealthConfig:
    """Parameters of the health control (recipe ``download.health``; none changes a result)."""
    rate_per_s: float | None = None   # requests per second over all workers; None: no cap
    threshold: int = 3                # trouble answers (429 / 5xx) within window_s that pause
    window_s: float = 30.0
    pause_s: float = 2.0              # first pause; doubles per failed probe
    max_pause_s: float = 900.0
    jitter: float = 0.25              # a pause is x uniform[1 - jitter, 1 + jitter)
    probe_timeout_s: float = 600.0    # a probe that never reports: another one goes
    bot_stop_n: int = 20              # bot checks in a row (no download ok between) ...
    bot_stop_s: float = 600.0         # ... over at least this long stop the downloads
    give_up_s: float = 6 * 3600.0     # one throttle episode this long stops the downloads
    n_cookies: int = 0                # cookie files to rotate through after bot checks
    seed: int | None = None           # jitter seed (tests)

    def __post_init__(self) -> None:
        if self.rate_per_s is not None and not self.rate_per_s > 0:
            raise ValueError(f"rate_per_s must be > 0, not {self.rate_per_s}")
        if self.threshold < 1 or self.bot_stop_n < 1:
            raise ValueError("threshold and bot_stop_n must be >= 1")
        if min(self.window_s, self.pause_s, self.max_pause_s, self.bot_stop_s, self.give_up_s,
               self.probe_timeout_s) < 0 or not 0 <= self.jitter < 1:
            raise ValueError("health times must be >= 0 and jitter in [0, 1)")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "HealthConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown download.health options {sorted(unknown)}; "
                             f"known: {sorted(known)}")
        return cls(**d)


def stage_config(health: dict[str, Any] | None, rate_per_s: float | None) -> dict[str, Any] | None:
    """The control's config for a stage (its ``health`` block and global rate), or None when
    the stage has neither (no control, no gate)."""
    if health is None and not rate_per_s:
        return None
    config = dict(health or {})
    if rate_per_s and not config.get("rate_per_s"):
        config["rate_per_s"] = float(rate_per_s)
    HealthConfig.from_dict(config)     # a bad option fails in the driver, before any work
    return config


class HealthControl:
    """The state machine. ``clock`` (monotonic) and ``wall`` (epoch seconds, for display)
    are injectable so the logic is tested without waiting."""

    def __init__(self, config: HealthConfig | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.cfg = config or HealthConfig()
        self.clock, self.wall = clock, wall
        self.rng = random.Random(self.cfg.seed)
        self.state = "open"
        self.why: str | None = None
        self.message: str | None = None
        self.stop_reason: str | None = None
        self.since = self.clock()          # when the current state began
        self.episode_start: float | None = None
        self.resumes_at: float | None = None
        self.level = 0                     # backoff exponent of the current episode
        self.reopened_at: float | None = None
        self.trouble: list[float] = []     # times of recent 429 / 5xx answers (open state)
        self.next_free = self.clock()      # token bucket
        self.tickets = 0
        self.probe_ticket: int | None = None
        self.probe_sent = 0.0
        self.bot_first: float | None = None
        self.bot_n = 0
        self.cookie = 0
        self.paused_s = 0.0                # total seconds not open (paused or probing)
        self.version = 0                   # bumps on every state change
        self.counts = {"requests": 0, "probes": 0, "granted_while_paused": 0, "pauses": 0,
                       **{o: 0 for o in OUTCOMES}, "throttled_while_paused": 0}
        self.history: list[dict[str, Any]] = []   # finished pauses (last 20)

    # -- worker side
    def acquire(self) -> dict[str, Any]:
        """May a request go now? ``go`` with ``wait`` (seconds to sleep first, rate cap) or
        not (``wait``: ask again after it); ``stop`` (a message) when downloads stopped."""
        now = self.clock()
        self._check_give_up(now)
        if self.state == "stopped":
            return self._answer(False, 0.0, stop=self.message)
        if self.state == "paused":
            if now < (self.resumes_at or now):
                return self._answer(False, self.resumes_at - now)
            self._set("probing", now, self.why)
        if self.state == "probing":
            if self.probe_ticket is not None and now - self.probe_sent < self.cfg.probe_timeout_s:
                return self._answer(False, PROBE_POLL_S)
            self.tickets += 1
            self.probe_ticket, self.probe_sent = self.tickets, now
            self.counts["probes"] += 1
            self.counts["requests"] += 1
            self.counts["granted_while_paused"] += 1
            return self._answer(True, 0.0, probe=True, ticket=self.tickets)
        wait = 0.0
        if self.cfg.rate_per_s:
            start = max(now, self.next_free)
            self.next_free = start + 1.0 / self.cfg.rate_per_s
            wait = start - now
        self.tickets += 1
        self.counts["requests"] += 1
        return self._answer(True, wait, ticket=self.tickets)

    def report(self, ticket: int | None, outcome: str, retry_after: float | None = None,
               cookie: int | None = None, detail: str | None = None) -> dict[str, Any]:
        """The outcome of the request ``ticket`` (``OUTCOMES``); returns ``state()``."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; one of {OUTCOMES}")
        now = self.clock()
        self.counts[outcome] += 1
        probe = ticket is not None and ticket == self.probe_ticket
        if probe:
            self.probe_ticket = None
        if outcome == "ok":
            self.bot_first, self.bot_n = None, 0
            if probe and self.state == "probing":
                self._reopen(now)
        elif outcome in ("throttled", "server_error"):
            self._trouble(now, outcome, probe, retry_after, detail)
        elif outcome == "bot_check":
            self._bot_check(now, cookie)
        elif probe and self.state == "probing":
            # a 404 or a removed video says nothing about the throttle: the next request probes
            pass
        self._check_give_up(now)
        return self.state_dict()

    # -- transitions
    def _trouble(self, now: float, outcome: str, probe: bool, retry_after: float | None,
                 detail: str | None) -> None:
        what = "throttled answers (HTTP 429)" if outcome == "throttled" else "server errors (5xx)"
        if self.state in ("paused", "probing") and not probe:
            # an answer to a request sent before the pause: honour its Retry-After only
            self.counts["throttled_while_paused"] += 1
            if self.state == "paused" and retry_after:
                self.resumes_at = max(self.resumes_at or now, now + retry_after)
            return
        if probe:
            self.level += 1
            self._pause(now, f"probe {what[:-1]}" + (f": {detail}" if detail else ""), retry_after)
            return
        if self.state != "open":
            return
        self.trouble = [t for t in self.trouble if now - t <= self.cfg.window_s] + [now]
        if len(self.trouble) >= self.cfg.threshold:
            recent = self.reopened_at is not None and now - self.reopened_at < self.cfg.window_s
            self.level = self.level + 1 if recent else 0
            why = f"{len(self.trouble)} {what} within {self.cfg.window_s:g} s"
            self.episode_start = self.episode_start if recent else now
            self._pause(now, why, retry_after)

    def _pause(self, now: float, why: str, retry_after: float | None) -> None:
        base = min(self.cfg.max_pause_s, self.cfg.pause_s * 2 ** self.level)
        j = self.cfg.jitter
        dur = base * (1 - j + 2 * j * self.rng.random())
        dur = max(dur, float(retry_after or 0.0))
        if self.episode_start is None:
            self.episode_start = now
        self.resumes_at = now + dur
        self.counts["pauses"] += 1
        self.trouble = []
        self._set("paused", now, why)
        log.warning("downloads paused: %s; one probe in %.1f s", why, dur)

    def _reopen(self, now: float) -> None:
        self.history = (self.history + [{"paused_at": self._wall_of(self.episode_start or now),
                                         "reopened_at": self.wall(), "why": self.why,
                                         "seconds": round(now - (self.episode_start or now), 3)}])[-20:]
        self.reopened_at = now
        self.episode_start, self.resumes_at = None, None
        self.trouble = []
        self.next_free = now
        self._set("open", now, None)
        log.warning("downloads resumed: the probe got through")

    def _bot_check(self, now: float, cookie: int | None) -> None:
        if self.bot_first is None:
            self.bot_first = now
        self.bot_n += 1
        if self.cfg.n_cookies > 1 and (cookie is None or cookie == self.cookie):
            self.cookie = (self.cookie + 1) % self.cfg.n_cookies
            self.version += 1
            log.warning("bot check: using cookie file %d of %d from now on", self.cookie + 1,
                        self.cfg.n_cookies)
        if self.bot_n >= self.cfg.bot_stop_n and now - self.bot_first >= self.cfg.bot_stop_s:
            mins = (now - self.bot_first) / 60
            self._stop(now, "bot_check",
                       f"downloads stopped: {self.bot_n} bot checks in a row over {mins:.1f} min "
                       "and no download got through (YouTube wants a signed-in session to "
                       "confirm you're not a bot). Pass --cookies FILE (cookies.txt of a "
                       "signed-in browser; several files are used in turn), lower "
                       "--max-requests-per-s, then rerun with --retry-failed. The run goes "
                       "on with the sources downloaded so far.")

    def _check_give_up(self, now: float) -> None:
        if self.state in ("paused", "probing") and self.episode_start is not None \
                and now - self.episode_start >= self.cfg.give_up_s:
            self._stop(now, "throttled",
                       f"downloads stopped: throttled for {(now - self.episode_start) / 60:.1f} "
                       f"min ({self.why}). Lower --max-requests-per-s or --download-workers and "
                       "rerun with --retry-failed later. The run goes on with the sources "
                       "downloaded so far.")

    def _stop(self, now: float, reason: str, message: str) -> None:
        if self.state == "stopped":
            return
        self.stop_reason, self.message = reason, message
        self.resumes_at = None
        self._set("stopped", now, reason)
        log.error("%s", message)

    def _set(self, state: str, now: float, why: str | None) -> None:
        if self.state in ("paused", "probing"):
            self.paused_s += now - self.since
        if state != self.state or why != self.why:
            self.version += 1
        self.state, self.why, self.since = state, why, now

    # -- reading
    def _answer(self, go: bool, wait: float, probe: bool = False, ticket: int | None = None,
                stop: str | None = None) -> dict[str, Any]:
        return {"go": go, "wait": max(float(wait), 0.0), "probe": probe, "ticket": ticket,
                "cookie": self.cookie, "stop": stop, "reason": self.stop_reason if stop else None}

    def _wall_of(self, t: float | None) -> float | None:
        return None if t is None else self.wall() + (t - self.clock())

    def paused_total(self) -> float:
        """Seconds spent not open (paused or probing) so far, the current stretch included."""
        extra = self.clock() - self.since if self.state in ("paused", "probing") else 0.0
        return self.paused_s + extra

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "HealthControl":
        """A control from a stage's options (``stage_config``)."""
        return cls(HealthConfig.from_dict(config))

    def status(self) -> dict[str, Any]:
        """What the executor polls of a shared object (``paused_s``: time every worker was held)."""
        return self.state_dict()

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for the console, ``curate stats`` and the engine."""
        return {"state": self.state, "why": self.why, "since": self._wall_of(self.since),
                "paused_since": self._wall_of(self.episode_start) if self.state != "open" else None,
                "resumes_at": self._wall_of(self.resumes_at) if self.state == "paused" else None,
                "message": self.message, "stop_reason": self.stop_reason, "cookie": self.cookie,
                "paused_s": round(self.paused_total(), 3), "version": self.version,
                "counts": dict(self.counts), "history": list(self.history),
                "bot_checks_in_a_row": self.bot_n,
                "config": asdict(self.cfg), "at": self.wall()}


# ----------------------------------------------------------------------------- workers

class GateClosed(Exception):
    """Downloads stopped for the run: ``reason`` (bot_check / throttled) and the message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class Permit:
    ticket: int | None
    probe: bool
    cookie: int


class Gate:
    """A worker's side of the control: ``acquire`` blocks until a request may go."""

    def __init__(self, ask: Callable[[], dict], tell: Callable[..., dict],
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.ask, self.tell, self.sleep = ask, tell, sleep

    def acquire(self) -> Permit:
        while True:
            d = self.ask()
            if d["stop"]:
                raise GateClosed(d["reason"] or "error", d["stop"])
            if d["go"]:
                if d["wait"] > 0:
                    self.sleep(d["wait"])
                return Permit(d["ticket"], d["probe"], d["cookie"])
            self.sleep(min(max(d["wait"], 0.01), MAX_POLL_S))

    def report(self, permit: Permit | None, outcome: str, retry_after: float | None = None,
               detail: str | None = None) -> dict:
        return self.tell(permit.ticket if permit else None, outcome, retry_after,
                         permit.cookie if permit else None, detail)


# ----------------------------------------------------------------------------- display

STATE_FILE = Path("work") / "download" / "health.json"


def write_state(out: str | Path, state: dict[str, Any]) -> None:
    """``<out>/work/download/health.json`` (atomic), read by ``curate stats``."""
    from manifests.atomic import write_json
    write_json(Path(out) / STATE_FILE, state)


def read_state(out: str | Path) -> dict[str, Any] | None:
    import json
    p = Path(out) / STATE_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _clock(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def format_state(state: dict[str, Any]) -> str:
    """One line: ``paused since 10:02:03 (16 throttled answers ...), resumes at 10:02:07``."""
    c = state.get("counts", {})
    tail = (f"{c.get('requests', 0)} requests, {c.get('throttled', 0)} throttled, "
            f"{c.get('server_error', 0)} server errors, {c.get('bot_check', 0)} bot checks, "
            f"{c.get('pauses', 0)} pauses, {c.get('probes', 0)} probes, "
            f"{state.get('paused_s', 0):.0f} s paused")
    s = state.get("state")
    if s == "paused":
        head = (f"paused since {_clock(state.get('paused_since'))} ({state.get('why')}), "
                f"resumes at {_clock(state.get('resumes_at'))} with one probe")
    elif s == "probing":
        head = f"paused since {_clock(state.get('paused_since'))} ({state.get('why')}), probing now"
    elif s == "stopped":
        head = f"STOPPED at {_clock(state.get('since'))}: {state.get('message')}"
    else:
        head = "open"
    return f"{head} [{tail}]"


def download_health(block: dict[str, Any] | None, download_opts: dict[str, Any]) -> dict[str, Any]:
    """The download stage's health options: the recipe's ``engine.download_health`` block,
    with the number of cookie files to rotate through."""
    config = dict(block or {})
    c = download_opts.get("cookiefile")
    n = 0 if not c else 1 if isinstance(c, str) else len(c)
    if n > 1:
        config["n_cookies"] = n
    HealthConfig.from_dict(config)
    return config


def record_state(out: str | Path, state: dict[str, Any]) -> None:
    """Driver side, on every change: keep it for ``curate stats`` and say it on the console."""
    write_state(out, state)
    if state.get("state") != "open" or state.get("counts", {}).get("pauses"):
        log.warning("download health: %s", format_state(state))


class StateRecorder:
    """``on_state`` of the shared control (``curate.execution.shared.Shared``): records each
    new state (a new ``version``) and the last one of a run (``final``: counts move on
    without a version change)."""

    def __init__(self, out: str | Path) -> None:
        self.out, self.version = str(out), None

    def __call__(self, state: dict[str, Any], final: bool = False) -> None:
        if final or state.get("version") != self.version:
            self.version = state.get("version")
            record_state(self.out, state)


def echo_summary(out: str | Path, echo: Callable[[str], None] | None) -> None:
    """At the end of a download stage run: the stop message (once), or the pauses it had."""
    st = read_state(out)
    if not st or echo is None:
        return
    if st.get("state") == "stopped":
        echo(st.get("message") or "downloads stopped")
    elif st.get("counts", {}).get("pauses") or st.get("state") != "open":
        echo(f"download health: {format_state(st)}")
