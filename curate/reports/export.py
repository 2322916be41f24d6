"""Export selected clips as the dataset folders the paper's own code reads (lzhangbj/ASVA).

The released README's layout, per recipe (``recipe["export"]["layout"]``):

* ``class`` (AVSync15, VGGSS, the default)::

    <dest>/videos/dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0.mp4
    <dest>/train.txt            dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0.mp4 (sorted)
    <dest>/test.txt

* ``split_class`` (Landscapes): ``<dest>/videos/train/<class>/...`` and
  ``<dest>/videos/test/<class>/...``; the list lines stay ``<class>/<file>.mp4``, because the
  released config points ``data_root`` at ``videos/train`` (and the evaluation at ``videos/test``).

plus ``class_mapping.json`` (``{"dog_barking": "dog barking"}``: the generation dataset
looks up ``line.split('/')[0]``), and, from a local text encoder (``curate.reports.export_text``),
``class_clip_text_encodings_stable-diffusion-v1-5.pt`` (prompt -> [77, 768]) and
``openai-clip-l_null_text_encoding.pt`` (the empty prompt, which the trainer reads from
``pretrained/``). ``export.json`` records what was written and the warnings below.

AVSyncD's dataset (``avgen/data/base.py``) opens ``os.path.join(data_root, line)``. Its sync
classifier's dataset (``avsync/data.py``) asserts ``av_duration >= 2 + 20 * 0.2`` s and
``fps >= 12`` and, on failure, silently returns the next sample instead; the export lists
the clips it would drop (``released_warnings``), measured as the released code measures them
(``decoding.native.released_metadata``: stream durations in whole microseconds).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from manifests.atomic import atomic_path, write_json, write_text
from manifests.schemas import STATUS_OK, has_manifest, read_rows
from manifests.names import safe_id
from shards.writer import key_from_name, parse_name, prompt_from_class

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
LAYOUTS = ("class", "split_class")
#: the released sync classifier's dataset (configs/avsync/vggss_sync_contrast.yaml, train and
#: test): 12 frames at 6 fps plus (num_clips - 1) * shift_time = 20 * 0.2 s of shifts
SYNC_CLIP_S = 12 / 6
SYNC_SHIFT_S = (21 - 1) * 0.2
SYNC_MIN_S = SYNC_CLIP_S + SYNC_SHIFT_S
SYNC_MIN_FPS = 12
#: the generation dataset's window (12 frames at 6 fps): shorter clips repeat their last frame
GEN_CLIP_S = 12 / 6
REPORT_FILE = "export.json"


@dataclass
class ExportResult:
    """What an export wrote: clip counts, the files, and the clips the released code mishandles."""
    dest: str
    layout: str
    n_train: int = 0
    n_test: int = 0
    files: dict[str, str] = field(default_factory=dict)
    #: one dict per exported clip the released sync classifier's dataset would silently
    #: replace: {"split", "line", "av_duration", "video_fps", "reasons"}
    sync_dropped: list[dict[str, Any]] = field(default_factory=list)
    #: clips shorter than the generation window (frames repeat, audio is short)
    gen_short: list[dict[str, Any]] = field(default_factory=list)
    text_encodings: str | None = None  # None, or a note on how they were made / how to add them

    @property
    def n_clips(self) -> int:
        return self.n_train + self.n_test


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


def video_root(dest: str | os.PathLike, split: str, layout: str = "class") -> Path:
    """The folder the released config's ``data_root`` names for ``split``."""
    if layout not in LAYOUTS:
        raise ValueError(f"export layout must be one of {LAYOUTS}, got {layout!r}")
    return Path(dest) / "videos" / (split if layout == "split_class" else "")


def export_folder(selected_rows: Iterable[Mapping[str, Any]],
                  clip_paths: Mapping[str, str | os.PathLike], dest: str | os.PathLike,
                  link: bool = False, layout: str = "class") -> ExportResult:
    """Write the videos, ``train.txt``, ``test.txt`` and ``class_mapping.json`` under ``dest``.

    ``selected_rows``: rows of the selected table (rows whose status is not ``ok`` are
    skipped). ``clip_paths``: cut clip per shard key (``key_from_name(name)``; the name
    itself is accepted too). ``link``: hard-link instead of copying when possible.
    ``layout``: ``class`` (``videos/<class>/``) or ``split_class`` (``videos/<split>/<class>/``).
    Raises ValueError, before writing anything, when a name does not parse, a split is not
    train/test, a clip file is missing, or two rows give the same file.
    """
    video_root(dest, "train", layout)  # validates the layout before anything is written
    plan = _plan(selected_rows, clip_paths)
    seen: set[str] = set()
    for split, cls, fname, _ in plan:
        rel = f"{split}/{cls}/{fname}" if layout == "split_class" else f"{cls}/{fname}"
        if rel in seen:
            raise ValueError(f"two selected rows export to {rel}")
        seen.add(rel)
    dest = Path(dest)
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    classes: set[str] = set()
    for split, cls, fname, src in plan:
        folder = video_root(dest, split, layout) / cls
        folder.mkdir(parents=True, exist_ok=True)
        _place(src, folder / fname, link)
        lines[split].append(f"{cls}/{fname}")
        classes.add(cls)
    res = ExportResult(dest=str(dest), layout=layout, n_train=len(lines["train"]),
                       n_test=len(lines["test"]))
    for split in SPLITS:
        body = "".join(f"{line}\n" for line in sorted(lines[split]))
        res.files[f"{split}.txt"] = str(write_text(dest / f"{split}.txt", body))
    mapping = json.dumps({c: prompt_from_class(c) for c in sorted(classes)}, indent=1) + "\n"
    res.files["class_mapping.json"] = str(write_text(dest / "class_mapping.json", mapping))
    log.info("exported %d clips (%d train, %d test) to %s", len(plan), res.n_train, res.n_test,
             dest)
    return res


def released_warnings(dest: str | os.PathLike, layout: str = "class"
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(clips the released sync classifier's dataset silently replaces, clips shorter than
    the generation window) among the clips listed in ``dest``'s train.txt / test.txt, each
    as {"split", "line", "av_duration", "video_fps", "reasons"}, in list order."""
    from decoding.media import DecodeError
    from decoding.native import released_metadata
    sync, gen = [], []
    for split in SPLITS:
        for line in (Path(dest) / f"{split}.txt").read_text().splitlines():
            try:
                meta = released_metadata(video_root(dest, split, layout) / line)
            except DecodeError as e:  # listed, the export goes on
                sync.append({"split": split, "line": line, "av_duration": None,
                             "video_fps": None, "reasons": [f"unreadable: {e}"]})
                continue
            d, fps = meta["av_duration"] or 0.0, meta["video_fps"] or 0.0
            item = {"split": split, "line": line, "av_duration": round(d, 6),
                    "video_fps": round(fps, 3)}
            reasons = []
            if meta["audio_duration"] is None:
                reasons.append("no audio stream")
            if d < SYNC_MIN_S:
                reasons.append(f"av_duration {d:.3f} s < {SYNC_MIN_S:g} s")
            if fps < SYNC_MIN_FPS:
                reasons.append(f"video_fps {fps:.2f} < {SYNC_MIN_FPS}")
            if reasons:
                sync.append({**item, "reasons": reasons})
            if d < GEN_CLIP_S:
                gen.append({**item, "reasons": [f"av_duration {d:.3f} s < {GEN_CLIP_S:g} s"]})
    return sync, gen


def _log_warnings(res: ExportResult) -> None:
    if res.sync_dropped:
        log.warning(
            "%d of %d clips are unusable by the released sync classifier's dataset "
            "(avsync/data.py needs av_duration >= %g s = %g s clip + %g s of shifts, and "
            "fps >= %d; its bare except then silently returns another clip): %s",
            len(res.sync_dropped), res.n_clips, SYNC_MIN_S, SYNC_CLIP_S, SYNC_SHIFT_S,
            SYNC_MIN_FPS, "; ".join(f"{w['split']}/{w['line']} ({', '.join(w['reasons'])})"
                                    for w in res.sync_dropped))
    if res.gen_short:
        log.warning("%d clips are shorter than the generation window (%g s): the released "
                    "dataset repeats their last frame: %s", len(res.gen_short), GEN_CLIP_S,
                    "; ".join(f"{w['split']}/{w['line']}" for w in res.gen_short))


def _text_step(dest: Path, enc, out_hint: str) -> tuple[str, dict]:
    """Write the text encodings with the loaded encoder ``enc`` (or say how to add them);
    returns (note, files written)."""
    from curate.reports.export_text import NULL_FILE, PROMPT_FILE, stale_prompts, write_text_encodings
    if enc is not None:
        files = write_text_encodings(dest, enc)
        return f"written with the {enc.kind} text encoder {enc.path}", files
    later = (f"curate export-folder {out_hint} {dest} --text-encodings-only --text-encoder PATH "
             "(PATH: Stable Diffusion 1.5's folder, its text_encoder/ folder, or an open_clip "
             "ViT-L-14 checkpoint)")
    stale = stale_prompts(dest)
    if stale is None:
        return f"not written (no --text-encoder): {PROMPT_FILE} and {NULL_FILE} are missing; " \
               f"add them with: {later}", {}
    if stale:
        return f"STALE: {PROMPT_FILE} lacks {len(stale)} prompt(s) of class_mapping.json " \
               f"({', '.join(stale[:5])}); the released dataset would fail on them: {later}", {}
    return f"kept: the existing {PROMPT_FILE} covers every prompt", {}


def _write_report(res: ExportResult, text_encoder: str | None) -> None:
    report = {"layout": res.layout, "train": res.n_train, "test": res.n_test,
              "text_encoder": None if text_encoder is None else str(text_encoder),
              "text_encodings": res.text_encodings,
              "sync_min_duration_s": SYNC_MIN_S, "sync_dropped": res.sync_dropped,
              "generation_short": res.gen_short}
    res.files[REPORT_FILE] = str(write_json(Path(res.dest) / REPORT_FILE, report, indent=1,
                                            sort_keys=True))


def _layout_of(out: Path) -> str:
    from curate.config.run_state import load_run
    try:
        recipe = load_run(out)["recipe"]
    except FileNotFoundError:
        return "class"
    return (recipe.get("export") or {}).get("layout", "class")


def export_run(out: str | os.PathLike, dest: str | os.PathLike, link: bool = False,
               text_encoder: str | os.PathLike | None = None,
               layout: str | None = None) -> ExportResult:
    """Export a run's sharded clips (``<out>/media/clips/<key>.mp4``) to the released layout.

    Exports the ``ok`` rows of the selected table whose key is in the shards manifest (the
    clips that were cut and written); the others are counted in the log. ``layout``: default
    the recipe's (``run.json``), else ``class``. ``text_encoder``: local encoder for the
    prompt encodings (``curate.reports.export_text``); without it the rest is exported and the
    result says how to add them. Raises FileNotFoundError when the shard stage has not run,
    ``curate.reports.export_text.TextEncoderError`` (before anything is written) for a bad encoder.
    """
    out, dest = Path(out), Path(dest)
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"export folder {dest} is a file, not a folder: choose another destination")
    if not has_manifest(out, "shards"):
        raise FileNotFoundError(f"{out}: no shards manifest: run `curate shard {out}` first")
    enc = None
    if text_encoder is not None:
        from curate.reports.export_text import load_text_encoder
        enc = load_text_encoder(text_encoder)  # a bad --text-encoder fails before the copy
    layout = layout or _layout_of(out)
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
    res = export_folder(keep, clip_paths, dest, link=link, layout=layout)
    res.sync_dropped, res.gen_short = released_warnings(dest, layout)
    _log_warnings(res)
    res.text_encodings, files = _text_step(dest, enc, str(out))
    res.files.update(files)
    _write_report(res, None if text_encoder is None else str(text_encoder))
    return res


def export_text_encodings(dest: str | os.PathLike, text_encoder: str | os.PathLike) -> dict[str, str]:
    """Add (or redo) the text encodings of an existing export from its class_mapping.json."""
    from curate.reports.export_text import load_text_encoder, write_text_encodings
    dest = Path(dest)
    if not (dest / "class_mapping.json").is_file():
        raise FileNotFoundError(f"{dest}: no class_mapping.json: export the folder first")
    files = write_text_encodings(dest, load_text_encoder(text_encoder))
    report = dest / REPORT_FILE
    if report.is_file():
        data = json.loads(report.read_text())
        data["text_encoder"] = str(text_encoder)
        data["text_encodings"] = f"written with --text-encodings-only from {text_encoder}"
        write_json(report, data, indent=1, sort_keys=True)
    return files
