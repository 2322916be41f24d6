"""Filters: pure scores on arrays with hand-computed answers, thresholds, sampling, models."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from filters import amplitude, clip_diff, pixel_diff, registry, sampling, sync

torch.set_num_threads(1)


def _keep(name: str, *values, thr=None) -> bool:
    """The selection's rule (``registry.passes``) on a row of the filter's columns."""
    row = dict(zip(registry.columns(name), values))
    return registry.passes(name, row, {name: thr or registry.spec(name).thresholds}) is True


# ---------------------------------------------------------------- sampling

def _on_grid(t: float, origin: float = 0.0) -> bool:
    k = (t - origin) * 12
    return abs(k - round(k)) < 1e-9


@pytest.mark.parametrize("start,origin", [(0.0, 0.0), (2.5, 0.0), (7.0, 0.0), (1.04, 1.04), (3.5, 1.04)])
def test_sample_times_lie_on_the_grid_and_inside_the_window(start, origin):
    s = sampling.snap(start, origin)
    ten = sampling.uniform10_times(start, origin)
    three = sampling.uniform3_times(start, origin)
    assert len(ten) == 10 and len(three) == 3
    for t in ten + three:
        assert _on_grid(t, origin)
        assert start - 1e-9 <= s - 1e-9 <= t < start + 3.0 - 1e-9   # never the next shot's frame
    assert ten[0] == pytest.approx(s) and ten[-1] == pytest.approx(s + 35 / 12)
    assert three == pytest.approx([s + 0.5, s + 1.5, s + 2.5])
    # 2-s audio centred on each frame, slid inside the window [start, start + 3)
    spans = sampling.imagebind_audio_spans(start, origin)
    for (a0, a1), t in zip(spans, three):
        assert a1 - a0 == pytest.approx(2.0) and start - 1e-9 <= a0 and a1 <= start + 3.0 + 1e-9
        assert a0 == pytest.approx(min(max(t - 1.0, start), start + 1.0))
    assert spans[1] == pytest.approx((three[1] - 1.0, three[1] + 1.0))
    for d in sampling.SYNC_SHIFTS:
        i0 = sampling.start_index(start, origin)
        v = [origin + (i0 + o) / 12 for o in sampling.sync_video_offsets(d)]
        assert len(v) == 12 and all(_on_grid(t, origin) for t in v)
        assert np.allclose(np.diff(v), 1 / 6)          # 6 fps
        assert v[0] == pytest.approx(s + 0.5 + d / 12)
        a0, a1 = sampling.sync_audio_span(start, d, origin)
        assert a0 == pytest.approx(v[0]) and a1 - a0 == pytest.approx(2.0)
        assert s <= a0 and a1 <= s + 3.0 + 1e-9 and v[-1] < s + 3.0   # shifts stay in the window
    assert sampling.SYNC_SHIFTS[1] == 0 and sampling.SYNC_SHIFTS[2] / 12 == pytest.approx(0.25)


def test_uniform10_offsets_are_spread_over_the_window():
    off = sampling.UNIFORM10_OFFSETS
    assert off == (0, 4, 8, 12, 16, 19, 23, 27, 31, 35)
    assert set(np.diff(off)) <= {3, 4}


def test_sync_pairs_share_the_unshifted_pair():
    p = sampling.sync_pairs()
    assert p["a2v"] == [(0, -3), (0, 0), (0, 3)] and p["v2a"] == [(-3, 0), (0, 0), (3, 0)]


# ---------------------------------------------------------------- pixel_diff

def _frames(values, size=8):
    return np.stack([np.full((size, size, 3), v, np.uint8) for v in values])


def test_pixel_diff_hand_computed():
    # constant frames 0, 10, ..., 90: every pair differs by 10/255
    assert pixel_diff.score(_frames(range(0, 100, 10))) == pytest.approx(10 / 255)
    # diffs 255, 0, 0, ...: mean over 9 pairs = (1 + 0 * 8) / 9
    assert pixel_diff.score(_frames([0] + [255] * 9)) == pytest.approx(1 / 9)
    # half the pixels flip by 255 in one pair only: 0.5 / 9
    f = _frames([0] * 10)
    f[5:, :4] = 255
    assert pixel_diff.score(f) == pytest.approx(0.5 / 9)
    assert pixel_diff.score(_frames([7] * 10)) == 0.0


def test_pixel_diff_thresholds_inclusive():
    assert _keep("pixel_diff", 0.01) and _keep("pixel_diff", 0.15)
    assert not _keep("pixel_diff", math.nextafter(0.01, 0))
    assert not _keep("pixel_diff", math.nextafter(0.15, 1))
    s = pixel_diff.score(_frames(range(0, 100, 10)))
    assert _keep("pixel_diff", s, thr={"min": s, "max": s})
    assert not _keep("pixel_diff", s, thr={"min": math.nextafter(s, 1), "max": 1})
    assert not _keep("pixel_diff", None)


def test_pixel_diff_bad_input():
    with pytest.raises(ValueError):
        pixel_diff.score(np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError):
        pixel_diff.score(np.zeros((10, 4, 4, 3), np.float32))


# ---------------------------------------------------------------- amplitude

def test_amplitude_hand_computed_and_edges():
    assert amplitude.score(np.array([0.01, -0.5, 0.2])) == 0.5
    assert amplitude.score(np.array([[0.0, 0.1], [-0.7, 0.0]], np.float32)) == pytest.approx(0.7)
    assert amplitude.score(np.zeros(16000, np.float32)) == 0.0
    at = amplitude.score(np.array([0.0, -0.03, 0.01]))      # float64: exactly 0.03
    assert at == 0.03 and _keep("amplitude", at)
    assert not _keep("amplitude", math.nextafter(0.03, 0))
    with pytest.raises(ValueError):
        amplitude.score(np.array([], np.float32))
    with pytest.raises(ValueError):
        amplitude.score(np.array([1, 2], np.int16))


# ---------------------------------------------------------------- clip_diff

def _rot(theta: float, norm: float = 10.0) -> np.ndarray:
    return norm * np.array([math.cos(theta), math.sin(theta), 0.0])


def test_clip_diff_normalises_then_takes_the_max_distance():
    # 10 vectors of norm ~10, angle steps 0.1 except one step of 0.5 rad: max = 2 sin(0.25)
    angles = np.cumsum([0, 0.1, 0.1, 0.1, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    f = np.stack([_rot(a, norm=5 + i) for i, a in enumerate(angles)])
    assert clip_diff.score(f) == pytest.approx(2 * math.sin(0.25))
    # identical directions at different norms: 0 after normalisation (not 1, 2, ...)
    assert clip_diff.score(np.stack([_rot(0.3, n) for n in range(1, 11)])) == pytest.approx(0.0, abs=1e-12)
    # orthogonal jump: sqrt(2)
    assert clip_diff.score(np.stack([_rot(0)] * 5 + [_rot(math.pi / 2)] * 5)) == pytest.approx(math.sqrt(2))


def test_clip_diff_thresholds_and_bad_input():
    assert _keep("clip_diff", 0.17) and _keep("clip_diff", 0.55)
    assert not _keep("clip_diff", math.nextafter(0.17, 0))
    assert not _keep("clip_diff", math.nextafter(0.55, 1))
    with pytest.raises(ValueError):
        clip_diff.score(np.zeros((10, 4)))
    with pytest.raises(ValueError):
        clip_diff.score(np.ones((1, 4)))


# ---------------------------------------------------------------- sync

def _softmax_mid(phi):
    e = np.exp(np.asarray(phi, float) - max(phi))
    return e[1] / e.sum()


def test_sync_score_is_softmax_mass_on_the_middle_without_temperature():
    a2v, v2a = sync.score([0.0, 0.0, 0.0], [1.0, 3.0, 0.5])
    assert a2v == pytest.approx(1 / 3)
    assert v2a == pytest.approx(_softmax_mid([1.0, 3.0, 0.5]))
    assert _keep("sync", 0.341, 0.341)
    assert not _keep("sync", 0.5, math.nextafter(0.341, 0))
    assert not _keep("sync", 1 / 3, 0.9)                    # chance fails
    assert not _keep("sync", None, 0.9)
    with pytest.raises(ValueError):
        sync.score([0.0, 1.0], [0.0, 0.0, 0.0])


class _CountingSync(torch.nn.Module):
    """phi = <mean mel, mean video> style toy with separate encoders and counters."""

    def __init__(self, split: bool):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls = {"audio": 0, "video": 0, "head": 0, "forward": 0}
        if split:
            self.encode_audio = self._enc_a
            self.encode_video = self._enc_v
            self.head = self._head

    def _enc_a(self, mel):
        self.calls["audio"] += mel.shape[0]
        return mel.mean(dim=(1, 2, 3))[:, None] * self.w

    def _enc_v(self, video):
        self.calls["video"] += video.shape[0]
        return video.mean(dim=(1, 2, 3, 4))[:, None]

    def _head(self, a, v):
        self.calls["head"] += a.shape[0]
        return (a * v).sum(-1)

    def forward(self, mel, video):
        self.calls["forward"] += mel.shape[0]
        return (mel.mean(dim=(1, 2, 3)) * self.w) * video.mean(dim=(1, 2, 3, 4))


def _sync_inputs(n=3, seed=0):
    rng = np.random.default_rng(seed)
    audio = {k: rng.uniform(-0.5, 0.5, 32000).astype(np.float32) for k in range(n)}
    video = {k: rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8) for k in range(n)}
    return audio, video


def test_sync_scorer_split_encoders_run_once_per_clip_and_match_forward():
    audio, video = _sync_inputs()
    pairs = [(1, 0), (1, 1), (1, 2), (0, 1), (2, 1), (1, 1)]
    split, plain = _CountingSync(True), _CountingSync(False)
    s1, s2 = sync.SyncScorer(split), sync.SyncScorer(plain)
    assert s1.split is not None and s2.split is None
    phi1, phi2 = s1.phi_pairs(audio, video, pairs), s2.phi_pairs(audio, video, pairs)
    assert set(phi1) == set(pairs) and len(phi1) == 5
    for p in phi1:
        assert phi1[p] == pytest.approx(phi2[p], rel=1e-5)
    assert split.calls == {"audio": 3, "video": 3, "head": 5, "forward": 0}
    assert plain.calls["forward"] == 5                       # one per distinct pair
    a2v, v2a = s1.score_window([audio[k] for k in range(3)], [video[k] for k in range(3)])
    exp_a2v = _softmax_mid([phi1[(1, 0)], phi1[(1, 1)], phi1[(1, 2)]])
    exp_v2a = _softmax_mid([phi1[(0, 1)], phi1[(1, 1)], phi1[(2, 1)]])
    assert (a2v, v2a) == pytest.approx((exp_a2v, exp_v2a))


def test_sync_scorer_with_the_real_small_classifier():
    from sync_classifier.model import tiny_config
    s = sync.SyncScorer.random(config=tiny_config())
    audio, video = _sync_inputs(seed=1)
    a2v, v2a = s.score_window([audio[k] for k in range(3)], [video[k] for k in range(3)])
    assert 0.0 < a2v < 1.0 and 0.0 < v2a < 1.0
    with pytest.raises(ValueError):
        s.phi_pairs({0: np.zeros(100, np.float32)}, video, [(0, 0)])


# ---------------------------------------------------------------- registry

def test_registry_order_and_defaults_come_from_the_modules():
    from filters import imagebind
    from manifests.schemas import FILTERS
    assert registry.LEGACY_ORDER == ("pixel_diff", "amplitude", "clip_diff", "imagebind", "sync")
    # the paper's five in their historical order, then the others by name (issue 26)
    assert FILTERS == (*registry.LEGACY_ORDER, "audio_quality", "speech")
    # the cascade runs the arithmetic filters, then Silero (~0.13 GFLOP per window), then the
    # sync classifier (~80 GFLOP per window) before ImageBind (~510)
    assert registry.ORDER == registry.DEFAULT_ORDER == (
        "pixel_diff", "amplitude", "audio_quality", "speech", "clip_diff", "sync", "imagebind")
    from curate.config.recipes import get_recipe
    assert tuple(get_recipe("avsync15")["order"]) == registry.DEFAULT_ORDER
    # the paper's recipes record the audio scores without gating on them
    assert get_recipe("avsync15")["gate"] == list(registry.LEGACY_ORDER)
    assert registry.cascade_order(["sync", "imagebind", "pixel_diff", "amplitude", "clip_diff"])[0] == "sync"
    # an order recorded before a filter existed: the new one follows
    assert registry.cascade_order(["sync", "pixel_diff"]) == (
        "sync", "pixel_diff", "amplitude", "audio_quality", "speech", "clip_diff", "imagebind")
    for bad in ([*FILTERS, "sync"], [*FILTERS[:-1], "bogus"]):
        with pytest.raises(ValueError, match="order"):
            registry.cascade_order(bad)
    from filters import audio_quality, speech
    mods = {"pixel_diff": pixel_diff, "amplitude": amplitude, "clip_diff": clip_diff,
            "imagebind": imagebind, "sync": sync, "audio_quality": audio_quality, "speech": speech}
    for name, mod in mods.items():
        assert registry.spec(name) is mod.FILTER and mod.FILTER.name == name
        assert registry.DEFAULT_THRESHOLDS[name] == mod.FILTER.thresholds
    # the paper's thresholds (seed 003 section 5.2), written out here
    assert registry.DEFAULT_THRESHOLDS == {
        "pixel_diff": {"min": 0.01, "max": 0.15}, "amplitude": {"min": 0.03},
        "clip_diff": {"min": 0.17, "max": 0.55}, "imagebind": {"ia_min": 0.15, "it_min": 0.22},
        "sync": {"a2v_min": 0.341, "v2a_min": 0.341},
        # issue 26: > 80% silent (HunyuanVideo-Foley), > 1% clipped, half the window speech
        "audio_quality": {"silence_max": 0.8, "clipping_max": 0.01}, "speech": {"max": 0.5}}


#: each filter's keep rule, written out independently of the declarations
_RULES = {
    "pixel_diff": lambda t, v: t["min"] <= v[0] <= t["max"],
    "amplitude": lambda t, v: v[0] >= t["min"],
    "clip_diff": lambda t, v: t["min"] <= v[0] <= t["max"],
    "imagebind": lambda t, v: v[0] >= t["ia_min"] and v[1] >= t["it_min"],
    "sync": lambda t, v: v[0] >= t["a2v_min"] and v[1] >= t["v2a_min"],
    # silence, bandwidth_hz, clipping, fake_stereo (bandwidth and fake stereo: no default)
    "audio_quality": lambda t, v: v[0] <= t["silence_max"] and v[2] <= t["clipping_max"],
    "speech": lambda t, v: v[0] <= t["max"],          # speech_run_s: no default
}
#: columns that only record (no bound): a missing one never withholds the decision
_RECORD_ONLY = {"sync_offset_s", "sync_offset_p"}


def test_registry_passes_agrees_with_each_filter_rule_written_out():
    thr = registry.default_thresholds()
    rng = np.random.default_rng(0)
    edges = [b for t in thr.values() for b in t.values()]
    values = list(rng.uniform(-0.2, 0.8, 200)) + edges + [math.nextafter(e, 1) for e in edges] \
        + [math.nextafter(e, -1) for e in edges] + [None, float("nan")]
    assert set(_RULES) == set(registry.FILTERS)
    for name, rule in _RULES.items():
        cols = registry.columns(name)
        for _ in range(300):
            row = {c: values[rng.integers(len(values))] for c in cols}
            v = [row[c] for c in cols]
            decided = [row[c] for c in cols if c not in _RECORD_ONLY]
            expected = not any(x is None or math.isnan(x) for x in decided) and rule(thr[name], v)
            assert bool(registry.passes(name, row, thr)) == expected, (name, row)


def test_registry_check_reports_first_failing_gating_filter():
    thr = registry.default_thresholds()
    row = {"pixel_diff": 0.05, "amplitude": 0.01, "clip_diff": 0.9, "imagebind_ia": 0.3,
           "imagebind_it": 0.3, "sync_a2v": 0.5, "sync_v2a": 0.5}
    assert registry.check(row, thr) == (False, "amplitude")
    assert registry.check(row, thr, gate={"clip_diff", "sync"}) == (False, "clip_diff")
    assert registry.check(row, thr, gate={"pixel_diff", "sync"}) == (True, None)


# ---------------------------------------------------------------- CLIP

def test_clip_random_embeds_frames_and_checkpoint_round_trip(tmp_path):
    from filters.clip_model import ClipScorer
    c = ClipScorer.random(seed=0)
    frames = np.random.default_rng(0).integers(0, 255, (5, 224, 224, 3), dtype=np.uint8)
    e = c.embed(frames)
    assert e.shape == (5, c.dim) and e.dtype == np.float32 and np.all(np.isfinite(e))
    # batching does not change the result; different frames give different features
    c.batch_size = 2
    assert np.allclose(c.embed(frames), e, atol=1e-5)
    assert not np.allclose(e[0], e[1])
    path = tmp_path / "tiny.pt"
    torch.save(c.model.state_dict(), path)
    c2 = ClipScorer.from_checkpoint(path, model="tiny")
    assert np.allclose(c2.embed(frames), e, atol=1e-5)
    assert not np.allclose(ClipScorer.random(seed=1).embed(frames), e)


def test_clip_missing_or_bad_weights_name_the_option(tmp_path):
    from filters.clip_model import ClipScorer, ClipWeightsError
    with pytest.raises(ClipWeightsError, match="--clip-checkpoint"):
        ClipScorer.from_checkpoint(tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ClipWeightsError, match="--clip"):
        ClipScorer.from_checkpoint(bad, model="tiny")
    with pytest.raises(ClipWeightsError, match="--clip-model"):
        ClipScorer.from_pretrained("No-Such-Model", "openai")
    with pytest.raises(ValueError):
        ClipScorer.random().embed(np.zeros((2, 224, 224), np.uint8))
