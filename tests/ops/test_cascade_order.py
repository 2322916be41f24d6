"""The cascade order (recipe option ``order``) changes what is computed, never what is kept.

On the generated corpus (``curate.demo.synth``: in-sync and shifted flash/click videos, drums,
hard cuts, still images with a tone, muted motion), scored with the demo's shipped sync
classifier and small random CLIP / ImageBind, every filter gating at thresholds that make
each of them reject windows: the default order (sync before ImageBind), the schema's order
(ImageBind before sync) and the reverse keep exactly the same windows with the same scores.
With the demo recipe's gating, windows the sync filter rejects carry ``skipped: rejected by
sync`` for ImageBind, and ImageBind sees fewer inputs than in the old order.
"""
from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest

from curate.config.recipes import get_recipe
from curate.ops.scoring import Scorers, SegmentJob, score_segments
from curate.selection.rules import select_windows_table
from testkit.counting import Counting
from filters import registry
from manifests import schemas
from manifests.schemas import ALL_SCORES

ORDERS = {"default": registry.DEFAULT_ORDER, "schema": registry.LEGACY_ORDER,
          "reverse": tuple(reversed(registry.DEFAULT_ORDER))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from curate.demo.synth import corpus_specs, render
    from curate.ops.windows import window_starts_ms
    from decoding.media import decode_grid

    root = tmp_path_factory.mktemp("order")
    jobs = []
    for spec in corpus_specs(8, seed=0, duration=5.0):
        g = decode_grid(render(spec, root / f"{spec.id}.mp4"))
        starts = window_starts_ms(0, 5000, 3000, 500)
        ws = [{"window_id": f"{spec.id}_{s:06d}", "shot_id": f"{spec.id}_shot000",
               "start": s / 1000, "end": s / 1000 + 3.0} for s in starts]
        jobs.append(SegmentJob(g, ws, spec.label))
    return jobs


@pytest.fixture(scope="module")
def models():
    from filters.clip_model import ClipScorer
    from filters.imagebind_scorer import ImageBindScorer
    from filters.sync import SyncScorer
    from sync_classifier.model import DEMO_CHECKPOINT

    from filters.speech import SpeechScorer
    return {"clip": ClipScorer.random(seed=0), "imagebind": ImageBindScorer.random(seed=0),
            "sync": SyncScorer.from_checkpoint(str(DEMO_CHECKPOINT)),
            "silero": SpeechScorer.from_checkpoint()}


def _score(corpus, models, th, order, gate=None):
    counts: Counter = Counter()
    sc = Scorers(**{k: Counting(m, counts, k) for k, m in models.items()})
    rows = score_segments(copy.deepcopy(corpus), sc, th, cascade=True, gate=gate, order=order)
    return [r for rs in rows for r in rs], counts


def _median(rows, col) -> float:
    return float(np.median([r[col] for r in rows if r[col] is not None]))


def _thresholds(corpus, models):
    """Demo thresholds, plus CLIP / ImageBind bounds at medians (random models) so that every
    filter rejects some windows the cheaper ones let through: CLIP at its median over all
    windows, ImageBind at its median over the windows every other filter passes (it runs
    last in the default order, so only it can reject those)."""
    th = {**registry.default_thresholds(), **(copy.deepcopy(get_recipe("demo")["thresholds"]) or {})}
    rows, _ = _score(corpus, models, th, None, gate=set())      # no gate: every score
    th["clip_diff"] = {"min": _median(rows, "clip_diff")}
    others = [r for r in rows if all(registry.passes(f, r, th) for f in registry.DEFAULT_ORDER[:-1])]
    th["imagebind"] = {"ia_min": _median(others, "imagebind_ia"), "it_min": -1.0}
    return th


def _select(rows, th, order):
    """The production selection (``curate.selection.rules``) on the scored rows."""
    dec, summary, _ = select_windows_table(schemas.to_table(rows, schemas.WINDOWS), th, order=order)
    return dec.to_pylist(), summary


def test_selection_is_the_same_under_any_order(corpus, models):
    th = _thresholds(corpus, models)
    kept, scores, reasons, inputs = {}, {}, {}, {}
    for name, order in ORDERS.items():
        rows, counts = _score(corpus, models, th, order)
        dec, summary = _select(rows, th, order)
        kept[name] = [d["window_id"] for d in dec if d["keep"]]
        reasons[name] = Counter(d["reason"] for d in dec)
        by_id = {r["window_id"]: r for r in rows}
        scores[name] = {w: tuple(by_id[w][c] for c in ALL_SCORES) for w in kept[name]}
        inputs[name] = counts
        assert summary["needs_scoring"] == 0, name
        # an order that names fewer filters (the schema's five): the others follow; the
        # funnel names the gating ones (speech and audio_quality only record by default)
        assert [s["filter"] for s in summary["funnel"][1:]] == \
            [f for f in registry.cascade_order(order) if f in registry.default_gate()]
    n = sum(len(j.windows) for j in corpus)
    assert 0 < len(kept["default"]) < n / 4
    # every filter rejected something somewhere: the orders really differ in what they skip
    assert set(reasons["default"]) == {None, "pixel_diff", "amplitude", "clip_diff", "sync", "imagebind"}
    for name in ORDERS:
        assert kept[name] == kept["default"], name
        # the same scores for kept windows; the sync classifier's batches hold other pairs
        # under another order, and CPU convolutions may round differently per batch size
        for w, ref in scores["default"].items():
            assert scores[name][w] == pytest.approx(ref, rel=1e-5, abs=1e-6), (name, w)
    # ImageBind after sync sees fewer images than before it
    assert inputs["default"]["imagebind.embed_images"] < inputs["schema"]["imagebind.embed_images"]


def test_demo_gating_notes_imagebind_skipped_by_sync(corpus, models):
    """The demo recipe: pixel_diff, amplitude and sync gate, CLIP / ImageBind are score-only."""
    recipe = get_recipe("demo")
    assert tuple(recipe["order"]) == registry.DEFAULT_ORDER
    th = registry.default_thresholds()
    rows, _ = _score(corpus, models, th, recipe["order"], gate=set(recipe["gate"]))
    by_sync = [r for r in rows if r["sync_a2v"] is not None and registry.passes("sync", r, th) is False]
    assert by_sync, "the shifted and tone videos must fail the sync filter"
    assert all(r["imagebind_note"] == "skipped: rejected by sync" and r["imagebind_ia"] is None
               for r in by_sync)
    passed = [r for r in rows if registry.passes("sync", r, th)]
    assert passed and all(r["imagebind_ia"] is not None for r in passed)
