"""Writing curated clips into WebDataset tar shards, with a Parquet index and stats beside each.

Layout (DESIGN section 7)::

    <out>/shards/{split}-{n:06d}.tar          the samples
    <out>/shards/{split}-{n:06d}.parquet      index: one row per tar member
    <out>/shards/{split}-{n:06d}.stats.json   count, bytes, whole-tar sha256, per-class counts, seconds

A sample is four members, in this order: ``{key}.mp4`` (the clip), ``{key}.json`` (metadata),
``{key}.cls`` (class index as text), ``{key}.txt`` (class name as prompt). WebDataset groups
members by the part of the file name before the first dot, so keys must contain no dot.

Index granularity: one row per *member* (key, member, header_offset, offset = byte offset of
the member's data in the tar, size, sha256 of the data), so ``shards.verify`` can tell which
member of which sample is damaged. The stats file carries the sha256 of the whole tar, which
also covers headers and padding. The SHARDS manifest (``write_shards``' return value) has one
row per *sample*: ``offset``/``size`` is the sample's byte range in the tar, from its first
header to the end of its last member's padded data, and ``sha256`` hashes that range; the
range is itself a valid tar stream, so a reader can fetch one sample with a range request.

Tars are deterministic: samples ordered by sha256(key) (mixes classes inside a shard, and
does not depend on the order the engine produced them), members in the fixed order above,
mtime 0, uid/gid 0, mode 0444, GNU format. Every file is written under a temporary name and
renamed; the index and stats are renamed after the tar.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa

from manifests.names import ClipName, parse_clip_name
from manifests import schemas
from manifests.schemas import write_atomic
from manifests.source_lists import display_name
from manifests.atomic import atomic_path, write_json

log = logging.getLogger(__name__)

MEMBER_EXTS = ("mp4", "json", "cls", "txt")
MTIME = 0
BLOCK = tarfile.BLOCKSIZE

INDEX_SCHEMA = pa.schema([
    pa.field("key", pa.string()), pa.field("member", pa.string()),
    pa.field("header_offset", pa.int64()), pa.field("offset", pa.int64()),
    pa.field("size", pa.int64()), pa.field("sha256", pa.string()),
])

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")
SHARD_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<n>\d{6})$")
# Clip names {class}/{ytid}_{segStart:06d}_{segEnd:06d}_{clipStart}_{clipEnd}: the grammar is
# manifests.names (one definition, shared with the source reader and reproduction).
YOUTUBE_ID_LEN = 11


# ---------------------------------------------------------------- names and keys

def parse_name(name: str) -> ClipName:
    """Parse ``{class}/{ytid}_{s:06d}_{e:06d}_{cs}_{ce}[.mp4]`` (``manifests.names``; the class
    folder is required); ValueError when it does not match."""
    try:
        return parse_clip_name(name, require_class=True)
    except ValueError as e:
        raise ValueError(f"not a clip name of the form class/ytid_SSSSSS_EEEEEE_cs_ce: "
                         f"{name!r} ({e})") from e


def key_from_name(name: str) -> str:
    """Shard key of a clip name: ``/`` -> ``-``, ``.`` -> ``p`` in the clip times.

    ``dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0`` -> ``dog_barking-AbCdEfGhIjK_000030_000040_2p5_6p0``
    """
    c = parse_name(name)
    key = (f"{c.class_name}-{c.ytid}_{c.seg_start:06d}_{c.seg_end:06d}_"
           f"{c.clip_start_text.replace('.', 'p')}_{c.clip_end_text.replace('.', 'p')}")
    validate_key(key)
    return key


def name_from_key(key: str, class_names: Iterable[str] | None = None) -> str:
    """Inverse of ``key_from_name``.

    Class folders may contain '-' (``dog_bow-wow``), so the class/clip boundary is found with
    ``class_names`` when given (longest matching class); without them, the ytid is taken to
    be YouTube's 11 characters when that parses, else the class ends at the first '-'.
    """
    validate_key(key)
    for cls in _class_candidates(key, class_names):
        rest = key[len(cls) + 1:]
        parts = rest.rsplit("_", 2)
        if len(parts) != 3:
            continue
        head, cs, ce = parts
        name = f"{cls}/{head}_{cs.replace('p', '.')}_{ce.replace('p', '.')}"
        try:
            if key_from_name(name) == key:
                return name
        except ValueError:
            continue
    raise ValueError(f"not a clip key: {key!r}")


def _class_candidates(key: str, class_names: Iterable[str] | None) -> list[str]:
    if class_names is not None:
        return sorted((c for c in class_names if key.startswith(c + "-")), key=len, reverse=True)
    m = re.match(r"^(?P<cls>.+)-(?P<ytid>[A-Za-z0-9_-]{%d})_\d{6}_\d{6}_[0-9p]+_[0-9p]+$"
                 % YOUTUBE_ID_LEN, key)
    first = key.split("-", 1)[0]
    return ([m["cls"]] if m else []) + [first]


def validate_key(key: str) -> str:
    """Keys are ``[A-Za-z0-9_-]+``: no dot (WebDataset splits at the first dot), no path."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        why = "contains a dot" if isinstance(key, str) and "." in key else "must match [A-Za-z0-9_-]+"
        raise ValueError(f"invalid sample key {key!r}: {why}")
    return key


def prompt_from_class(class_name: str) -> str:
    """Text prompt of a class folder name: ``dog_barking`` -> ``dog barking`` (each run of
    '_' -> one space; the rule lives in ``manifests.source_lists.display_name``)."""
    return display_name(class_name)


# ---------------------------------------------------------------- samples

@dataclass
class Sample:
    """One clip to write. ``meta`` becomes ``{key}.json``; it must be JSON-serialisable
    without NaN/inf (a score that could not be computed is None)."""
    key: str
    mp4: Path
    meta: dict[str, Any]
    class_index: int
    text: str
    class_name: str | None = None       # stats' per-class counts (default: meta class_name/class)
    duration: float | None = None       # stats' total seconds (default: probed from the mp4)
    _json: bytes = field(default=b"", repr=False, compare=False)


def make_meta(selected: Mapping[str, Any], source: Mapping[str, Any] | None = None,
              clip: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``{key}.json`` of a selected clip: ids, segment and clip times, class, split, url and
    every score (the merged clip's mean over its windows; None where not computed)."""
    c = parse_name(selected["name"])
    source = source or {}
    clip = clip or {}
    return {
        "key": key_from_name(selected["name"]), "name": selected["name"],
        "ytid": source.get("ytid") or c.ytid,
        "segment_start": float(source["start"]) if source.get("start") is not None else float(c.seg_start),
        "segment_end": float(source["end"]) if source.get("end") is not None else float(c.seg_end),
        "clip_start": float(selected["start"]), "clip_end": float(selected["end"]),
        # the frame instants actually cut (relative to the segment) and the clip's measured
        # first-audio-sample minus first-video-frame time (ms); the name keeps the list's times
        # and a repair's audio shift (ms, positive = the source's audio was late), whether it
        # shipped repaired, and why (None: repair off)
        **{c: selected.get(c) for c in schemas.CUT_COLUMNS},
        "class_name": selected["class_name"], "split": selected["split"],
        "source_id": selected.get("source_id"), "clip_id": selected.get("clip_id"),
        "url": source.get("url"), "label": source.get("label"),
        "rank_score": selected.get("rank_score"), "n_windows": clip.get("n_windows"),
        "scores": {s: clip.get(s) for s in (*schemas.ALL_SCORES, *schemas.CLIP_MAX_COLUMNS,
                                             *schemas.CLIP_ONLY_COLUMNS)},
        # Synchformer's offsets of the merged clip (certify stage; None where not measured) and
        # the sync classifier's own clip offset (``filters.sync``: the mode over its windows)
        "sync_certificate": {c: clip.get(c) for c in (*schemas.CERT_COLUMNS, *schemas.CERT_CLIP_COLUMNS,
                                                      schemas.CERT_NOTE)},
    }


def make_sample(selected: Mapping[str, Any], clip_path: str | os.PathLike, class_index: int,
                source: Mapping[str, Any] | None = None, clip: Mapping[str, Any] | None = None,
                duration: float | None = None) -> Sample:
    """A Sample from a row of the selected table (+ its source and merged-clip rows)."""
    key = key_from_name(selected["name"])
    if selected.get("key") and selected["key"] != key:
        raise ValueError(f"selected key {selected['key']!r} != key_from_name(name) {key!r}")
    return Sample(key=key, mp4=Path(clip_path), meta=make_meta(selected, source, clip),
                  class_index=int(class_index), text=prompt_from_class(selected["class_name"]),
                  class_name=selected["class_name"], duration=duration)


def _validate(samples: list[Sample]) -> None:
    """All problems at once, before anything is written."""
    problems, seen = [], set()
    for s in samples:
        try:
            validate_key(s.key)
        except ValueError as e:
            problems.append(str(e))
            continue
        if s.key in seen:
            problems.append(f"duplicate key {s.key!r}")
        seen.add(s.key)
        if not Path(s.mp4).is_file():
            problems.append(f"{s.key}: clip {s.mp4} does not exist")
        if isinstance(s.class_index, bool) or not isinstance(s.class_index, int) or s.class_index < 0:
            problems.append(f"{s.key}: class_index must be an int >= 0, got {s.class_index!r}")
        try:
            s._json = json.dumps(s.meta, sort_keys=True, ensure_ascii=False,
                                 allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            problems.append(f"{s.key}: meta is not JSON without NaN: {e}")
    if problems:
        raise ValueError(f"{len(problems)} invalid sample(s): " + "; ".join(problems[:20]))


# ---------------------------------------------------------------- tar writing

def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


class _HashingWriter(io.RawIOBase):
    """File wrapper hashing everything written: whole file, and the current sample's range."""

    def __init__(self, raw) -> None:
        self.raw, self.pos = raw, 0
        self.whole = hashlib.sha256()
        self.part: Any = None

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        b = bytes(b)
        self.raw.write(b)
        self.whole.update(b)
        if self.part is not None:
            self.part.update(b)
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.type = size, MTIME, 0o444, tarfile.REGTYPE
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def _members(s: Sample) -> list[tuple[str, bytes]]:
    data = {"mp4": Path(s.mp4).read_bytes(), "json": s._json,
            "cls": str(s.class_index).encode(), "txt": s.text.encode("utf-8")}
    return [(f"{s.key}.{ext}", data[ext]) for ext in MEMBER_EXTS]


def _write_tar(path: Path, samples: list[Sample], shard: str, split: str):
    """Write one tar (temp + rename). Returns (index rows, manifest rows, bytes, sha256)."""
    index, manifest = [], []
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        hw = _HashingWriter(raw)
        with tarfile.open(fileobj=hw, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for s in samples:
                start = tar.offset
                hw.part = hashlib.sha256()
                for member, data in _members(s):
                    header = tar.offset
                    tar.addfile(_tarinfo(member, len(data)), io.BytesIO(data))
                    index.append({"key": s.key, "member": member, "header_offset": header,
                                  "offset": tar.offset - _padded(len(data)), "size": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest()})
                manifest.append({"key": s.key, "split": split, "shard": shard, "offset": start,
                                 "size": tar.offset - start, "sha256": hw.part.hexdigest()})
                hw.part = None
        raw.flush()
        os.fsync(raw.fileno())
    return index, manifest, hw.pos, hw.whole.hexdigest()


def _write_json_atomic(obj: Any, path: Path) -> None:
    write_json(path, obj, indent=1, sort_keys=True)


def _duration(s: Sample) -> float:
    if s.duration is not None:
        return float(s.duration)
    from decoding.media import probe  # only when the caller did not give durations
    d = probe(s.mp4)["duration"]
    return float(d or 0.0)


def _stats(shard: str, split: str, samples: list[Sample], size: int, sha: str) -> dict:
    per_class: dict[str, int] = {}
    for s in samples:
        c = s.class_name or s.meta.get("class_name") or s.meta.get("class") or str(s.class_index)
        per_class[c] = per_class.get(c, 0) + 1
    return {"shard": shard, "split": split, "count": len(samples),
            "members": len(samples) * len(MEMBER_EXTS), "bytes": size, "sha256": sha,
            "per_class": dict(sorted(per_class.items())),
            "total_seconds": round(sum(_duration(s) for s in samples), 3)}


def _group(samples: list[Sample], max_count: int, max_bytes: int) -> list[list[Sample]]:
    """Consecutive groups of at most max_count samples and about max_bytes (a lone sample
    larger than max_bytes still gets its own shard)."""
    groups: list[list[Sample]] = []
    cur, cur_bytes = [], 2 * BLOCK
    for s in samples:
        est = sum(BLOCK + _padded(n) for n in
                  (Path(s.mp4).stat().st_size, len(s._json), len(str(s.class_index)), len(s.text.encode())))
        if cur and (len(cur) >= max_count or cur_bytes + est > max_bytes):
            groups.append(cur)
            cur, cur_bytes = [], 2 * BLOCK
        cur.append(s)
        cur_bytes += est
    if cur:
        groups.append(cur)
    return groups


def shard_stem(split: str, n: int) -> str:
    return f"{split}-{n:06d}"


def _remove_stale(shards_dir: Path, split: str, keep: int) -> None:
    """Shards of this split numbered >= keep are left from an earlier, larger run: remove."""
    for p in sorted(shards_dir.glob(f"{split}-*")):
        m = SHARD_RE.match(p.name.split(".", 1)[0])
        if m and m["split"] == split and int(m["n"]) >= keep:
            log.info("removing stale shard file %s", p)
            p.unlink()


def write_shards(out_dir: str | os.PathLike, samples: Iterable[Sample], split: str,
                 max_count: int = 1000, max_bytes: int = 1 << 30) -> list[dict[str, Any]]:
    """Write ``samples`` of one split to ``<out_dir>/shards/{split}-{n:06d}.tar`` (+ index, stats).

    Raises ValueError (nothing written) on an invalid key (a dot, a slash...), a duplicate
    key, a missing clip file, a bad class index or meta that is not JSON. Returns one row per
    sample for the SHARDS manifest: key, split, shard (tar file name), offset, size, sha256.
    """
    if not split:
        raise ValueError("samples have no split (empty split in the sources): reject the rows "
                         "or let the recipe assign splits (see split_groups)")
    if not isinstance(split, str) or not SPLIT_RE.match(split):
        raise ValueError(f"invalid split name {split!r}")
    if max_count < 1 or max_bytes < 1:
        raise ValueError("max_count and max_bytes must be positive")
    samples = list(samples)
    _validate(samples)
    samples.sort(key=lambda s: hashlib.sha256(s.key.encode()).hexdigest())
    shards_dir = Path(out_dir) / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    groups = _group(samples, max_count, max_bytes)
    for n, group in enumerate(groups):
        stem = shard_stem(split, n)
        index, manifest, size, sha = _write_tar(shards_dir / f"{stem}.tar", group, f"{stem}.tar", split)
        idx = write_atomic(pa.Table.from_pylist(index, schema=INDEX_SCHEMA), shards_dir / f"{stem}.parquet")
        os.chmod(idx, 0o644)  # write_atomic's mkstemp leaves 0600
        _write_json_atomic(_stats(f"{stem}.tar", split, group, size, sha), shards_dir / f"{stem}.stats.json")
        rows.extend(manifest)
        log.info("wrote %s: %d samples, %d bytes", stem, len(group), size)
    _remove_stale(shards_dir, split, len(groups))
    return rows


def split_groups(rows: Iterable[Mapping[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]],
                                                           list[dict[str, Any]]]:
    """Selected rows grouped by split, in sorted split order, and the rows that cannot be
    sharded (empty or invalid split) as failed copies with the reason. Never raises on a
    missing split (sorting {None, "train"} did: TypeError)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    bad: list[dict[str, Any]] = []
    for r in rows:
        split = r.get("split")
        if isinstance(split, str) and SPLIT_RE.match(split):
            groups.setdefault(split, []).append(dict(r))
        else:
            why = "no split" if not split else f"invalid split name {split!r}"
            bad.append({**r, "status": "failed", "error": f"shard: {why}"})
    return dict(sorted(groups.items())), bad


def shard_urls(shards_dir: str | os.PathLike, split: str) -> list[str]:
    """Sorted tar paths of one split (for ``shards.loader.make_dataset``)."""
    return [str(p) for p in sorted(Path(shards_dir).glob(f"{split}-*.tar"))
            if SHARD_RE.match(p.stem) and SHARD_RE.match(p.stem)["split"] == split]
