"""`curate doctor [RECIPE]`: what a run of that recipe needs and what this machine has, one
row per check (ok / missing / warning, with the fix), and `curate models list`.

A row marked ``essential`` that is missing means the recipe cannot run: `curate doctor`
exits 1 and `curate build` refuses with that row's message before any work. Nothing here
fetches anything; the only socket opened is to a Ray ``--address`` when one is given.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.util
import os
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from curate.config.weights import (WEIGHTS, Weight, for_model, in_cache, missing_fix, offline,
                                   open_clip_cached, pull_hint, read_record)

OK, MISSING, WARNING = "ok", "missing", "warning"
#: yt-dlp older than this many days: YouTube has likely changed under it
YTDLP_MAX_AGE_DAYS = 90
#: free space below this in --out or the scratch folder is a warning
LOW_DISK_BYTES = 20 << 30


@dataclass
class Row:
    check: str
    status: str                 # ok / missing / warning
    detail: str
    fix: str = ""
    essential: bool = False     # missing: the recipe cannot run

    def message(self) -> str:
        what = self.detail if self.detail.startswith(self.check) else f"{self.check}: {self.detail}"
        return what + (f"; fix: {self.fix}" if self.fix else "")


def run_checks(recipe: str | None = None, out: str | Path | None = None,
               options: dict[str, Any] | None = None, config: str | Path | None = None) -> list[Row]:
    """Every check for ``recipe`` (None: the machine in general) with the build's options."""
    from curate.config.recipes import get_recipe
    opts = dict(options or {})
    rec = get_recipe(recipe, config) if recipe else None
    if rec is not None and rec.get("allow_random_weights"):    # the demo's random models
        opts["allow_random_weights"] = True
    youtube = recipe != "demo"      # the demo downloads over loopback
    rows = [*_ffmpeg_rows(), *_ytdlp_rows(opts, essential=youtube), _pot_row(),
            *_cookie_rows(opts), *_weight_rows(rec, opts), _torch_row(), _torchcodec_row(),
            _ray_row(opts.get("address")), *_disk_rows(out)]
    return rows


def can_run(rows: list[Row]) -> bool:
    return not any(r.essential and r.status == MISSING for r in rows)


def blocker(rows: list[Row]) -> Row | None:
    """The first essential row that is missing."""
    return next((r for r in rows if r.essential and r.status == MISSING), None)


def format_rows(rows: list[Row]) -> str:
    width = max(len(r.check) for r in rows)
    lines = []
    for r in rows:
        lines.append(f"{r.status:<8} {r.check:<{width}}  {r.detail}")
        if r.fix and r.status != OK:
            lines.append(f"{'':<8} {'':<{width}}  fix: {r.fix}")
    verdict = "can run" if can_run(rows) else "cannot run: fix the missing essentials above"
    return "\n".join(lines + [verdict])


def as_json(rows: list[Row], recipe: str | None) -> dict[str, Any]:
    return {"recipe": recipe, "ok": can_run(rows), "rows": [asdict(r) for r in rows]}


# ----------------------------------------------------------------------------- tools

def _run(args: list[str]) -> str | None:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _ffmpeg_rows() -> list[Row]:
    rows = []
    for tool in ("ffmpeg", "ffprobe"):
        path = shutil.which(tool)
        out = _run([path, "-version"]) if path else None
        if not out:
            rows.append(Row(tool, MISSING, f"{tool} not found on PATH ({os.environ.get('PATH', '')})",
                            "install ffmpeg (apt-get install ffmpeg; scripts/setup.sh does)", True))
            continue
        version = (out.split() + ["?", "?", "?"])[2]
        rows.append(Row(tool, OK, f"{version} ({path})", essential=True))
        if tool == "ffmpeg":
            encoders = _run([path, "-hide_banner", "-encoders"]) or ""
            if " libx264 " not in encoders:
                rows.append(Row("libx264", MISSING, "ffmpeg has no libx264 encoder (cuts re-encode "
                                "with it)", "install an ffmpeg built with libx264", True))
            else:
                rows.append(Row("libx264", OK, "ffmpeg encodes H.264", essential=True))
    return rows


def _ytdlp_rows(opts: dict[str, Any], essential: bool) -> list[Row]:
    from curate.ops.ytopts import JS_FIX
    try:
        import yt_dlp
        from yt_dlp.version import __version__ as version
    except ImportError:
        return [Row("yt-dlp", MISSING, "not installed", "pip install 'yt-dlp[default]'", True)]
    rows = [_ytdlp_age_row(version)]
    from yt_dlp.dependencies import yt_dlp_ejs
    if yt_dlp_ejs is None:
        rows.append(Row("yt-dlp-ejs", MISSING, "YouTube's challenge-solver scripts are not "
                        "installed", JS_FIX, essential))
    else:
        rows.append(Row("yt-dlp-ejs", OK, f"{importlib.metadata.version('yt-dlp-ejs')} (yt-dlp "
                        "finds it)", essential=essential))
    rows.append(_js_runtime_row(yt_dlp, opts.get("js_runtimes"), essential))
    return rows


def _ytdlp_age_row(version: str) -> Row:
    try:
        released = dt.date(*(int(x) for x in version.split(".")[:3]))
    except (TypeError, ValueError):
        return Row("yt-dlp", WARNING, f"{version} (release date unknown)",
                   "pip install -U 'yt-dlp[default]'")
    age = (dt.date.today() - released).days
    if age > YTDLP_MAX_AGE_DAYS:
        return Row("yt-dlp", WARNING, f"{version}, {age} days old: YouTube breaks old versions",
                   "pip install -U 'yt-dlp[default]'")
    return Row("yt-dlp", OK, f"{version} ({age} days old)", essential=True)


def _js_runtime_row(yt_dlp: Any, explicit: Any, essential: bool) -> Row:
    """Asked of yt-dlp itself: the runtime it would use and whether its YouTube extractor
    has a usable challenge provider (else it runs in its deprecated JS-less mode)."""
    from curate.ops.ytopts import JS_FIX, js_runtimes
    params = {"js_runtimes": js_runtimes(explicit), "quiet": True, "no_warnings": True}
    with yt_dlp.YoutubeDL(params) as ydl:
        infos = [(n, rt.info) for n, rt in ydl._js_runtimes.items() if rt is not None]
        usable = [f"{i.name} {i.version} ({i.path})" for _, i in infos if i and i.supported]
        try:
            ie = ydl.get_info_extractor("Youtube")
            ie.initialize()
            solver = any(p.is_available() for p in ie._jsc_director.providers.values())
        except Exception:  # noqa: BLE001 - an older yt-dlp without the director: runtime only
            solver = bool(usable)
    if usable and solver:
        return Row("JS runtime", OK, ", ".join(usable), essential=essential)
    found = ", ".join(f"{i.name} {i.version} (unsupported)" for _, i in infos if i) or \
        f"none of {', '.join(n for n, _ in infos) or 'the configured runtimes'} found"
    return Row("JS runtime", MISSING, f"{found}: YouTube extraction runs in yt-dlp's deprecated "
               "JS-less mode", JS_FIX, essential)


def _pot_row() -> Row:
    for dist in ("bgutil-ytdlp-pot-provider",):
        try:
            return Row("PO-token plugin", OK, f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return Row("PO-token plugin", OK, "none installed (optional: pip install "
               "bgutil-ytdlp-pot-provider and run its server; pass its settings with "
               "--yt-extractor-args youtubepot-bgutilhttp:base_url=...)")


def _cookie_rows(opts: dict[str, Any]) -> list[Row]:
    files = opts.get("cookiefile") or []
    rows = []
    for f in [files] if isinstance(files, str) else files:
        try:
            text = Path(f).read_text(errors="replace")
        except OSError as e:
            rows.append(Row("cookies", MISSING, f"{f}: cannot be read ({e.strerror})",
                            "export a cookies.txt of a signed-in browser session", True))
            continue
        if _netscape(text):
            rows.append(Row("cookies", OK, f"{f}: Netscape format", essential=True))
        else:
            rows.append(Row("cookies", MISSING, f"{f}: not a Netscape cookies.txt",
                            "export the cookies in Netscape format (yt-dlp's "
                            "--cookies-from-browser, or a cookies.txt extension)", True))
    return rows


def _netscape(text: str) -> bool:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].startswith(("# Netscape HTTP Cookie File", "# HTTP Cookie File")):
        return True
    return any(len(ln.split("\t")) == 7 for ln in lines if not ln.startswith("#"))


# ----------------------------------------------------------------------------- weights

def _weight_rows(recipe: dict[str, Any] | None, opts: dict[str, Any]) -> list[Row]:
    """One row per model the recipe's filters use (every table row without a recipe)."""
    from curate.config.models import weight_options
    from filters.registry import MODEL_FILTERS
    if recipe is None:
        return [weight_row(w, essential=False) for w in WEIGHTS]
    rows = []
    for filt, model in MODEL_FILTERS.items():
        if filt not in recipe["filters"]:
            continue
        given = opts.get(weight_options()[model])
        if given:
            exists = Path(str(given)).exists() or model == "clip"
            rows.append(Row(f"weights {model}", OK if exists else MISSING, f"{given} (option)",
                            "" if exists else f"no such file: {given}", True))
        elif opts.get("allow_random_weights"):
            rows.append(Row(f"weights {model}", OK, "random weights (demos and tests: scored, "
                            "never gating)"))
        elif for_model(model) is not None:
            rows.append(weight_row(for_model(model), essential=True))
    return rows


def weight_row(w: Weight, essential: bool = True) -> Row:
    """A table row's state in the cache: present (size, recorded sha256, licence) or the fix."""
    check = f"weights {w.name}"
    if w.kind == "package":
        ok = importlib.util.find_spec(w.url.replace("-", "_")) is not None
        return Row(check, OK if ok else MISSING, f"inside the {w.url} package ({w.licence})",
                   pull_hint(w), essential)
    if w.kind == "open_clip":
        hit = open_clip_cached(w)
        if hit:
            return Row(check, OK, f"{hit} (open_clip's cache; {w.licence})", essential=essential)
        status = MISSING if offline() else WARNING
        return Row(check, status, "not in open_clip's cache" + (" and offline" if offline() else
                   ": fetched on first use"), pull_hint(w), essential and offline())
    path = in_cache(w)
    if path is None:
        return Row(check, MISSING, f"not in the cache ({w.licence})", missing_fix(w), essential)
    rec = read_record(w)
    if not rec:
        return Row(check, WARNING, f"{path}: no pull record (unchecked)",
                   f"curate models pull {w.name}", essential)
    return Row(check, OK, f"{path}, {rec.get('size')} bytes, sha256 {str(rec.get('sha256'))[:16]}... "
               f"({w.licence})", essential=essential)


def models_table() -> list[dict[str, Any]]:
    """`curate models list`: every row of the table with what the cache holds."""
    out = []
    for w in WEIGHTS:
        r = weight_row(w, essential=False)
        out.append({**w.as_dict(), "cached": r.status == OK, "state": r.detail, "fix": r.fix})
    return out


def format_models(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        lines.append(f"{r['name']}  [{'cached' if r['cached'] else 'not cached'}]  {r['state']}")
        lines.append(f"    file {r['file']}  ({r['kind']}) {r['url']}")
        lines.append(f"    size {r['size'] or 'not published'}  checksum "
                     f"{r['checksum'] or 'not published'}  licence {r['licence']}")
        lines.append(f"    used by {r['used_by']}" + (f"  option {r['option']}" if r['option'] else ""))
        if not r["cached"] and r["fix"]:
            lines.append(f"    fix: {r['fix']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- machine

def _torch_row() -> Row:
    try:
        import torch
    except ImportError:
        return Row("torch", MISSING, "not installed", "bash scripts/setup.sh", True)
    if not torch.cuda.is_available():
        return Row("torch", WARNING, f"{torch.__version__}, no CUDA device: scoring runs on the "
                   "CPU (fine for the demo, slow at VGGSound scale)",
                   "a CUDA GPU and PyPI's CUDA torch (scripts/setup.sh on a GPU machine)")
    devs = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    bf16 = "bf16" if torch.cuda.is_bf16_supported() else "no bf16 (fp32 scoring)"
    return Row("torch", OK, f"{torch.__version__}, CUDA {torch.version.cuda}: "
               f"{len(devs)} x {', '.join(sorted(set(devs)))}, {bf16}")


def _torchcodec_row() -> Row:
    if importlib.util.find_spec("torchcodec") is None:
        return Row("torchcodec / NVDEC", OK, "not installed (optional: PyAV decodes on the CPU)")
    return Row("torchcodec / NVDEC", OK, f"torchcodec {importlib.metadata.version('torchcodec')}")


def _ray_row(address: str | None) -> Row:
    try:
        version = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return Row("ray", MISSING, "not installed", "pip install 'ray[data]'", True)
    if not address:
        return Row("ray", OK, f"{version} (a local Ray starts with the build)", essential=True)
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
            pass
    except (OSError, ValueError) as e:
        return Row("ray", MISSING, f"{version}; cluster {address} not reachable ({e})",
                   "start it (ray start --head) or fix --address", True)
    return Row("ray", OK, f"{version}; cluster {address} reachable", essential=True)


def _disk_rows(out: str | Path | None) -> list[Row]:
    from manifests.scratch import scratch_root
    rows = []
    for what, path in (("disk --out", out), ("disk scratch", scratch_root())):
        if path is None:
            continue
        p = Path(path).resolve()
        while not p.exists() and p != p.parent:      # the folder a new --out will be made in
            p = p.parent
        free = shutil.disk_usage(p).free
        low = free < LOW_DISK_BYTES
        rows.append(Row(what, WARNING if low else OK, f"{free / (1 << 30):.1f} GiB free at {p}",
                        "free space, or point --out / CURATE_SCRATCH elsewhere" if low else ""))
    return rows
