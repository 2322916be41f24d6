"""Checking shards against their Parquet index and stats (``curate verify DIR``).

For every ``{split}-{n:06d}`` found (tar, index or stats), the report says ``ok`` or lists
problems: a missing tar, index or stats file; a tar that cannot be read to the end
(truncated, damaged header); a member whose data offset, size or sha256 differs from the
index; members in the tar but not in the index and the reverse; a sample count or tar size
that differs from the stats; a whole-tar sha256 that differs from the stats (catches a
changed byte anywhere, headers and padding included); a clip whose audio and video do not
start together: its first audio sample time minus its first video frame time, read from the
mp4 as a player does (``decoding.media.av_offset_ms``: edit lists and AAC priming applied),
beyond ``MAX_AV_OFFSET_MS`` (the clip is named with its offset). Each tar is read once,
sequentially.

``verify_shards`` is pure: it only reads, and returns the report; the CLI prints it and
exits non-zero when ``report["ok"]`` is False.

``verify_run(out)`` checks a whole run against its manifests: every ``selected`` ok clip is
in exactly one shard of the ``shards`` manifest and nothing else is; every listed shard has
its tar, index and stats and passes ``verify_shard``; each sample's byte range in its tar
hashes to the manifest's sha256; ``shards/`` holds no extra files and no temp files from an
interrupted write (nor do ``media/clips`` and ``manifests``); a repaired clip's audio
(``repaired``) is its source's at the recorded ``av_shift_ms`` within one audio sample
(``decoding.align``). A run killed while writing
tars therefore fails (the manifest, written last, is missing, or shards are missing),
instead of "4 shards, 4 ok". ``verify_path`` picks one or the other for ``curate verify``.
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

from decoding.media import DecodeError, av_offset_ms
from shards.writer import INDEX_SCHEMA, SHARD_RE

log = logging.getLogger(__name__)

MAX_LISTED = 20  # member names listed per problem kind
#: a clip's audio may start this far from its video at most (ms): AVSync15's sync classifier
#: is evaluated at 40-ms steps, and our cuts put both streams on the same frame instant
MAX_AV_OFFSET_MS = 1.0


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
    bad_hash, bad_place, extra, bad_sync = [], [], [], []
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
                    if ti.name.endswith(".mp4"):
                        why = _sync_problem(ti.name, data)
                        if why:
                            bad_sync.append(why)
        except (tarfile.TarError, EOFError, OSError) as e:
            problems.append(f"tar unreadable after {len(seen)} members (truncated or damaged): {e}")
        reader.drain()
    if bad_hash:
        problems.append(_listed("sha256 mismatch", bad_hash))
    if bad_place:
        problems.append(_listed("offset/size differ from index", bad_place))
    if extra:
        problems.append(_listed("members not in index", extra))
    if bad_sync:
        problems.append(_listed(f"audio-video offset beyond {MAX_AV_OFFSET_MS:g} ms", bad_sync))
    return problems, seen, reader.pos, reader.sha.hexdigest()


def _sync_problem(name: str, data: bytes) -> str | None:
    """``key (+20.00 ms)`` for a clip whose audio does not start with its video, else None."""
    key = name[:-len(".mp4")]
    try:
        off = av_offset_ms(data)
    except DecodeError as e:
        return f"{key} (unreadable: {e})"
    if off is not None and abs(off) > MAX_AV_OFFSET_MS:
        return f"{key} ({off:+.2f} ms)"
    return None


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
    run_problems = report.get("run_problems") or []
    if run_problems:
        lines.append(f"run: {len(run_problems)} problem(s) against the manifests")
        lines += [f"  - {p}" for p in run_problems]
    s = report["summary"]
    due = (f" ({s['listed_shards']} shards and {s['due']} clips due per the manifests)"
           if "due" in s else "")
    lines.append(f"{s['shards']} shards, {s['ok']} ok, {s['bad']} bad, {s['samples']} samples{due}"
                 + (f"; {s['error']}" if s.get("error") else ""))
    if s.get("repaired_checked"):
        lines.append(f"repaired clips: {s['repaired_checked']} checked against their source at the "
                     "recorded shift")
    if "run_problems" in report:
        lines.append("verify: OK" if report["ok"] else "verify: FAILED")
    return "\n".join(lines)


# ---------------------------------------------------------------- whole run

#: folders of a run where an interrupted atomic write leaves ``.<name>.<random>.tmp`` files
TEMP_DIRS = ("shards", "media/clips", "media/raw", "manifests")


def _is_temp(name: str) -> bool:
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".part")
                                     or ".tmp" in name or ".part" in name)


def _read_manifest_rows(path: Path, columns: list[str]) -> list[dict[str, Any]]:
    table = pq.read_table(path)
    missing = set(columns) - set(table.column_names)
    if missing:
        raise ValueError(f"lacks columns {sorted(missing)}")
    return table.select(columns).to_pylist()


def _sample_hashes(tar: Path, rows: list[dict[str, Any]]) -> list[str]:
    """Keys whose byte range [offset, offset+size) in ``tar`` does not hash to their sha256."""
    bad = []
    size = tar.stat().st_size
    with open(tar, "rb") as f:
        for r in sorted(rows, key=lambda r: r["offset"] or 0):
            off, n = r["offset"], r["size"]
            if off is None or n is None or off < 0 or off + n > size:
                bad.append(r["key"])
                continue
            f.seek(off)
            h, left = hashlib.sha256(), n
            while left:
                b = f.read(min(left, 1 << 20))
                if not b:
                    break
                h.update(b)
                left -= len(b)
            if left or h.hexdigest() != r["sha256"]:
                bad.append(r["key"])
    return bad


def _temp_files(out: Path) -> list[str]:
    found = []
    for sub in TEMP_DIRS:
        d = out / sub
        if d.is_dir():
            found += [f"{sub}/{p.name}" for p in d.iterdir() if _is_temp(p.name)]
    return sorted(found)


def _manifest_offsets(path: Path) -> list[str]:
    """Selected ok clips whose recorded ``av_offset_ms`` (measured after the cut) is beyond
    ``MAX_AV_OFFSET_MS``; a manifest from before the column existed has nothing to check."""
    if not path.exists():
        return []
    try:
        if "av_offset_ms" not in pq.read_schema(path).names:
            return []
        rows = _read_manifest_rows(path, ["key", "status", "av_offset_ms"])
    except Exception:  # noqa: BLE001 - unreadable: already reported by the membership check
        return []
    bad = [f"{r['key']} ({r['av_offset_ms']:+.2f} ms)" for r in rows
           if r.get("status") == "ok" and r.get("av_offset_ms") is not None
           and abs(r["av_offset_ms"]) > MAX_AV_OFFSET_MS]
    return [_listed(f"selected clips recorded with an audio-video offset beyond "
                    f"{MAX_AV_OFFSET_MS:g} ms", bad)] if bad else []


def _repaired_rows(man: Path) -> list[dict[str, Any]]:
    """Selected ok rows of repaired clips, with their source file and segment start (the
    downloads manifest's: in a two-pass run the scored rendition, whose segment clock the
    cut's times share; its audio is the same download's)."""
    cols = ["key", "status", "source_id", "cut_start", "cut_end", "av_shift_ms", "repaired"]
    sel, dl = man / "selected.parquet", man / "downloads.parquet"
    try:
        if "repaired" not in pq.read_schema(sel).names:
            return []        # a manifest from before repairs existed
        rows = [r for r in _read_manifest_rows(sel, cols) if r["status"] == "ok" and r["repaired"]]
        if not rows:
            return []
        src = {d["source_id"]: d for d in _read_manifest_rows(dl, ["source_id", "status", "path", "seg_start"])
               if d["status"] == "ok"}
    except Exception:  # noqa: BLE001 - unreadable: reported by the membership check
        return []
    return [{**r, "src": src.get(r["source_id"], {}).get("path"),
             "seg_start": src.get(r["source_id"], {}).get("seg_start") or 0.0} for r in rows]


def _repair_problem(row: dict[str, Any], clip: bytes) -> str | None:
    """Why a repaired clip's audio is not its source's at the recorded shift (within one
    sample), else None."""
    from decoding.align import MIN_CORRELATION, shifted_audio_lag
    key, shift = row["key"], row["av_shift_ms"]
    if not row["src"] or not Path(row["src"]).is_file():
        return f"{key}: source {row['src']} missing (its repair cannot be checked)"
    try:
        lag, corr, rate = shifted_audio_lag(clip, row["src"], row["cut_start"], row["cut_end"],
                                            shift / 1000.0, row["seg_start"])
    except (DecodeError, ValueError) as e:
        return f"{key}: repair not checkable ({e})"
    if corr < MIN_CORRELATION:
        return f"{key}: audio does not match its source at the recorded shift {shift:+.1f} ms"
    if abs(lag) > 1:
        return (f"{key}: audio is {lag} samples ({lag / rate * 1000:+.2f} ms) off its source at "
                f"the recorded shift {shift:+.1f} ms")
    return None


def _repairs(sd: Path, man: Path, shard_rows: list[dict[str, Any]], problems: list[str]) -> int:
    """Each repaired clip in a shard against its source at the recorded shift: the problems
    go into ``problems``; returns how many repaired clips were checked."""
    where = {r["key"]: r["shard"] for r in shard_rows}
    bad = []
    checked = 0
    for row in _repaired_rows(man):
        tar = sd / str(where.get(row["key"], ""))
        if row["key"] not in where or not tar.is_file():
            continue         # reported by the membership check
        try:
            with tarfile.open(tar) as t:
                clip = t.extractfile(f"{row['key']}.mp4").read()
        except (tarfile.TarError, KeyError, AttributeError, OSError) as e:
            bad.append(f"{row['key']}: clip unreadable in {tar.name} ({e})")
            continue
        checked += 1
        why = _repair_problem(row, clip)
        if why:
            bad.append(why)
    if bad:
        problems.append(_listed("repaired clips whose audio is not their source's at the recorded shift", bad))
    return checked


def _membership(selected: list[dict[str, Any]], shard_rows: list[dict[str, Any]]) -> list[str]:
    """Every selected ok key in exactly one shard row; no shard row without a selected ok key."""
    problems = []
    due = {r["key"] for r in selected if r.get("status") == "ok" and r.get("key")}
    count: dict[str, int] = {}
    for r in shard_rows:
        count[r["key"]] = count.get(r["key"], 0) + 1
    missing = sorted(due - set(count))
    if missing:
        problems.append(_listed(f"selected clips in no shard ({len(missing)} of {len(due)} due)",
                                missing))
    dup = sorted(k for k, n in count.items() if n > 1)
    if dup:
        problems.append(_listed("clips in more than one shard", dup))
    extra = sorted(set(count) - due)
    if extra:
        problems.append(_listed("shard samples not selected (ok)", extra))
    return problems


def _check_listed_shards(sd: Path, shard_rows: list[dict[str, Any]],
                         shards: dict[str, dict[str, Any]]) -> list[str]:
    """Each listed shard: tar/index/stats present and sound, its samples those of the manifest."""
    problems = []
    by_shard: dict[str, list[dict[str, Any]]] = {}
    for r in shard_rows:
        by_shard.setdefault(str(r["shard"]), []).append(r)
    for tar_name, rows in sorted(by_shard.items()):
        stem = tar_name[:-4] if tar_name.endswith(".tar") else tar_name
        if not SHARD_RE.match(stem) or Path(tar_name).name != tar_name:
            problems.append(f"manifest names an invalid shard {tar_name!r}")
            continue
        rep = shards.get(stem) or verify_shard(sd, stem)
        shards[stem] = rep
        if not rep["ok"]:
            problems.append(f"{stem}: " + "; ".join(rep["problems"]))
            if not (sd / tar_name).exists():
                continue
        want = {r["key"] for r in rows}
        if (sd / f"{stem}.parquet").exists():
            try:
                have = {r["key"] for r in _load_index(sd / f"{stem}.parquet").values()}
            except Exception:  # reported by verify_shard already
                have = want
            if have != want:
                problems.append(f"{stem}: index samples differ from the shards manifest "
                                f"({len(have - want)} extra, {len(want - have)} missing)")
        if (sd / tar_name).exists():
            bad = _sample_hashes(sd / tar_name, rows)
            if bad:
                problems.append(_listed(f"{stem}: sample payload sha256 differs from the manifest", bad))
    return problems


def _extra_files(sd: Path, listed_stems: set[str]) -> list[str]:
    extra = []
    for p in sorted(sd.iterdir()):
        if _is_temp(p.name):
            continue       # reported as temp files
        stem = p.name.split(".", 1)[0]
        known = SHARD_RE.match(stem) and p.name[len(stem):] in (".tar", ".parquet", ".stats.json")
        if not known or stem not in listed_stems or not p.is_file():
            extra.append(p.name)
    return extra


def verify_run(out: str | os.PathLike) -> dict[str, Any]:
    """Check a run's shards against ``<out>/manifests/{selected,shards}.parquet``.

    Returns verify_shards' report (``ok``, ``shards``, ``summary``, ``warnings``) plus
    ``run_problems``: every gap between the manifests and the files. ``ok`` is False on any
    problem (a temp file included: the run was interrupted or is still writing).
    """
    out = Path(out)
    sd = out / "shards"
    problems: list[str] = []
    man = out / "manifests"
    selected: list[dict[str, Any]] = []
    shard_rows: list[dict[str, Any]] = []
    for name, cols, dest in (("selected", ["key", "status"], selected),
                             ("shards", ["key", "split", "shard", "offset", "size", "sha256"], shard_rows)):
        p = man / f"{name}.parquet"
        if not p.exists():
            problems.append(f"manifest {name}.parquet missing (the stage did not finish)")
            continue
        try:
            dest.extend(_read_manifest_rows(p, cols))
        except Exception as e:  # an unreadable manifest is a finding
            problems.append(f"manifest {name}.parquet unreadable: {e}")
    shards: dict[str, dict[str, Any]] = {}
    repaired = 0
    if sd.is_dir():
        # every shard found on disk is checked too (a stray one is also an extra file)
        shards = {stem: verify_shard(sd, stem) for stem in _stems(sd)[0]}
    elif shard_rows or any(r.get("status") == "ok" for r in selected):
        problems.append(f"{sd} is not a folder")
    if (man / "selected.parquet").exists() and (man / "shards.parquet").exists():
        problems += _membership(selected, shard_rows)
    problems += _manifest_offsets(man / "selected.parquet")
    if sd.is_dir():
        problems += _check_listed_shards(sd, shard_rows, shards)
        repaired = _repairs(sd, man, shard_rows, problems)
        extra = _extra_files(sd, {str(r["shard"])[:-4] for r in shard_rows})
        if extra:
            problems.append(_listed("files in shards/ not in the shards manifest", extra))
    temps = _temp_files(out)
    if temps:
        problems.append(_listed("temporary files of an interrupted write", temps))
    bad = [s for s, r in shards.items() if not r["ok"]]
    summary = {"shards": len(shards), "ok": len(shards) - len(bad), "bad": len(bad),
               "samples": sum(r["samples"] for r in shards.values()),
               "problems": sum(len(r["problems"]) for r in shards.values()) + len(problems),
               "due": len({r["key"] for r in selected if r.get("status") == "ok"}),
               "listed_shards": len({r["shard"] for r in shard_rows}), "repaired_checked": repaired}
    return {"ok": not problems and not bad, "shards": shards, "summary": summary,
            "warnings": [], "run_problems": problems}


def verify_path(path: str | os.PathLike) -> dict[str, Any]:
    """``curate verify PATH``: a run folder (has ``manifests/``) is checked against its
    manifests (``verify_run``); a bare shards folder only against its indices."""
    p = Path(path)
    if (p / "manifests").is_dir():
        return verify_run(p)
    return verify_shards(p / "shards" if (p / "shards").is_dir() else p)
