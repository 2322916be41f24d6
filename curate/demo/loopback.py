"""A loopback-only static file server for tests and the offline demo.

yt-dlp is exercised for real against it (DESIGN section 10). It serves GET and HEAD with
Content-Length and single byte ranges (yt-dlp and ffmpeg resume and seek with them), and
can inject faults: paths that answer 404, paths whose body stops after half the file
(announcing the full length, as a dropped connection does), and paths that stall before
the body (a timeout), and paths that answer ``429 Too Many Requests`` (with an optional
Retry-After) a given number of times before serving; ``throttle_s`` makes the whole server
answer 429 to every request for that many seconds after its first request (a site throttling
a crawler). Every request is recorded (with its time and answer), so a test can assert that a
rerun did not touch the network, or how many requests a throttle saw.
"""
from __future__ import annotations

import ipaddress
import logging
import mimetypes
import os
import re
import socket
import threading
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable, Iterator, Mapping

log = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    at: float = 0.0            # time.time() when it came
    throttled: bool = False    # answered 429 by the whole-server throttle


class LoopbackServer:
    """``with LoopbackServer(root) as srv: srv.base_url ...``; faults are mutable sets of
    URL paths relative to the root (``"videos/a.mp4"``)."""

    def __init__(self, root: str | os.PathLike, host: str = "127.0.0.1",
                 not_found: Iterable[str] = (), truncated: Iterable[str] = (),
                 stall: Iterable[str] = (), stall_seconds: float = 5.0,
                 rate_limited: Mapping[str, tuple[int, str | None]] | None = None,
                 throttle_s: float = 0.0, throttle_retry_after: str | None = None) -> None:
        if not _is_loopback(host):
            raise ValueError(f"loopback server refuses to bind non-loopback host {host!r}")
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is not a directory")
        self.host = host
        self.not_found: set[str] = {p.lstrip("/") for p in not_found}
        self.truncated: set[str] = {p.lstrip("/") for p in truncated}
        self.stall: set[str] = {p.lstrip("/") for p in stall}
        self.stall_seconds = stall_seconds
        #: path -> [429 answers still to give, Retry-After header value or None]
        self.rate_limited: dict[str, list] = {p.lstrip("/"): [int(n), ra] for p, (n, ra)
                                              in (rate_limited or {}).items()}
        self.throttle_s = float(throttle_s)
        self.throttle_retry_after = throttle_retry_after
        self.throttle_from: float | None = None     # the first request's time
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server is not running")
        host, port = self._httpd.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def url(self, rel: str) -> str:
        return self.base_url + urllib.parse.quote(rel.lstrip("/"))

    def count(self, rel: str | None = None) -> int:
        """Requests seen so far, all or for one path."""
        with self._lock:
            if rel is None:
                return len(self.requests)
            return sum(r.path == rel.lstrip("/") for r in self.requests)

    def start(self) -> "LoopbackServer":
        handler = type("Handler", (_Handler,), {"server_state": self})
        server_cls = ThreadingHTTPServer
        if ":" in self.host:
            server_cls = type("V6Server", (ThreadingHTTPServer,),
                              {"address_family": socket.AF_INET6})
        self._httpd = server_cls((self.host, 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="loopback-http",
                                        daemon=True)
        self._thread.start()
        log.debug("loopback server on %s serving %s", self.base_url, self.root)
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _record(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)

    def _throttled_now(self) -> bool:
        """Whether the whole-server throttle answers this request 429."""
        if not self.throttle_s:
            return False
        now = time.monotonic()
        with self._lock:
            if self.throttle_from is None:
                self.throttle_from = now
            return now - self.throttle_from < self.throttle_s

    def throttled_answers(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.throttled]

    def _take_429(self, rel: str) -> bool:
        """Whether this request of ``rel`` is answered 429 (counts one down)."""
        with self._lock:
            left = self.rate_limited.get(rel)
            if not left or left[0] <= 0:
                return False
            left[0] -= 1
            return True


@contextmanager
def serve_directory(root: str | os.PathLike, host: str = "127.0.0.1",
                    **faults) -> Iterator[str]:
    """Serve ``root`` on an ephemeral loopback port; yields the base URL (ends with ``/``).

    ``faults`` are LoopbackServer's keyword arguments (not_found, truncated, stall,
    stall_seconds, rate_limited). Use LoopbackServer directly to inspect requests.
    """
    with LoopbackServer(root, host, **faults) as srv:
        yield srv.base_url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server_state: LoopbackServer   # set on the per-server subclass
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:   # noqa: A002 - stdlib signature
        log.debug("loopback %s - %s", self.address_string(), format % args)

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            # clients hang up mid-request on purpose (extractor probes, seeks, timeouts)
            self.close_connection = True

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _resolve(self) -> tuple[str, Path | None]:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        target = (self.server_state.root / rel).resolve()
        # never serve outside root (.. or symlinks pointing out)
        if not target.is_relative_to(self.server_state.root) or not target.is_file():
            return rel, None
        return rel, target

    def _serve(self, body: bool) -> None:
        state = self.server_state
        rel, target = self._resolve()
        throttled = state._throttled_now()
        state._record(Request(self.command, rel, self.headers.get("Range"), time.time(), throttled))
        if throttled:
            self._error(429, "Too Many Requests", retry_after=state.throttle_retry_after)
            return
        if target is None or rel in state.not_found:
            self._error(404, "Not Found")
            return
        if state._take_429(rel):
            self._error(429, "Too Many Requests", retry_after=state.rate_limited[rel][1])
            return
        size = target.stat().st_size
        first, last = 0, size - 1
        rng = self.headers.get("Range")
        status = 200
        if rng:
            parsed = _parse_range(rng, size)
            if parsed is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, last = parsed
            status = 206
        length = last - first + 1
        self.send_response(status)
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if not body:
            return
        if rel in state.stall:
            # hold the connection without sending a byte: the client's read times out
            state._closing.wait(state.stall_seconds)
        stop = last + 1
        if rel in state.truncated:
            # announced the full length, but the "connection drops" half way through the file
            stop = min(stop, size // 2)
            self.close_connection = True
        self._send_file(target, first, stop)

    def _send_file(self, target: Path, first: int, stop: int) -> None:
        try:
            with open(target, "rb") as f:
                f.seek(first)
                pos = first
                while pos < stop:
                    chunk = f.read(min(_CHUNK, stop - pos))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    pos += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            # clients (yt-dlp's extractor probe, ffmpeg seeking) hang up mid-body on purpose
            self.close_connection = True

    def _error(self, code: int, msg: str, retry_after: str | None = None) -> None:
        data = msg.encode()
        self.send_response(code)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One byte range ``bytes=a-b`` / ``a-`` / ``-n`` -> (first, last) inclusive, or None."""
    m = _RANGE.match(header.strip())
    if not m or size == 0:
        return None
    a, b = m.groups()
    if a == "" and b == "":
        return None
    if a == "":
        n = int(b)
        return (max(size - n, 0), size - 1) if n > 0 else None
    first = int(a)
    last = min(int(b), size - 1) if b else size - 1
    if first >= size or last < first:
        return None
    return first, last

