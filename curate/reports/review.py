"""Manual review of the selected clips (the seed's manual pass, seed 003 section 5.2).

The page shows the selected clips per class, best ranked first, each with a <video> player
and keep / reject buttons. Decisions are a JSON file ``{name: "keep" | "reject"}``; feed
them back with ``select_clips_table(..., decisions=load_decisions(path))``: rejected clips are
replaced by the next-ranked candidates of their class.

Two modes:
- ``serve_review``: a loopback-only (127.0.0.1) server: GET / (the page, rebuilt from the
  selected manifest and the saved decisions), GET /clips/<key>.mp4 (only keys of ok rows of
  the selected table, from ``<out>/media/clips/``; byte ranges supported for seeking),
  POST /decisions (JSON ``{name: "keep"|"reject"|null}``, merged into the file and saved
  atomically; null removes). Requests with a foreign Host or Origin header are refused
  (DNS-rebinding / cross-site posts), and POST needs ``Content-Type: application/json``.
- ``write_review_page``: a static page next to the output; a button downloads the decisions.
"""
from __future__ import annotations

import html
import json
import logging
import os
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from manifests.schemas import STATUS_OK, read_rows
from manifests.atomic import write_json, write_text

log = logging.getLogger(__name__)

DECISION_VALUES = ("keep", "reject")
MAX_POST_BYTES = 1 << 20
_CLIP_PATH = re.compile(r"^/clips/([A-Za-z0-9_-]+)\.mp4$")

_CSS = """body{font-family:sans-serif;margin:1.5em}.class{margin-bottom:2em}
.clips{display:flex;flex-wrap:wrap;gap:12px}.clip{border:3px solid #ccc;padding:6px;width:300px}
.clip.keep{border-color:#2a2}.clip.reject{border-color:#c22;opacity:.6}video{width:100%}
.meta{font-size:80%;word-break:break-all}#status{position:fixed;top:0;right:0;background:#ffd;
padding:4px 10px}"""

_JS = """
const data = JSON.parse(document.getElementById('review-data').textContent);
const decisions = data.decisions;
function paint(name) {
  const el = document.querySelector('.clip[data-name="' + CSS.escape(name) + '"]');
  if (!el) return;
  el.classList.remove('keep', 'reject');
  if (decisions[name]) el.classList.add(decisions[name]);
  el.querySelector('.state').textContent = decisions[name] || 'undecided';
}
function status(msg) { document.getElementById('status').textContent = msg; }
async function decide(name, value) {
  decisions[name] = value; paint(name);
  if (data.mode !== 'server') { status(Object.keys(decisions).length + ' decisions (download to save)'); return; }
  status('saving...');
  try {
    const r = await fetch('decisions', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                        body: JSON.stringify({[name]: value})});
    status(r.ok ? 'saved ' + Object.keys(decisions).length + ' decisions' : 'save failed: ' + r.status);
    document.body.dataset.saved = r.ok ? String(Date.now()) : '';
  } catch (e) { status('save failed: ' + e); }
}
document.querySelectorAll('button[data-decision]').forEach(b =>
  b.addEventListener('click', () => decide(b.dataset.name, b.dataset.decision)));
document.getElementById('download').addEventListener('click', () => {
  const blob = new Blob([JSON.stringify(decisions, null, 1)], {type: 'application/json'});
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob); a.download = 'review_decisions.json'; a.click();
});
Object.keys(decisions).forEach(paint);
"""


def load_decisions(path: str | os.PathLike) -> dict[str, str]:
    """Read a decisions file; a missing file is no decisions. Invalid values are an error."""
    p = Path(path)
    if not p.exists():
        return {}
    data = json.loads(p.read_text(encoding="utf-8") or "{}")
    if not isinstance(data, dict):
        raise ValueError(f"{p}: decisions must be a JSON object {{name: keep|reject}}")
    bad = {k: v for k, v in data.items() if v not in DECISION_VALUES}
    if bad:
        raise ValueError(f"{p}: invalid decisions (want keep|reject): {list(bad.items())[:5]}")
    return data


def save_decisions(path: str | os.PathLike, decisions: Mapping[str, str]) -> Path:
    """Write the decisions JSON atomically (temp file in the same folder, then rename)."""
    p = Path(path)
    write_json(p, dict(sorted(decisions.items())), indent=1)
    return p


def _reviewable(selected_rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """ok rows grouped by class, best rank_score first (None last)."""
    by_class: dict[str, list[Mapping[str, Any]]] = {}
    for r in selected_rows:
        if r.get("status") == STATUS_OK and r.get("name") and r.get("key"):
            by_class.setdefault(str(r.get("class_name")), []).append(r)
    for rows in by_class.values():
        rows.sort(key=lambda r: (r.get("rank_score") is None, -(r.get("rank_score") or 0.0),
                                 r["name"]))
    return dict(sorted(by_class.items()))


def _clip_html(r: Mapping[str, Any], url: str) -> str:
    e = html.escape
    name, key = e(str(r["name"]), quote=True), e(str(r["key"]), quote=True)
    score = "-" if r.get("rank_score") is None else f"{r['rank_score']:.3f}"
    buttons = "".join(
        f'<button id="{v}-{key}" data-name="{name}" data-decision="{v}">{v}</button> '
        for v in DECISION_VALUES)
    return (f'<div class="clip" data-name="{name}" id="clip-{key}">'
            f'<video controls preload="metadata" src="{e(url, quote=True)}"></video>'
            f'<div class="meta">{name}<br>split {e(str(r.get("split")))}, rank score {score}, '
            f'{float(r["end"]) - float(r["start"]):.1f}s</div>'
            f'{buttons}<span class="state">undecided</span></div>')


def build_review_page(selected_rows: Iterable[Mapping[str, Any]],
                      clip_url_for: Callable[[Mapping[str, Any]], str], *,
                      mode: str = "server", decisions: Mapping[str, str] | None = None,
                      title: str = "curate: manual review") -> str:
    """The review page as HTML. ``mode`` "server" posts each click to ./decisions;
    "static" keeps decisions in the page until downloaded with the button."""
    if mode not in ("server", "static"):
        raise ValueError(f"mode must be server or static, not {mode!r}")
    groups = _reviewable(selected_rows)
    sections = "".join(
        f'<section class="class"><h2>{html.escape(c)} ({len(rows)})</h2><div class="clips">'
        + "".join(_clip_html(r, clip_url_for(r)) for r in rows) + "</div></section>"
        for c, rows in groups.items())
    names = {r["name"] for rows in groups.values() for r in rows}
    data = {"mode": mode, "decisions": {k: v for k, v in (decisions or {}).items() if k in names}}
    blob = json.dumps(data).replace("</", "<\\/")      # cannot close the script element
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>Keep clips that are stable, synchronised and on-topic; reject the rest. "
            f"Rejected clips are replaced by the next-ranked candidates on re-selection.</p>"
            f'<button id="download">download decisions</button><div id="status"></div>'
            f"{sections}<script type='application/json' id='review-data'>{blob}</script>"
            f"<script>{_JS}</script></body></html>")


def write_review_page(out_dir: str | os.PathLike, html_path: str | os.PathLike | None = None,
                      decisions_path: str | os.PathLike | None = None) -> Path:
    """Static page (default ``<out>/review.html``) with relative links to the clip files."""
    out = Path(out_dir)
    path = Path(html_path) if html_path is not None else out / "review.html"
    clips_dir = out / "media" / "clips"

    def url(r: Mapping[str, Any]) -> str:
        # relpath absolutises both sides, so relative and absolute arguments mix safely
        rel = os.path.relpath(clips_dir / f"{_safe_key(r['key'])}.mp4", path.parent)
        return Path(rel).as_posix()
    rows = [r for r in read_rows(out, "selected") if _safe_key_or_none(r.get("key"))]
    decisions = load_decisions(decisions_path) if decisions_path else None
    text = build_review_page(rows, url, mode="static", decisions=decisions)
    write_text(path, text)
    return path


def _safe_key(key: str) -> str:
    from manifests.names import safe_id
    return safe_id(key)


def _safe_key_or_none(key: Any) -> str | None:
    try:
        return _safe_key(str(key)) if key else None
    except ValueError:
        log.warning("review: key %r is not a safe identifier; clip not shown", key)
        return None


class ReviewServer(ThreadingHTTPServer):
    """The review server; ``url`` is its address, ``close()`` stops it."""
    daemon_threads = True

    def __init__(self, out_dir: Path, decisions_path: Path, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.out_dir, self.decisions_path = out_dir, decisions_path
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def rows(self) -> list[dict[str, Any]]:
        return [r for r in read_rows(self.out_dir, "selected")
                if r.get("status") == STATUS_OK and _safe_key_or_none(r.get("key"))]

    def clip_path(self, key: str) -> Path | None:
        """Only keys of ok rows of the selected table map to a file; nothing else is served."""
        allowed = {r["key"] for r in self.rows()}
        return self.out_dir / "media" / "clips" / f"{key}.mp4" if key in allowed else None

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("review: " + fmt, *args)

    def _origin_ok(self) -> bool:
        port = self.server.server_address[1]
        hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        if self.headers.get("Host") not in hosts:
            return False
        origin = self.headers.get("Origin")
        return origin is None or origin in {f"http://{h}" for h in hosts}

    def _send(self, code: int, body: bytes, ctype: str, extra: Mapping[str, str] = {}) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, code: int, msg: str) -> None:
        self._send(code, json.dumps({"error": msg}).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if not self._origin_ok():
            return self._error(HTTPStatus.FORBIDDEN, "foreign host/origin")
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            page = build_review_page(self.server.rows(),
                                     lambda r: f"clips/{r['key']}.mp4", mode="server",
                                     decisions=load_decisions(self.server.decisions_path))
            return self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
        if path == "/decisions":
            body = json.dumps(load_decisions(self.server.decisions_path)).encode()
            return self._send(HTTPStatus.OK, body, "application/json")
        m = _CLIP_PATH.match(path)
        file = self.server.clip_path(m.group(1)) if m else None
        if file is None or not file.is_file():
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        self._send_file(file)

    do_HEAD = do_GET

    def _send_file(self, file: Path) -> None:
        """The file, or one byte range of it (video seeking)."""
        size = file.stat().st_size
        rng = re.match(r"^bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
        start, end, code = 0, size - 1, HTTPStatus.OK
        if rng and (rng.group(1) or rng.group(2)):
            if rng.group(1):
                start = int(rng.group(1))
                end = min(int(rng.group(2)), size - 1) if rng.group(2) else size - 1
            else:
                start = max(0, size - int(rng.group(2)))
            if start > end or start >= size:
                return self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"",
                                  "video/mp4", {"Content-Range": f"bytes */{size}"})
            code = HTTPStatus.PARTIAL_CONTENT
        with open(file, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        extra = {"Accept-Ranges": "bytes"}
        if code == HTTPStatus.PARTIAL_CONTENT:
            extra["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(code, body, "video/mp4", extra)

    def do_POST(self) -> None:  # noqa: N802
        if not self._origin_ok():
            return self._error(HTTPStatus.FORBIDDEN, "foreign host/origin")
        if self.path.split("?", 1)[0] != "/decisions":
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "need application/json")
        n = int(self.headers.get("Content-Length") or 0)
        if n <= 0 or n > MAX_POST_BYTES:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "empty or too large body")
        try:
            update = json.loads(self.rfile.read(n))
            saved = self._apply(update)
        except (ValueError, TypeError) as e:
            return self._error(HTTPStatus.BAD_REQUEST, str(e))
        self._send(HTTPStatus.OK, json.dumps({"saved": saved}).encode(), "application/json")

    def _apply(self, update: Any) -> int:
        if not isinstance(update, dict):
            raise ValueError("body must be a JSON object {name: keep|reject|null}")
        names = {r["name"] for r in self.server.rows()}
        unknown = [k for k in update if k not in names]
        bad = [v for v in update.values() if v is not None and v not in DECISION_VALUES]
        if unknown or bad:
            raise ValueError(f"unknown names {unknown[:3]} or values {bad[:3]}")
        with self.server.lock:    # read-modify-write of the file, one request at a time
            current = load_decisions(self.server.decisions_path)
            for k, v in update.items():
                if v is None:
                    current.pop(k, None)
                else:
                    current[k] = v
            save_decisions(self.server.decisions_path, current)
        log.info("review: saved %d decisions to %s", len(current), self.server.decisions_path)
        return len(current)


def serve_review(out_dir: str | os.PathLike, decisions_path: str | os.PathLike,
                 port: int = 0, block: bool = True) -> ReviewServer:
    """Serve the review page on 127.0.0.1:``port`` (0: any free port).

    ``block=True`` serves until interrupted (CLI); ``block=False`` starts a daemon thread and
    returns the running server (tests, notebooks): use ``.url`` and ``.close()``.
    """
    server = ReviewServer(Path(out_dir), Path(decisions_path), port)
    log.info("review: serving %s (decisions -> %s)", server.url, decisions_path)
    if not block:
        server.thread = threading.Thread(target=server.serve_forever, daemon=True)
        server.thread.start()
        return server
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("review: stopped")
    finally:
        server.server_close()
    return server
