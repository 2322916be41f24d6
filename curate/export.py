"""Export selected clips as the folder layout AVSyncD's own loaders read.

AVSyncD (lzhangbj/ASVA, ``avgen/data/base.py``) reads ``example_list_path`` (train.txt /
test.txt), strips each line and opens ``os.path.join(data_root, line)`` with
``data_root = <dataset>/videos``; the class is ``line.split('/')[0]``, looked up in
``class_mapping.json`` for the text prompt. So the lines carry the ``.mp4`` extension::

    <dest>/videos/dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0.mp4
    <dest>/train.txt            dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0.mp4 (one per line, sorted)
    <dest>/test.txt
    <dest>/class_mapping.json   {"dog_barking": "dog barking", ...}

The clip name is the selected table's ``name`` (``{class}/{ytid}_{s:06d}_{e:06d}_{cs}_{ce}``),
parsed strictly (``shards.writer.parse_name``; class and ytid are safe ids) before it becomes
a path. ``shards.writer.key_from_name(name)`` gives the shard key of the same clip, and
``name_from_key`` goes back.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

from manifests.schemas import STATUS_OK, has_manifest, read_rows
from manifests.sources import safe_id
from shards.writer import key_from_name, parse_name, prompt_from_class
from manifests.atomic import atomic_path, write_text

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


def _write_text_atomic(text: str, path: Path) -> None:
    write_text(path, text)


def _place(src: Path, dst: Path, link: bool) -> None:
    """Hard link (same file system) or copy, via a temp name; an existing identical file stays."""
    if dst.exists() and dst.stat().st_size == src.stat().st_size and (
            dst.samefile(src) or dst.read_bytes() == src.read_bytes()):
        return  # re-export: already in place
    with atomic_path(dst) as tmp:
        if link:
            try:
                os.unlink(tmp)
                os.link(src, tmp)
            except OSError:  # another file system: copy
                shutil.copyfile(src, tmp)
        else:
            shutil.copyfile(src, tmp)


def _plan(selected_rows: Iterable[Mapping[str, Any]],
          clip_paths: Mapping[str, str | os.PathLike]) -> list[tuple[str, str, str, Path]]:
    """(split, class, clip file name, source path) per exported clip; errors all at once."""
    plan, problems = [], []
    for row in selected_rows:
        if row.get("status", STATUS_OK) != STATUS_OK:
            continue  # rejected/failed rows are not part of the dataset
        name = row.get("name")
        try:
            c = parse_name(name)
            safe_id(c.class_name)
            key = key_from_name(name)
        except ValueError as e:
            problems.append(str(e))
            continue
        if row.get("split") not in SPLITS:
            problems.append(f"{name}: split {row.get('split')!r} is not train/test")
            continue
        src = clip_paths.get(key) or clip_paths.get(name)
        if src is None or not Path(src).is_file():
            problems.append(f"{name}: no clip file (looked up key {key!r})")
            continue
        plan.append((row["split"], c.class_name, f"{c.clip}.mp4", Path(src)))
    if problems:
        raise ValueError(f"{len(problems)} clip(s) cannot be exported: " + "; ".join(problems[:20]))
    return plan


def export_folder(selected_rows: Iterable[Mapping[str, Any]],
                  clip_paths: Mapping[str, str | os.PathLike], dest: str | os.PathLike,
                  link: bool = False) -> None:
    """Write AVSyncD's ``videos/<class>/<clip>.mp4``, ``train.txt``, ``test.txt`` and
    ``class_mapping.json`` under ``dest``.

    ``selected_rows``: rows of the selected table (rows whose status is not ``ok`` are
    skipped). ``clip_paths``: cut clip per shard key (``key_from_name(name)``; the name
    itself is accepted too). ``link``: hard-link instead of copying when possible.
    Raises ValueError, before writing anything, when a name does not parse, a split is not
    train/test, a clip file is missing, or two rows give the same file.
    """
    plan = _plan(selected_rows, clip_paths)
    seen: set[str] = set()
    for _, cls, fname, _ in plan:
        rel = f"{cls}/{fname}"
        if rel in seen:
            raise ValueError(f"two selected rows export to {rel}")
        seen.add(rel)
    dest = Path(dest)
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    classes: set[str] = set()
    for split, cls, fname, src in plan:
        folder = dest / "videos" / cls
        folder.mkdir(parents=True, exist_ok=True)
        _place(src, folder / fname, link)
        lines[split].append(f"{cls}/{fname}")
        classes.add(cls)
    for split in SPLITS:
        body = "".join(f"{line}\n" for line in sorted(lines[split]))
        _write_text_atomic(body, dest / f"{split}.txt")
    mapping = json.dumps({c: prompt_from_class(c) for c in sorted(classes)}, indent=1) + "\n"
    _write_text_atomic(mapping, dest / "class_mapping.json")
    log.info("exported %d clips (%d train, %d test) to %s", len(plan), len(lines["train"]),
             len(lines["test"]), dest)


def export_run(out: str | os.PathLike, dest: str | os.PathLike, link: bool = False) -> int:
    """Export a run's sharded clips (``<out>/media/clips/<key>.mp4``) to AVSyncD's layout.

    Exports the ``ok`` rows of the selected table whose key is in the shards manifest (the
    clips that were cut and written); the others are counted in the log. Returns the number
    of clips exported. Raises FileNotFoundError when the shard stage has not run.
    """
    out = Path(out)
    if not has_manifest(out, "shards"):
        raise FileNotFoundError(f"{out}: no shards manifest: run `curate shard {out}` first")
    sharded = {r["key"] for r in read_rows(out, "shards")}
    rows = [r for r in read_rows(out, "selected") if r.get("status") == STATUS_OK]
    keep = [r for r in rows if r.get("key") in sharded]
    if len(keep) < len(rows):
        log.warning("%d selected clips are not in the shards (not cut?): not exported",
                    len(rows) - len(keep))
    clip_dir = out / "media" / "clips"
    clip_paths: dict[str, Path] = {}
    for r in keep:
        try:
            key = key_from_name(r["name"])  # derived, never the stored string, before a path
        except ValueError:
            continue  # export_folder reports the bad name
        clip_paths[key] = clip_dir / f"{key}.mp4"
    export_folder(keep, clip_paths, dest, link=link)
    return len(keep)
