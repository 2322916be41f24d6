"""Cross-segment batching: ``score_segments`` over K segments gives exactly the rows of K
``score_segment`` calls (per-segment forward passes: issue 14's determinism); the scoring actor
passes a whole call to the batched function and falls back to one item at a time."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from curate.execution.ray import worker as engine
from curate.execution.spec import StageSpec
from curate.ops.scoring import Scorers, SegmentJob, score_segment, score_segments
from decoding.media import Grid
from filters import registry

SR = 16000
SIZE = 16
BAD = 250          # a frame whose pixel (0, 0, 2) is BAD makes the fake CLIP raise


def make_grid(seconds: float, seed: int, freq: float, static: tuple[float, float] | None = None,
              silent: tuple[float, float] | None = None, bad_frame: int | None = None) -> Grid:
    """Noisy frames (static ones flat inside ``static`` seconds), a sine of ``freq`` Hz
    (silent inside ``silent``); every segment's content differs (seed, frequency)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * 12)
    frames = rng.integers(60, 200, (n, SIZE, SIZE, 3), dtype=np.uint8)
    if static:
        a, b = int(static[0] * 12), int(static[1] * 12)
        frames[a:b] = frames[a]
    frames[:, 0, 0, 2] = 0
    if bad_frame is not None:
        frames[bad_frame, 0, 0, 2] = BAD
    t = np.arange(int(seconds * SR)) / SR
    audio = (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    if silent:
        audio[(t >= silent[0]) & (t < silent[1])] = 0.0
    return Grid(frames=frames, audio_channels=audio[None], start=0.0)


def windows(sid: str, seconds: float, stride: float = 0.5) -> list[dict]:
    out, s = [], 0.0
    while s + 3.0 <= seconds + 1e-9:
        out.append({"window_id": f"{sid}_{int(s * 1000):06d}", "shot_id": f"{sid}_shot000",
                    "start": s, "end": s + 3.0})
        s += stride
    return out


def _frame_feat(frames: np.ndarray) -> np.ndarray:
    f = np.asarray(frames, np.float64)
    return np.stack([f.mean((1, 2, 3)), f[:, :, :, 0].std((1, 2)), f[:, 1:3, 1:3].mean((1, 2, 3)) / 50],
                    1).astype(np.float32)


class Clip:
    """Features from the frame content; counts calls and inputs."""

    def __init__(self):
        self.calls, self.inputs = 0, 0

    def embed(self, frames):
        self.calls += 1
        self.inputs += len(frames)
        if (np.asarray(frames)[:, 0, 0, 2] == BAD).any():
            raise RuntimeError("bad frame (fake)")
        return _frame_feat(frames)


class ImageBind:
    """Image, audio and text embeddings from their content; counts calls."""

    def __init__(self):
        self.image_calls = self.audio_calls = self.text_calls = 0

    def embed_images(self, frames):
        self.image_calls += 1
        return _frame_feat(frames)

    def embed_audio(self, waves):
        self.audio_calls += 1
        w = np.asarray(waves, np.float64)
        return np.stack([np.sqrt((w ** 2).mean(1)), np.abs(np.diff(w, axis=1)).mean(1) * 10,
                         w[:, :100].mean(1) + 1], 1).astype(np.float32)

    def embed_text(self, names):
        self.text_calls += 1
        return np.array([[len(n), (sum(map(ord, n)) % 17) + 1.0, 3.0] for n in names], np.float32)


class Sync:
    """phi from the clip contents (any hashable keys); counts calls and pairs."""

    def __init__(self):
        self.calls, self.pairs = 0, 0

    def phi_pairs(self, audio, video, pairs, mels=None, primary=None):
        self.calls += 1
        self.pairs += len(pairs)
        a = {k: float(np.abs(np.asarray(x)).mean()) for k, x in {**audio, **(mels or {})}.items()}
        v = {k: float(np.asarray(x, np.float64).mean()) / 100 for k, x in video.items()}
        return {(ak, vk): a[ak] * 3 - v[vk] for ak, vk in pairs}


def scorers() -> Scorers:
    return Scorers(clip=Clip(), imagebind=ImageBind(), sync=Sync())


def segments() -> list[SegmentJob]:
    """Four segments: different lengths, content and cascade rejections, two class texts."""
    return [
        SegmentJob(make_grid(6.0, 1, 330.0), windows("a", 6.0), "dog barking"),
        SegmentJob(make_grid(8.0, 2, 440.0, static=(0.0, 4.0)), windows("b", 8.0), "dog barking"),
        SegmentJob(make_grid(5.0, 3, 550.0, silent=(1.0, 5.0)), windows("c", 5.0), "playing drums"),
        SegmentJob(make_grid(7.0, 4, 660.0, static=(3.0, 7.0), silent=(0.0, 2.0)), windows("d", 7.0),
                   "lions roaring"),
    ]


def open_thresholds() -> dict:
    """Default pixel/amplitude bounds (they reject the static / silent windows), no bound on
    the model filters: their windows reach the later filters."""
    th = registry.default_thresholds()
    for name in ("clip_diff", "imagebind", "sync"):
        th[name] = {}
    return th


def _alone(jobs, th, **kw):
    return [score_segment(j.grid, j.windows, scorers(), th, j.class_text, only=j.only, **kw)
            for j in jobs]


@pytest.mark.parametrize("cascade", [True, False])
@pytest.mark.parametrize("th", ["default", "open"])
def test_segments_together_give_the_rows_of_each_alone(cascade, th):
    name, th = th, (registry.default_thresholds() if th == "default" else open_thresholds())
    jobs = segments()
    together = score_segments(copy.deepcopy(jobs), scorers(), th, cascade=cascade)
    alone = _alone(jobs, th, cascade=cascade)
    assert together == alone          # every score and note column, bit-equal floats
    rows = [r for rs in together for r in rs]
    assert len(rows) == sum(len(j.windows) for j in jobs) == 32
    if cascade:   # the cascade did stop windows, and others reached sync
        assert any((r["clip_diff_note"] or "").startswith("skipped: rejected by") for r in rows)
        assert any((r["sync_note"] or "").startswith("skipped: rejected by") for r in rows)
    if name == "open" or not cascade:     # windows reached every model
        assert any(r["sync_a2v"] is not None for r in rows)
        assert any(r["imagebind_ia"] is not None for r in rows)


def test_rescore_segments_together_keep_the_stored_scores_and_only():
    """Items of a rescore (``only`` with the stored scores) mixed with full ones."""
    th = open_thresholds()
    first = _alone(segments(), th)
    jobs = segments()
    for j, rows in zip(jobs[:2], first[:2]):
        j.windows = [{**r, "clip_diff": None, "imagebind_ia": None, "imagebind_it": None,
                      "sync_a2v": None, "sync_v2a": None} for r in rows]
        j.only = {"clip_diff", "imagebind", "sync"}
    together = score_segments(copy.deepcopy(jobs), scorers(), th)
    assert together == _alone(jobs, th)
    assert together[:2] == first[:2]      # the rescore gives back what a full score gave


def test_each_segment_goes_through_the_models_in_passes_of_its_own():
    """Determinism (issue 14): a cross-segment batch changes low bits of the scores, so a
    call over K segments makes one model call per filter and segment, with the inputs of K
    separate calls (feature reuse unchanged)."""
    th = open_thresholds()
    sc = scorers()
    score_segments(segments(), sc, th, cascade=False)
    assert (sc.clip.calls, sc.imagebind.image_calls, sc.imagebind.audio_calls, sc.sync.calls) == (4, 4, 4, 4)
    alone = [scorers() for _ in range(4)]
    for j, s in zip(segments(), alone):
        score_segment(j.grid, j.windows, s, th, j.class_text, cascade=False)
    assert sc.clip.inputs == sum(s.clip.inputs for s in alone)
    assert sc.sync.pairs == sum(s.sync.pairs for s in alone)


def test_a_model_failure_on_one_segment_fails_that_segment_alone():
    th = open_thresholds()
    jobs = segments()
    jobs[2] = SegmentJob(make_grid(5.0, 3, 550.0, bad_frame=4), windows("c", 5.0), "playing drums")
    together = score_segments(copy.deepcopy(jobs), scorers(), th, cascade=False)
    alone = _alone(jobs, th, cascade=False)
    assert together == alone
    assert all(r["clip_diff"] is None and "bad frame" in r["clip_diff_note"] for r in together[2])
    assert all(r["clip_diff"] is not None for rs in (together[0], together[1], together[3]) for r in rs)


# ---------------------------------------------------------------- the scoring actor

def _factory(log: list):
    def fn(item, payload):
        if payload == "bad":
            raise ValueError("bad payload")
        return {"t": [{"key": item["key"], "v": payload * 2}]}

    def batch(items, payloads):
        log.append([it["key"] for it in items])
        return [fn(it, p) for it, p in zip(items, payloads)]
    fn.batch = batch
    return fn


def _on_error(item, msg):
    return {"t": [{"key": item["key"], "error": msg}]}


def test_the_actor_passes_a_whole_call_to_the_batched_function(monkeypatch):
    monkeypatch.setattr(engine, "_NODE", ["node-x"])
    log: list = []
    spec = StageSpec("t", lambda: _factory(log), _on_error, stateful=True, prepare=lambda: None,
                     batch_size=3)
    actor = engine._StageActor(spec, None)
    outs = actor.call([{"key": "a"}, {"key": "b"}, {"key": "c"}], 1, 2, 3)
    assert log == [["a", "b", "c"]]
    assert [o["t"][0]["v"] for o in outs] == [2, 4, 6]
    assert all(o[engine.NODE_KEY] == [{"node": "node-x"}] for o in outs)
    # the batch raises: one item at a time, the bad one is the only failure
    outs = actor.call([{"key": "a"}, {"key": "b"}, {"key": "c"}], 1, "bad", 3)
    assert [o["t"][0].get("v") for o in outs] == [2, None, 6]
    assert "bad payload" in outs[1]["t"][0]["error"]
