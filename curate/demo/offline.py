"""`curate build demo`: a real, small curation run with no network and no GPU.

A labelled corpus is generated (`curate synth`), served from a loopback HTTP server so that
the real yt-dlp path downloads it, and every stage runs on it. CLIP and ImageBind have random
weights here (scored, not gating); the sync filter gates with the small classifier shipped in
the package (``sync_classifier.model.DEMO_CHECKPOINT``, trained by our own code on generated
flash/beep events with ``benchmarks/train_sync_small.py --demo``; none of the demo's videos is
in its training set). ``--sync-checkpoint`` overrides it; without the shipped file the run
trains a small classifier on the demo's train split (stage ``train-sync``, time-bounded).
Certify uses the small Synchformer-shaped model shipped beside it when installed
(``curate.demo.certificate``); the demo ends by printing both models' offsets and DeSync
against the truth of each generated video. With ``--repair`` (recipe option ``repair``) the
select stage also merges the shifted windows both models may agree on, the shard stage cuts
them with their audio shifted back and rescores them, and the demo prints what was repaired,
the rescore's verdict and verify's check of the repaired audio.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Callable

from curate.config.run_state import new_run, record_run
from curate.config.thresholds import thresholds
from curate.build import run_stages
from curate.config.recipes import get_recipe
from curate.stagekit.repair import repair_options

log = logging.getLogger(__name__)

DEMO_VIDEOS = 32


def uncapped(recipe: dict[str, Any]) -> dict[str, Any]:
    """The demo recipe selecting every ok clip (``curate build demo --repair``): with its cap
    of 4 clips a class, the in-sync clips (ranked first by P_sync) fill every place and no
    shifted video's clip would be cut, so the demo could show no repair."""
    return {**recipe, "select": {**recipe["select"], "per_class": None, "test_per_class": None}}


def _loopback_sources(synth_dir: Path, base_url: str) -> Path:
    """The synth corpus's sources.csv with URLs pointing at the loopback server."""
    src = synth_dir / "sources.csv"
    dst = synth_dir / "sources.loopback.csv"
    with src.open() as f:
        rows = list(csv.DictReader(f))
    with dst.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "url", "start", "end", "label", "split"])
        w.writeheader()
        for r in rows:
            rel = r.get("path") or f"videos/{r['id']}.mp4"
            w.writerow({"id": r["id"], "url": base_url.rstrip("/") + "/" + rel.lstrip("/"),
                        "start": r["start"], "end": r["end"], "label": r["label"], "split": r["split"]})
    return dst


def build_demo(out: str | Path, executor, options: dict[str, Any] | None = None,
               echo: Callable[[str], None] = print) -> dict[str, Any]:
    from curate.demo.loopback import serve_directory
    from curate.demo.synth import synthesize

    out = Path(out)
    synth_dir = out / "synth"
    if not (synth_dir / "truth.json").exists():
        echo(f"== synth: generating {DEMO_VIDEOS} labelled videos")
        synthesize(synth_dir, n_videos=DEMO_VIDEOS, seed=0)
    recipe = get_recipe("demo")
    run = new_run(out, recipe, {**(options or {}), "allow_random_weights": True})
    if repair_options(run):
        echo("== repair on: every merged clip is selected (no per-class cap), so each shifted "
             "video's clip is certified, cut, repaired where both models agree, and verified")
        record_run(out, run, {"recipe": uncapped(run["recipe"])})
    with serve_directory(synth_dir) as base_url:
        echo(f"== serving the corpus at {base_url}")
        sources = _loopback_sources(synth_dir, base_url)
        run_stages(out, run, executor, ["sources", "download"], sources=sources, echo=echo)
    stages = list(recipe["stages"][2:])
    if not run["options"].get("sync_checkpoint"):
        from sync_classifier.model import DEMO_CHECKPOINT
        if DEMO_CHECKPOINT.is_file():
            echo(f"== sync filter: shipped demo classifier {DEMO_CHECKPOINT.name}")
            record_run(out, run, {"options": {"sync_checkpoint": str(DEMO_CHECKPOINT)}})
        else:
            stages.insert(stages.index("score"), "train-sync")
    from curate.demo.certificate import use_demo_synchformer
    options = dict(run["options"])
    echo(use_demo_synchformer(options))
    record_run(out, run, {"options": options})
    run_stages(out, run, executor, stages, echo=echo)
    _print_certificate(out, synth_dir / "truth.json", echo)
    if repair_options(run):
        _print_repairs(out, synth_dir / "truth.json", echo)
    from curate.reports.stats import collect, write_report
    write_report(out, out / "report.html", collect(out))
    echo(f"report: {out / 'report.html'}")
    return run


def _print_certificate(out: Path, truth: Path, echo: Callable[[str], None]) -> None:
    """The demo's offsets beside the truth, per video and per truth kind."""
    from curate.demo.certificate import format_offset_rows, kind_summary, offset_rows
    rows = offset_rows(out, truth)
    echo("== sync certificate: true offset vs measured (s; positive = audio ahead)")
    for line in format_offset_rows(rows) + [""] + kind_summary(rows):
        echo(line)


def _print_repairs(out: Path, truth: Path, echo: Callable[[str], None]) -> None:
    """With repair on (``curate build demo --repair``): the shifted videos' clips and every
    clip the repair touched, the rescore's verdict, and verify's check of the repaired audio."""
    from curate.demo.certificate import format_repair_rows, repair_rows
    from shards.verify import verify_path
    rows = repair_rows(out, truth)
    echo("== repairs (selected clips of shifted videos and every clip a repair touched; s, "
         "positive = audio ahead; 'undone' is the applied shift)")
    for line in format_repair_rows(rows) if rows else ["  none (no selected clip of a shifted video)"]:
        echo(line)
    rep = verify_path(out)
    n = rep["summary"].get("repaired_checked", 0)
    echo(f"== verify: {'OK' if rep['ok'] else 'FAILED'}; {n} repaired clip(s) checked against their "
         f"source at the recorded shift" + "".join(f"\n  - {p}" for p in rep.get("run_problems") or []))


def sync_margin(media_dir: str | Path, checkpoint: str | Path | None = None, seed: int = 0,
                n_videos: int = DEMO_VIDEOS) -> dict[str, dict[str, int]]:
    """How many event windows of the demo corpus pass the sync filter, per truth kind.

    Renders the demo corpus's ``flash_click`` (in sync) and ``flash_click_shifted`` videos
    (``curate.demo.synth``, the same specs ``build_demo`` generates) into ``media_dir``, cuts each
    into the recipe's 3-s windows at 0.5-s stride, scores them with ``filters.sync``'s scorer
    (the shipped checkpoint unless ``checkpoint``) and applies the demo recipe's thresholds.
    Returns ``{kind: {"windows": n, "passed": k, "p_sync_min": [min(a2v, v2a) per window]}}``.
    """
    import math

    from curate.ops.scoring import Scorers, score_segment
    from curate.demo.synth import corpus_specs, render
    from curate.ops.windows import window_starts_ms
    from decoding.media import decode_grid
    from filters import registry
    from filters.sync import SyncScorer
    from sync_classifier.model import DEMO_CHECKPOINT

    media_dir = Path(media_dir)
    media_dir.mkdir(parents=True, exist_ok=True)
    recipe = get_recipe("demo")
    th = thresholds({"recipe": recipe})
    win = recipe["windows"]
    scorer = SyncScorer.from_checkpoint(str(checkpoint or DEMO_CHECKPOINT))
    out: dict[str, dict[str, int]] = {}
    for spec in corpus_specs(n_videos, seed):
        if spec.kind not in ("flash_click", "flash_click_shifted"):
            continue
        path = media_dir / f"{spec.id}.mp4"
        if not path.exists():
            render(spec, path)
        starts = window_starts_ms(0, 1000 * math.floor(spec.duration), int(1000 * win["length"]),
                                  int(1000 * win["stride"]))
        windows = [{"start": s / 1000, "end": s / 1000 + win["length"]} for s in starts]
        rows = score_segment(decode_grid(path), windows, Scorers(sync=scorer), th, None,
                             only={"sync"}, gate={"sync"})
        k = out.setdefault(spec.kind, {"windows": 0, "passed": 0, "p_sync_min": []})
        k["windows"] += len(rows)
        k["passed"] += sum(registry.passes("sync", r, th) is True for r in rows)
        k["p_sync_min"] += [min(r["sync_a2v"], r["sync_v2a"]) if r["sync_a2v"] is not None
                            and r["sync_v2a"] is not None else None for r in rows]
    return out
