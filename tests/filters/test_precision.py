"""Model precision (filters.precision): CPU stays plain fp32 (scores byte-identical to a bare
fp32 forward), ``bf16`` really runs the models under bf16 autocast and stays within the
documented tolerance; CUDA's default (bf16) is measured by benchmarks/device_check.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from filters import precision
from filters.clip_model import ClipScorer
from filters.imagebind_scorer import ImageBindScorer
from filters.sync import SyncScorer
from sync_classifier.model import tiny_config


def test_auto_is_bf16_on_cuda_and_fp32_on_cpu():
    assert precision.resolve("auto", "cpu") == "fp32"
    assert precision.resolve("auto", torch.device("cuda:0")) == "bf16"
    assert precision.resolve("tf32", "cpu") == "tf32"
    with pytest.raises(ValueError, match="precision"):
        precision.resolve("half", "cpu")
    assert set(precision.BF16_TOLERANCE) == {"pixel_diff", "amplitude", "clip_diff", "imagebind_ia",
                                              "imagebind_it", "sync_a2v", "sync_v2a"}


def _inputs():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (4, 224, 224, 3), dtype=np.uint8)
    waves = (0.1 * rng.standard_normal((4, 32000))).astype(np.float32)
    clips = rng.integers(0, 255, (3, 12, 224, 224, 3), dtype=np.uint8)
    return frames, waves, clips


def test_cpu_default_is_the_bare_fp32_forward_and_bf16_differs_within_tolerance():
    frames, waves, clips = _inputs()
    clip = ClipScorer.random(seed=0)
    assert clip.precision == "fp32"
    with torch.inference_mode():
        bare = clip.model.encode_image(clip._prep(frames)).float().numpy()
    assert np.array_equal(clip.embed(frames), bare)           # byte-identical on CPU
    ib = ImageBindScorer.random(seed=0)
    with torch.inference_mode():
        from filters.imagebind_scorer import preprocess_frames
        bare_ib = ib.model.embed_vision(preprocess_frames(frames)).float().numpy()
    assert np.array_equal(ib.embed_images(frames), bare_ib)

    clip16 = ClipScorer(clip.model, precision="bf16")
    ib16 = ImageBindScorer(ib.model, precision="bf16")
    for fp32, bf16 in ((clip.embed(frames), clip16.embed(frames)),
                       (ib.embed_images(frames), ib16.embed_images(frames)),
                       (ib.embed_audio(waves), ib16.embed_audio(waves))):
        assert not np.array_equal(fp32, bf16)                  # autocast really ran in bf16
    # the scores the filters compute from them stay within the documented tolerance
    from filters import clip_diff, imagebind
    tol = precision.BF16_TOLERANCE
    assert abs(clip_diff.score(clip.embed(frames)) - clip_diff.score(clip16.embed(frames))) <= tol["clip_diff"]
    text = "dog barking"
    s32 = imagebind.score(ib.embed_images(frames[:3]), ib.embed_audio(waves[:3]), ib.embed_text([text])[0])
    s16 = imagebind.score(ib16.embed_images(frames[:3]), ib16.embed_audio(waves[:3]),
                          ib16.embed_text([text])[0])
    assert abs(s32[0] - s16[0]) <= tol["imagebind_ia"] and abs(s32[1] - s16[1]) <= tol["imagebind_it"]

    sync = SyncScorer.random(seed=0, config=tiny_config())
    sync16 = SyncScorer(sync.model, precision="bf16")
    keys = range(3)
    audio, video = dict(zip(keys, waves)), dict(zip(keys, clips))
    pairs = [(a, v) for a in keys for v in keys]
    p32, p16 = sync.phi_pairs(audio, video, pairs), sync16.phi_pairs(audio, video, pairs)
    assert p32 != p16
    from filters.sync import score, window_phi
    s32 = score(*window_phi(p32, (0, 1, 2), (0, 1, 2)))
    s16 = score(*window_phi(p16, (0, 1, 2), (0, 1, 2)))
    assert abs(s32[0] - s16[0]) <= tol["sync_a2v"] and abs(s32[1] - s16[1]) <= tol["sync_v2a"]


def test_channels_last_is_cuda_only_by_default():
    sync = SyncScorer.random(seed=0, config=tiny_config())
    assert not sync.channels_last
    # asked for on CPU it changes the memory layout, not the values beyond rounding
    cl = SyncScorer(SyncScorer.random(seed=0, config=tiny_config()).model, channels_last=True)
    _, waves, clips = _inputs()
    a = sync.phi_pairs({0: waves[0]}, {0: clips[0]}, [(0, 0)])
    b = cl.phi_pairs({0: waves[0]}, {0: clips[0]}, [(0, 0)])
    assert a[(0, 0)] == pytest.approx(b[(0, 0)], rel=1e-4, abs=1e-5)
