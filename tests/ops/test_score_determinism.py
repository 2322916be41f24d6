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


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    from curate.ops.windows import window_starts_ms

    d = tmp_path_factory.mktemp("det")
    picked = {}
    for spec in corpus_specs(32, 0):
        if spec.kind in KINDS and spec.kind not in picked:
            picked[spec.kind] = spec
    out = []
    for kind in KINDS:
        spec = picked[kind]
        path = d / f"{spec.id}.mp4"
        render(spec, path)
        starts = window_starts_ms(0, int(1000 * int(spec.duration)), 3000, 500)
        wins = [{"window_id": f"{spec.id}_{s:06d}", "shot_id": f"{spec.id}_shot000",
                 "start": s / 1000, "end": s / 1000 + 3.0} for s in starts[:WINDOWS]]
        out.append(SegmentJob(decode_grid(path), wins, spec.label.replace("_", " ")))
    return out


@pytest.fixture(scope="module")
def scorers():
    from filters.clip_model import ClipScorer
    from filters.imagebind import ImageBindScorer
    from filters.sync import SyncScorer
    from sync_classifier.model import DEMO_CHECKPOINT

    deterministic_torch()
    return Scorers(clip=ClipScorer.random(seed=0), imagebind=ImageBindScorer.random(seed=0),
                   sync=SyncScorer.from_checkpoint(str(DEMO_CHECKPOINT)))


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
    for order in ([0, 1, 2], [2, 1, 0], [1, 0]):
        got = score(order)
        for i in set(order):
            assert got[i] == alone[i], f"segment {i} differs in batch {order}"
