"""Checking shards against their Parquet index and stats (``curate verify DIR``).

For every ``{split}-{n:06d}`` found (tar, index or stats), the report says ``ok`` or lists
problems: a missing tar, index or stats file; a tar that cannot be read to the end
(truncated, damaged header); a member whose data offset, size or sha256 differs from the
index; members in the tar but not in the index and the reverse; a sample count or tar size
that differs from the stats; a whole-tar sha256 that differs from the stats (catches a
changed byte anywhere, headers and padding included). Each tar is read once, sequentially.

``verify_shards`` is pure: it only reads, and returns the report; the CLI prints it and
exits non-zero when ``report["ok"]`` is False.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from shards.writer import INDEX_SCHEMA, SHARD_RE

log = logging.getLogger(__name__)

MAX_LISTED = 20  # member names listed per problem kind


class _HashingReader:
    """Sequential reader hashing every byte handed out (tarfile's stream mode only reads)."""

    def __init__(self, raw) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        b = self.raw.read(n)
        self.sha.update(b)
        self.pos += len(b)
        return b

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _stems(shards_dir: Path) -> tuple[list[str], list[str]]:
    """Shard stems found (from any of the three files) and leftover temp files."""
    stems, temps = set(), []
    for p in shards_dir.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            temps.append(p.name)
            continue
        stem = p.name.split(".", 1)[0]
        if SHARD_RE.match(stem) and p.name[len(stem):] in (".tar", ".parquet", ".stats.json"):
            stems.add(stem)
    return sorted(stems), sorted(temps)


def _load_index(path: Path) -> dict[str, dict[str, Any]]:
    table = pq.read_table(path)
    missing = set(INDEX_SCHEMA.names) - set(table.column_names)
    if missing:
        raise ValueError(f"index lacks columns {sorted(missing)}")
    return {r["member"]: r for r in table.select(INDEX_SCHEMA.names).to_pylist()}


def _listed(kind: str, names: list[str]) -> str:
    more = f" (+{len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
    return f"{kind} ({len(names)}): {', '.join(sorted(names)[:MAX_LISTED])}{more}"


def _scan_tar(path: Path, index: dict[str, dict[str, Any]]) -> tuple[list[str], set[str], int, str]:
    """Read the tar once; compare each member with the index.

    Returns (problems, member names seen, bytes read, whole-file sha256).
    """
    problems: list[str] = []
    seen: set[str] = set()
    bad_hash, bad_place, extra = [], [], []
    with open(path, "rb") as raw:
        reader = _HashingReader(raw)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for ti in tar:
                    seen.add(ti.name)
                    want = index.get(ti.name)
                    f = tar.extractfile(ti) if ti.isreg() else None
                    data = f.read() if f is not None else b""
                    if len(data) != ti.size:
                        raise tarfile.ReadError(f"member {ti.name} is short: {len(data)} of {ti.size} bytes")
                    if want is None:
                        extra.append(ti.name)
                    elif want["offset"] != ti.offset_data or want["size"] != ti.size:
                        bad_place.append(ti.name)
                    elif hashlib.sha256(data).hexdigest() != want["sha256"]:
                        bad_hash.append(ti.name)
        except (tarfile.TarError, EOFError, OSError) as e:
            problems.append(f"tar unreadable after {len(seen)} members (truncated or damaged): {e}")
        reader.drain()
    if bad_hash:
        problems.append(_listed("sha256 mismatch", bad_hash))
    if bad_place:
        problems.append(_listed("offset/size differ from index", bad_place))
    if extra:
        problems.append(_listed("members not in index", extra))
    return problems, seen, reader.pos, reader.sha.hexdigest()


def _check_stats(stats: dict, n_samples: int, size: int, sha: str) -> list[str]:
    problems = []
    if stats.get("count") != n_samples:
        problems.append(f"stats count {stats.get('count')} != {n_samples} samples in index")
    if stats.get("bytes") != size:
        problems.append(f"tar is {size} bytes, stats say {stats.get('bytes')} (truncated or appended)")
    elif stats.get("sha256") and stats["sha256"] != sha:
        problems.append("whole-tar sha256 differs from stats (bytes changed)")
    return problems


def verify_shard(shards_dir: str | os.PathLike, stem: str) -> dict[str, Any]:
    """Check one shard ``{split}-{n:06d}``; returns {ok, problems, samples, members}."""
    d = Path(shards_dir)
    tar_p, idx_p, st_p = d / f"{stem}.tar", d / f"{stem}.parquet", d / f"{stem}.stats.json"
    problems: list[str] = []
    index: dict[str, dict[str, Any]] | None = None
    stats: dict | None = None
    if not idx_p.exists():
        problems.append("index missing")
    else:
        try:
            index = _load_index(idx_p)
        except Exception as e:  # any unreadable index is a finding, not a crash
            problems.append(f"index unreadable: {e}")
    if not st_p.exists():
        problems.append("stats missing")
    else:
        try:
            stats = json.loads(st_p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            problems.append(f"stats unreadable: {e}")
    n_samples = len({r["key"] for r in index.values()}) if index is not None else 0
    members = 0
    if not tar_p.exists():
        problems.append("tar missing")
    else:
        tar_problems, seen, size, sha = _scan_tar(tar_p, index or {})
        members = len(seen)
        if index is None:  # without an index every member would read as "extra"
            tar_problems = [p for p in tar_problems if not p.startswith("members not in index")]
        problems += tar_problems
        if index is not None:
            missing = sorted(set(index) - seen)
            if missing:
                problems.append(_listed("members missing from tar", missing))
            if stats is not None:
                problems += _check_stats(stats, n_samples, size, sha)
    return {"ok": not problems, "problems": problems, "samples": n_samples, "members": members}


def verify_shards(shards_dir: str | os.PathLike) -> dict[str, Any]:
    """Check every shard in ``shards_dir`` (``<out>/shards``).

    Returns ``{"ok": bool, "shards": {stem: {ok, problems, samples, members}},
    "summary": {shards, ok, bad, samples, problems}, "warnings": [...]}``. An empty or
    missing folder is not ok (there is nothing a trainer could read).
    """
    d = Path(shards_dir)
    if not d.is_dir():
        return {"ok": False, "shards": {}, "warnings": [],
                "summary": {"shards": 0, "ok": 0, "bad": 0, "samples": 0, "problems": 1,
                            "error": f"{d} is not a folder"}}
    stems, temps = _stems(d)
    shards = {stem: verify_shard(d, stem) for stem in stems}
    bad = [s for s, r in shards.items() if not r["ok"]]
    summary = {"shards": len(shards), "ok": len(shards) - len(bad), "bad": len(bad),
               "samples": sum(r["samples"] for r in shards.values()),
               "problems": sum(len(r["problems"]) for r in shards.values())}
    if not shards:
        summary["error"] = "no shards found"
    warnings = [f"leftover temporary file {t} (an interrupted write, or one in progress)" for t in temps]
    return {"ok": bool(shards) and not bad, "shards": shards, "summary": summary, "warnings": warnings}


def format_report(report: dict[str, Any]) -> str:
    """Human-readable lines for the CLI."""
    lines = []
    for stem, r in report["shards"].items():
        lines.append(f"{stem}: {'ok' if r['ok'] else 'BAD'} ({r['samples']} samples)")
        lines += [f"  - {p}" for p in r["problems"]]
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    s = report["summary"]
    lines.append(f"{s['shards']} shards, {s['ok']} ok, {s['bad']} bad, {s['samples']} samples"
                 + (f"; {s['error']}" if s.get("error") else ""))
    return "\n".join(lines)
