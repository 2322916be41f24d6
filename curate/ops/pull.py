"""Fetching one weight file of ``curate.config.weights.WEIGHTS`` into the cache.

The transfer goes to ``.<file>.part`` beside the target and resumes it (an HTTP Range from
the bytes already there) after a broken connection, in this call (``retries``) or the next
``curate models pull``. A finished transfer is checked before it is used: its size against
what the server announced (and the table's exact size where one is published), its md5 /
sha256 against the authors' published checksum; a mismatch deletes the partial file and
is an error naming it. Only then is it renamed into place (atomic) and its record written
(size, sha256, URL). A non-commercial licence is printed before the first byte is fetched.
Offline (``$CURATE_OFFLINE=1``, ``--offline``) nothing is fetched and no socket is opened.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from curate.config.weights import (BASE_URL_ENV, Weight, cache_path, in_cache, offline,
                                   open_clip_cached, pull_hint, read_record, record_path,
                                   sha256_of, size_of)
from manifests.atomic import write_json

log = logging.getLogger(__name__)
Echo = Callable[[str], None]


class PullError(ValueError):
    """A weight that could not be put in the cache; the message names the file and the fix."""


class _Broken(Exception):
    """The connection ended before the announced length: resumable."""


def source_url(w: Weight, base_url: str | None = None) -> str:
    """``w.url``, or the same file name under ``base_url`` (a mirror; tests' loopback)."""
    base = base_url or os.environ.get(BASE_URL_ENV)
    if not base:
        return w.url
    name = urllib.parse.urlsplit(w.url).path.rsplit("/", 1)[-1]
    return f"{base.rstrip('/')}/{name}"


def pull(w: Weight, base_url: str | None = None, echo: Echo = print, retries: int = 3,
         timeout: float = 30.0) -> Path:
    """Put ``w`` in the cache (a no-op when it is there and matches its record); returns
    its path. PullError names what failed and how to fix it."""
    if w.kind == "package":
        echo(f"{w.name}: ships inside the {w.url} package (nothing to pull)")
        return Path(w.url)
    if w.kind == "manual":
        return _register_manual(w, echo)
    if w.kind == "open_clip":
        return _pull_open_clip(w, echo)
    dest = cache_path(w)
    rec = read_record(w)
    if dest.is_file() and rec and rec.get("size") == dest.stat().st_size:
        echo(f"{w.name}: already in the cache ({dest})")
        return dest
    if dest.is_file():          # copied in by hand (an offline machine): checked in place
        return _record(w, dest, _verify(w, dest, remove=False), "in place", echo)
    if offline():
        raise PullError(f"{w.name}: not in the cache ({dest}) and offline ($CURATE_OFFLINE / "
                        f"--offline): run `curate models pull {w.name}` on a machine with network "
                        f"and copy the file to {dest} (then `curate models pull {w.name}` checks "
                        f"it in place)")
    url = source_url(w, base_url)
    if w.non_commercial:
        echo(f"licence of {w.name}: {w.licence}. By fetching it you accept its terms.")
    echo(f"{w.name}: fetching {url} -> {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    _fetch_resuming(w, url, part, retries, timeout)
    sha = _verify(w, part)
    os.replace(part, dest)
    return _record(w, dest, sha, url, echo)


def _record(w: Weight, path: Path, sha: str, source: str, echo: Echo) -> Path:
    """The pull record builds check a cached file against (``config.models.record_weights``)."""
    write_json(record_path(w), {"name": w.name, "file": path.name, "source": source,
                                "size": size_of(path), "sha256": sha,
                                "pulled": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    echo(f"{w.name}: ok ({path}, {size_of(path)} bytes, sha256 {sha})")
    return path


def _fetch_resuming(w: Weight, url: str, part: Path, retries: int, timeout: float) -> None:
    for attempt in range(retries + 1):
        try:
            _transfer(w, url, part, timeout)
            return
        except _Broken as e:
            if attempt == retries:
                raise PullError(f"{w.name}: transfer of {url} broken ({e}); {part} is kept: "
                                f"rerun `curate models pull {w.name}` to resume") from e
            log.info("%s: %s; resuming (try %d of %d)", w.name, e, attempt + 2, retries + 1)
            time.sleep(min(2.0 ** attempt, 10.0))


def _transfer(w: Weight, url: str, part: Path, timeout: float) -> None:
    """One request: appends to ``part`` from its current length; _Broken when it ends short."""
    from tqdm import tqdm

    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "curate", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:            # the part is not a prefix of this file: start over
            part.unlink()
            raise _Broken("the server refused the resume range; starting over") from e
        raise PullError(f"{w.name}: {url}: HTTP Error {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise _Broken(f"cannot reach {url}: {getattr(e, 'reason', e)}") from e
    with resp:
        if have and resp.status != 206:       # the server ignored the range: the whole file
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as f, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=w.name,
                     disable=None) as bar:
            try:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    f.write(block)
                    bar.update(len(block))
            except (http.client.IncompleteRead, ConnectionError, TimeoutError, socket.timeout) as e:
                f.flush()
                raise _Broken(f"connection ended at {part.stat().st_size} of {total} bytes") from e
    got = part.stat().st_size
    if total is not None and got < total:
        raise _Broken(f"connection ended at {got} of {total} bytes")
    if total is not None and got != total:
        part.unlink()
        raise PullError(f"{w.name}: size mismatch: {got} bytes from {url}, the server announced "
                        f"{total}; the partial file was removed")


def _verify(w: Weight, part: Path, remove: bool = True) -> str:
    """The file's sha256, after its size and the published checksum match; else a PullError
    names it (and a download is removed: never used)."""
    algo, _, want = (w.checksum or "").partition(":")
    digests = {"sha256": hashlib.sha256(), **({algo: hashlib.new(algo)} if want else {})}
    with open(part, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            for h in digests.values():
                h.update(block)
    got = {k: h.hexdigest() for k, h in digests.items()}
    problem = None
    if w.size_bytes is not None and part.stat().st_size != w.size_bytes:
        problem = f"size mismatch: {part.stat().st_size} bytes, published {w.size_bytes}"
    elif want and not got[algo].startswith(want.lower()):
        problem = f"{algo} mismatch: {got[algo]}, published {want}"
    if problem and remove:
        part.unlink()
        raise PullError(f"{w.name}: {cache_path(w)}: {problem}; the download was removed and is "
                        f"not used (rerun `curate models pull {w.name}`; if it fails again the "
                        f"source changed)")
    if problem:
        raise PullError(f"{w.name}: {part}: {problem}: not used (remove it and run `curate models "
                        f"pull {w.name}`)")
    return got["sha256"]


def _register_manual(w: Weight, echo: Echo) -> Path:
    """A manually placed file or folder: its checksum recorded (later changes are refused)."""
    path = in_cache(w)
    if path is None:
        raise PullError(f"{w.name}: cannot be fetched by URL: {pull_hint(w)}")
    return _record(w, path, sha256_of(path), "placed by hand", echo)


def _pull_open_clip(w: Weight, echo: Echo) -> Path:
    """CLIP stays in open_clip's own cache: it fetches and verifies it itself."""
    hit = open_clip_cached(w)
    if hit is not None:
        echo(f"{w.name}: already in open_clip's cache ({hit})")
        return hit
    if offline():
        raise PullError(f"{w.name}: not in open_clip's cache and offline ($CURATE_OFFLINE / "
                        f"--offline): run `curate models pull {w.name}` with network first")
    from filters.torch_compat import import_open_clip  # torchvision next to a CPU torch
    open_clip = import_open_clip()
    model, tag = w.file.split("/")
    echo(f"{w.name}: fetching through open_clip ({model} / {tag})")
    path = open_clip.download_pretrained(open_clip.get_pretrained_cfg(model, tag))
    echo(f"{w.name}: ok ({path})")
    return Path(path)
