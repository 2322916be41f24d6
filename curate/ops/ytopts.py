"""yt-dlp options a user may pass through: cookie files, extractor arguments and the
JavaScript runtime.

``--yt-extractor-args`` takes yt-dlp's own form, ``IE:ARG=V1,V2;ARG2=V3`` (e.g.
``youtube:player_client=web;po_token=web.gvs+TOKEN`` for users with a PO-token provider),
and may be given several times. Only the extractors and arguments of ``ALLOWED`` pass: they
change how a video is fetched, never what is fetched or where files go. Values are plain
tokens (no whitespace or control characters); nothing reaches a shell.

YouTube's player challenges (n / signature) are solved by yt-dlp's challenge-solver scripts
(``yt-dlp-ejs``, brought by ``yt-dlp[default]``) run in a JavaScript runtime. We ship deno
(the ``deno`` package on PyPI) and pass it to yt-dlp as ``js_runtimes`` (``js_runtimes``
below); ``--js-runtime NAME[:PATH]`` names another one. A PO-token provider plugin (e.g.
``bgutil-ytdlp-pot-provider``) installed into the same environment is found by yt-dlp
itself; its extractor arguments pass the allow-list.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Iterable

#: extractor -> arguments accepted (yt-dlp names; '-' and '_' are the same)
ALLOWED: dict[str, frozenset[str]] = {
    "youtube": frozenset({"player_client", "po_token", "player_skip", "skip", "lang",
                          "visitor_data", "data_sync_id", "fetch_pot", "pot_trace",
                          "player_js_version", "innertube_host", "innertube_key"}),
    "youtubetab": frozenset({"skip"}),
    "youtubepot-bgutilhttp": frozenset({"base_url"}),
    "youtubepot-bgutilscript": frozenset({"script_path"}),
    "generic": frozenset({"impersonate"}),
}
_VALUE = re.compile(r"^[A-Za-z0-9_.,:/+=%@\-]*$")


def parse_extractor_args(values: Iterable[str] | None) -> dict[str, dict[str, list[str]]] | None:
    """``["youtube:player_client=web;po_token=X"]`` -> ``{"youtube": {"player_client":
    ["web"], "po_token": ["X"]}}``; a ValueError names the bad part and the option."""
    out: dict[str, dict[str, list[str]]] = {}
    for text in values or ():
        ie, sep, rest = str(text).partition(":")
        if not sep or not ie.strip():
            raise ValueError(f"--yt-extractor-args {text!r}: expected IE:ARG=VALUE[;ARG=VALUE]")
        args = out.setdefault(ie.strip().lower(), {})
        for part in filter(None, (p.strip() for p in rest.split(";"))):
            name, eq, val = part.partition("=")
            if not eq:
                raise ValueError(f"--yt-extractor-args {text!r}: {part!r} is not ARG=VALUE")
            args[name.strip().replace("-", "_")] = [v for v in val.split(",") if v != ""]
    if not out:
        return None
    check_extractor_args(out)
    return out


def check_extractor_args(args: dict[str, dict[str, list[str]]]) -> None:
    """Every extractor and argument is allow-listed and every value a plain token."""
    for ie, kv in args.items():
        allowed = ALLOWED.get(ie)
        if allowed is None:
            raise ValueError(f"--yt-extractor-args: extractor {ie!r} is not allowed "
                             f"(allowed: {sorted(ALLOWED)})")
        if not isinstance(kv, dict):
            raise ValueError(f"--yt-extractor-args: {ie!r} needs ARG=VALUE pairs")
        for name, vals in kv.items():
            if name not in allowed:
                raise ValueError(f"--yt-extractor-args: {ie}:{name} is not allowed "
                                 f"(allowed for {ie}: {sorted(allowed)})")
            if isinstance(vals, str) or not all(isinstance(v, str) and _VALUE.match(v) for v in vals):
                raise ValueError(f"--yt-extractor-args: {ie}:{name} has a value with characters "
                                 "outside [A-Za-z0-9_.,:/+=%@-]")


def cookie_files(values: Iterable[str] | str | None) -> list[str] | None:
    """``--cookies`` (given once or several times): existing files, in the order given."""
    if values is None:
        return None
    vals = [values] if isinstance(values, str) else list(values)
    out = []
    for v in vals:
        p = Path(v).expanduser()
        if not p.is_file():
            raise ValueError(f"--cookies {v}: no such file (a Netscape cookies.txt of a "
                             "signed-in browser session)")
        out.append(str(p.resolve()))
    return out or None


#: the runtimes yt-dlp knows (``yt_dlp.globals.supported_js_runtimes``)
JS_RUNTIMES = ("deno", "node", "bun", "quickjs")

#: what a failed YouTube challenge or a missing runtime tells the user to do
JS_FIX = ("install yt-dlp's challenge solver and a JavaScript runtime: pip install "
          "'yt-dlp[default]' deno (scripts/setup.sh does), or name one with --js-runtime "
          "NAME[:PATH]; `curate doctor` checks both")


def parse_js_runtime(value: str | None) -> dict[str, dict[str, str]] | None:
    """``--js-runtime NAME[:PATH]`` -> yt-dlp's ``js_runtimes`` (``{"node": {"path": P}}``);
    None when not given. A ValueError names the option."""
    if not value:
        return None
    name, _, path = str(value).partition(":")
    name = name.strip().lower()
    if name not in JS_RUNTIMES:
        raise ValueError(f"--js-runtime {value!r}: unknown runtime {name!r} "
                         f"(yt-dlp supports {', '.join(JS_RUNTIMES)})")
    if path and not os.access(path, os.X_OK):
        raise ValueError(f"--js-runtime {value!r}: {path} is not an executable file")
    return {name: {"path": path} if path else {}}


def shipped_js_runtime() -> str | None:
    """The deno binary this environment ships (the ``deno`` package), else one on PATH."""
    try:
        import deno           # the PyPI package that redistributes Deno's binaries
        path = os.fsdecode(deno.find_deno_bin())
        if os.access(path, os.X_OK):
            return path
    except (ImportError, OSError, FileNotFoundError):
        pass
    return shutil.which("deno")


def js_runtimes(explicit: dict[str, dict[str, str]] | None = None) -> dict[str, dict[str, str]]:
    """yt-dlp's ``js_runtimes``: the explicit choice, else the shipped deno by its path
    (yt-dlp alone looks only next to its Python and on PATH), else deno by name, which
    yt-dlp then reports missing (``curate doctor`` says what to install)."""
    if explicit:
        return {k: dict(v) for k, v in explicit.items()}
    path = shipped_js_runtime()
    return {"deno": {"path": path} if path else {}}
