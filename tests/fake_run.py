"""A run folder with the manifests `curate export-folder` reads, around given mp4 files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from curate.config.recipes import get_recipe
from manifests.schemas import write_manifest
from shards.writer import key_from_name


def fake_run(out: Path, recipe: str, clips: list[tuple[str, str, Path]]) -> Path:
    """``clips``: (clip name, split, mp4). Writes run.json (the recipe), the selected and
    shards manifests, and media/clips/<key>.mp4 as the shard stage leaves them."""
    clip_dir = out / "media" / "clips"
    clip_dir.mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"recipe": get_recipe(recipe), "options": {}}))
    rows = []
    for name, split, mp4 in clips:
        key = key_from_name(name)
        shutil.copyfile(mp4, clip_dir / f"{key}.mp4")
        rows.append({"key": key, "name": name, "class_name": name.split("/")[0],
                     "split": split, "status": "ok", "error": None})
    write_manifest(out, "selected", rows)
    write_manifest(out, "shards", [{"key": r["key"], "split": r["split"], "shard": "x.tar",
                                    "offset": 0, "size": 1, "sha256": "0"} for r in rows])
    return out
