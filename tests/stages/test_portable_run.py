"""Work redone for the right reason only (issue 14, finding 8): a finished run copied or moved
to another folder redoes nothing and reads its own files; a local source file replaced at the
same path is read again."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from curate.build import build
from curate.execution.local import LocalExecutor
from manifests.schemas import read_rows
from testkit.kill_resume import RECIPE, outcome


class Counting(LocalExecutor):
    """LocalExecutor that records which items of which stage it ran."""

    def __init__(self):
        super().__init__()
        self.ran: dict[str, list[str]] = {}

    def run(self, spec, items):
        self.ran.setdefault(spec.name, []).extend(it["key"] for it in items)
        return super().run(spec, items)


def _build(out: Path, src: Path, cfg: Path) -> Counting:
    ex = Counting()
    build("custom", out, ex, sources=src, config=cfg, options={"allow_random_weights": True},
          echo=lambda s: None)
    return ex


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    from curate.demo.synth import synthesize

    corpus = tmp_path_factory.mktemp("port_corpus")
    truth = synthesize(corpus, n_videos=3, seed=3, duration=6.0)
    lines = ["id,path,start,end,label,split"]
    for v in truth["videos"]:
        lines.append(f"{v['id']},videos/{v['id']}.mp4,0,6,{v['label']},{v['split']}")
    src = corpus / "sources.csv"
    src.write_text("\n".join(lines) + "\n")
    cfg = corpus / "recipe.json"
    cfg.write_text(json.dumps(RECIPE))
    out = tmp_path_factory.mktemp("port_run") / "out"
    first = _build(out, src, cfg)
    assert first.ran.get("score") and first.ran.get("cut"), first.ran
    return {"out": out, "src": src, "cfg": cfg, "corpus": corpus, "truth": truth,
            "ref": outcome(out), "tmp": tmp_path_factory}


@pytest.mark.slow
def test_a_copied_run_redoes_nothing(local_run):
    dst = local_run["tmp"].mktemp("port_copy") / "copy"
    shutil.copytree(local_run["out"], dst)
    ex = _build(dst, local_run["src"], local_run["cfg"])
    assert ex.ran == {} and ex.started == 0
    assert outcome(dst) == local_run["ref"]
    # and the copy reads its own files, not the original's
    assert all(r["path"].startswith(str(dst)) for r in read_rows(dst, "downloads") if r["path"])


@pytest.mark.slow
def test_a_moved_run_redoes_nothing_and_verifies(local_run):
    from shards.verify import verify_run
    src_copy = local_run["tmp"].mktemp("port_mv") / "a"
    shutil.copytree(local_run["out"], src_copy)
    moved = src_copy.parent / "b"
    shutil.move(str(src_copy), moved)                 # the old folder is gone
    ex = _build(moved, local_run["src"], local_run["cfg"])
    assert ex.ran == {}
    assert outcome(moved) == local_run["ref"]
    assert verify_run(moved)["ok"]


@pytest.mark.slow
def test_a_local_source_replaced_at_the_same_path_is_read_again(local_run):
    work = local_run["tmp"].mktemp("port_replace")
    out = work / "out"
    shutil.copytree(local_run["out"], out)
    corpus = work / "corpus"
    shutil.copytree(local_run["corpus"], corpus)
    src = corpus / "sources.csv"
    vids = local_run["truth"]["videos"]
    # sources now point into this corpus copy: its files are new inputs once, then done
    _build(out, src, local_run["cfg"])
    target = corpus / "videos" / f"{vids[0]['id']}.mp4"
    other = corpus / "videos" / f"{vids[1]['id']}.mp4"
    shutil.copyfile(other, target)                    # same path, other content
    ex = _build(out, src, local_run["cfg"])
    sid = next(r["source_id"] for r in read_rows(out, "sources") if r["ytid"] == vids[0]["id"])
    assert ex.ran.get("download") == [sid]


@pytest.mark.slow
def test_a_run_with_its_weights_inside_copied_without_mtimes_redoes_nothing(local_run):
    """A sync classifier inside ``--out`` (as the demo's in-run training leaves it): run.json
    names it relative to the output and fingerprints know it by content, so a copy made as
    ``cp -r`` makes it (new mtimes), with the original gone, redoes nothing and reads its
    own weights."""
    from curate.config.run_state import load_run
    from sync_classifier.model import DEMO_CHECKPOINT

    work = local_run["tmp"].mktemp("port_weights")
    out = work / "a"
    shutil.copytree(local_run["out"], out)
    ckpt = out / "models" / "sync.pt"
    ckpt.parent.mkdir(parents=True)
    shutil.copyfile(DEMO_CHECKPOINT, ckpt)
    build("custom", out, Counting(), sources=local_run["src"], config=local_run["cfg"],
          options={"allow_random_weights": True, "sync_checkpoint": str(ckpt)}, echo=lambda s: None)
    assert json.loads((out / "run.json").read_text())["options"]["sync_checkpoint"] == "<out>/models/sync.pt"
    ref = outcome(out)
    copy = work / "b"
    shutil.copytree(out, copy, copy_function=shutil.copyfile)      # mtimes not kept
    shutil.rmtree(out)
    ex = _build(copy, local_run["src"], local_run["cfg"])
    assert ex.ran == {}
    assert outcome(copy) == ref
    assert load_run(copy)["options"]["sync_checkpoint"] == str(copy / "models" / "sync.pt")
