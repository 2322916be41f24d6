"""Deterministic scores (issue 14, finding 5): a window's scores are the same bits whatever
batch it was scored in. Three demo segments (their first windows), scored by the shipped
demo sync classifier and (random, score-only) CLIP and ImageBind, each alone, all in one
call, in reverse order and in a pair: every row is byte-identical (repr of every float).
Before per-segment forward passes, one call for several segments changed low bits of some
sync values (the issue measured 4 of 98)."""
from __future__ import annotations

import copy
import json

import pytest

from curate.ops.scoring import Scorers, SegmentJob, deterministic_torch, score_segments
from curate.demo.synth import corpus_specs, render
from decoding.media import decode_grid
from filters.registry import default_thresholds

KINDS = ("flash_click", "flash_click_shifted", "drum")
WINDOWS = 5          # per segment: keeps the test to seconds


def demo_jobs(d) -> list[SegmentJob]:
    """The first ``WINDOWS`` windows of one demo segment of each kind in ``KINDS``, rendered
    into folder ``d``."""
    from curate.ops.windows import window_starts_ms

    picked = {}
    for spec in corpus_specs(32, 0):
        if spec.kind in KINDS and spec.kind not in picked:
            picked[spec.kind] = spec
    out = []
    for kind in KINDS:
        spec = picked[kind]
        path = d / f"{spec.id}.mp4"
        if not path.exists():
            render(spec, path)
        starts = window_starts_ms(0, int(1000 * int(spec.duration)), 3000, 500)
        wins = [{"window_id": f"{spec.id}_{s:06d}", "shot_id": f"{spec.id}_shot000",
                 "start": s / 1000, "end": s / 1000 + 3.0} for s in starts[:WINDOWS]]
        out.append(SegmentJob(decode_grid(path), wins, spec.label.replace("_", " ")))
    return out


def demo_scorers() -> Scorers:
    from filters.clip_model import ClipScorer
    from filters.imagebind_scorer import ImageBindScorer
    from filters.sync import SyncScorer
    from sync_classifier.model import DEMO_CHECKPOINT

    from filters.speech import SpeechScorer

    deterministic_torch()
    return Scorers(clip=ClipScorer.random(seed=0), imagebind=ImageBindScorer.random(seed=0),
                   sync=SyncScorer.from_checkpoint(str(DEMO_CHECKPOINT)),
                   silero=SpeechScorer.from_checkpoint())


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    return demo_jobs(tmp_path_factory.mktemp("det"))


@pytest.fixture(scope="module")
def scorers():
    return demo_scorers()


def _bytes(rows) -> list[str]:
    # json writes every float with repr: equal strings are equal bits
    return [json.dumps(r, sort_keys=True) for r in rows]


def test_scores_are_bit_identical_whatever_the_batch(jobs, scorers):
    th = default_thresholds()

    def score(order):
        got = score_segments([copy.deepcopy(jobs[i]) for i in order], scorers, th, cascade=False)
        return {i: _bytes(rows) for i, rows in zip(order, got)}

    alone = {}
    for i in range(len(jobs)):
        alone.update(score([i]))
    n_sync = sum(1 for rows in alone.values() for r in rows if json.loads(r)["sync_a2v"] is not None)
    assert n_sync == len(KINDS) * WINDOWS     # the sync classifier really scored every window
    n_speech = sum(1 for rows in alone.values() for r in rows if json.loads(r)["speech"] is not None)
    assert n_speech == len(KINDS) * WINDOWS   # and Silero
    for order in ([0, 1, 2], [2, 1, 0], [1, 0]):
        got = score(order)
        for i in set(order):
            assert got[i] == alone[i], f"segment {i} differs in batch {order}"


THREADS_SCRIPT = """
import json, sys
from pathlib import Path
import torch
from tests.ops.test_score_determinism import _bytes, demo_jobs, demo_scorers
from curate.ops.scoring import score_segments
jobs = demo_jobs(Path(sys.argv[1]))
rows = score_segments(jobs, demo_scorers(), None, cascade=False)
Path(sys.argv[2]).write_text(json.dumps([_bytes(r) for r in rows]))
print("threads", torch.get_num_threads())
"""


def test_scores_are_bit_identical_on_one_thread_or_several(tmp_path):
    """A Ray worker with one CPU runs torch on one thread, a local run on one per core:
    the same windows must get the same bits (``scoring.MIN_SCORE_THREADS``)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    media = tmp_path / "media"
    media.mkdir()
    got = {}
    for n in (1, 3):
        env = {**os.environ, "OMP_NUM_THREADS": str(n), "PYTHONPATH": str(repo)}
        res = subprocess.run([sys.executable, "-c", THREADS_SCRIPT, str(media), str(tmp_path / f"{n}.json")],
                             env=env, cwd=str(repo), capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        got[n] = json.loads((tmp_path / f"{n}.json").read_text())
        assert any(json.loads(r)["sync_a2v"] is not None for rows in got[n] for r in rows)
    assert got[1] == got[3]
