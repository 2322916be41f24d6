"""The trainer-side loader: shards -> AVSyncD's [12,3,256,256] video and [1,128,204] mel."""
from __future__ import annotations

import math
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from decoding.mel import IMAGEBIND_MEAN, IMAGEBIND_STD
from shards.loader import make_dataset, window_start
from shards.writer import Sample, shard_urls, write_shards

from testkit import avmedia
from testkit.avmedia import brightness

FPS = 20


def make_av(path, duration, burst=None, size=(160, 120), sr=16000):
    return avmedia.make_av(path, duration, FPS, size=size, burst=burst, sr=sr)
CLASSES = ["dog_barking", "frog_croaking", "lions_roaring"]


def _sample(i: int, mp4: Path) -> Sample:
    cls = CLASSES[i % 3]
    key = f"{cls}-Yt{i:03d}abcdefg_000000_000010_0p0_3p0"
    return Sample(key=key, mp4=mp4, meta={"class_name": cls}, class_index=i % 3,
                  text=cls.replace("_", " "), duration=3.0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """6 samples in 3 shards: five 3-s clips (burst at 1.0-1.5 s) and one 1.5-s clip (key ..005)."""
    d = tmp_path_factory.mktemp("loader")
    long = make_av(d / "long.mp4", 3.0, burst=(1.0, 1.5))
    short = make_av(d / "short.mp4", 1.5, burst=(0.2, 0.4))
    samples = [_sample(i, long if i < 5 else short) for i in range(6)]
    write_shards(d / "out", samples, "train", max_count=2)
    write_shards(d / "out", samples, "test", max_count=2)
    return d / "out" / "shards"


def _by_key(ds) -> dict[str, dict]:
    return {s["key"]: s for s in ds}


def test_dataloader_with_two_workers_yields_avsyncd_shapes(shards):
    torch.set_num_threads(1)
    urls = shard_urls(shards, "train")
    assert len(urls) == 3
    dl = torch.utils.data.DataLoader(make_dataset(urls, "train", seed=1), batch_size=2, num_workers=2)
    keys, n_batches = [], 0
    for b in dl:
        n = len(b["key"])
        assert b["video"].shape == (n, 12, 3, 256, 256) and b["video"].dtype == torch.float32
        assert b["audio"].shape == (n, 1, 128, 204) and b["audio"].dtype == torch.float32
        assert 0.0 <= b["video"].min() and b["video"].max() <= 1.0
        for key, label, text in zip(b["key"], b["label"].tolist(), b["text"]):
            cls = key.split("-", 1)[0]
            assert label == CLASSES.index(cls) and text == cls.replace("_", " ")
        keys += b["key"]
        n_batches += 1
    assert sorted(keys) == sorted(f"{CLASSES[i % 3]}-Yt{i:03d}abcdefg_000000_000010_0p0_3p0"
                                  for i in range(6))  # each sample once across both workers
    assert n_batches >= 3


def _source_frame(t: float) -> int:
    """Index of the source frame shown at time t."""
    return int(math.floor(t * FPS + 1e-6))


def test_test_split_takes_the_centre_window(shards):
    ds = make_dataset(shard_urls(shards, "test"), "test")
    s = next(v for k, v in _by_key(ds).items() if not k.startswith(CLASSES[2]))  # a 3-s clip
    assert s["start"] == pytest.approx(0.5)
    grey = s["video"].mean(dim=(1, 2, 3)).numpy() * 255
    want = [brightness(_source_frame(0.5 + k / 6)) for k in range(12)]
    assert np.abs(grey - want).max() < 1.6
    # the burst at 1.0-1.5 s is at 0.5-1.0 s of the window: mel frames 50..100 (10-ms hop)
    energy = s["audio"][0].max(dim=0).values.numpy()  # loudest mel bin per frame
    assert energy[55:95].mean() > energy[110:190].mean() + 1.0
    assert energy[5:45].mean() < energy[55:95].mean() - 1.0
    loud = np.flatnonzero(energy[:198] > 0.0)  # 198 real fbank frames, then zero padding
    assert 46 <= loud[0] <= 50 and 97 <= loud[-1] <= 102  # onset 0.5 s, offset 1.0 s (+- 2 hops)


def test_train_windows_are_random_seeded_and_change_per_epoch(shards):
    urls = shard_urls(shards, "train")

    def run(seed: int, epoch: int) -> dict[str, float]:
        ds = make_dataset(urls, "train", seed=seed, epoch=epoch)
        return {k: v["start"] for k, v in _by_key(ds).items()}

    a, b, c = run(0, 0), run(0, 0), run(0, 1)
    assert a == b  # reproducible
    long_keys = [k for k in a if not k.endswith("005abcdefg_000000_000010_0p0_3p0")]
    assert all(0.0 <= a[k] <= 1.0 for k in long_keys)
    assert len({round(a[k], 6) for k in long_keys}) == len(long_keys)  # not one fixed window
    assert any(abs(a[k] - c[k]) > 1e-6 for k in long_keys)  # a new window next epoch


def test_train_frames_follow_the_drawn_start(shards):
    for s in make_dataset(shard_urls(shards, "train"), "train", seed=3):
        grey = s["video"][0].mean().item() * 255
        assert abs(grey - brightness(_source_frame(s["start"]))) < 1.6


def test_short_clip_repeats_last_frame_and_pads_the_mel(shards):
    s = _by_key(make_dataset(shard_urls(shards, "test"), "test"))[
        "lions_roaring-Yt005abcdefg_000000_000010_0p0_3p0"]
    assert s["start"] == 0.0
    v = s["video"]
    # frames at 0, 1/6, ... 1.333 exist; those at 1.5, 1.667, 1.833 repeat the last frame (29)
    assert torch.equal(v[9], v[10]) and torch.equal(v[10], v[11])
    assert abs(v[11].mean().item() * 255 - brightness(29)) < 1.6
    assert abs(v[8].mean().item() * 255 - brightness(26)) < 1.6
    # 1.5 s of audio -> 148 fbank frames; the rest is ImageBind's zero padding, normalised
    pad = (0.0 - IMAGEBIND_MEAN) / IMAGEBIND_STD
    mel = s["audio"][0]
    assert torch.allclose(mel[:, 160:], torch.full_like(mel[:, 160:], pad))
    assert not torch.allclose(mel[:, :140], torch.full_like(mel[:, :140], pad))


def test_normalize_gives_minus_one_to_one(shards):
    urls = shard_urls(shards, "test")
    a = _by_key(make_dataset(urls, "test"))
    b = _by_key(make_dataset(urls, "test", normalize=True))
    for k in a:
        assert torch.allclose(b[k]["video"], a[k]["video"] * 2 - 1, atol=1e-6)
        assert b[k]["video"].min() >= -1.0 and b[k]["video"].max() <= 1.0


def test_nodes_read_disjoint_shards(shards, monkeypatch):
    urls = shard_urls(shards, "test")
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append(set(_by_key(make_dataset(urls, "test"))))
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 6


def test_an_undecodable_sample_is_skipped_not_fatal(shards, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 500)
    good = shards.parent.parent / "long.mp4"
    write_shards(tmp_path / "o", [_sample(0, good), _sample(1, bad)], "test")
    with pytest.warns(UserWarning):
        got = _by_key(make_dataset(shard_urls(tmp_path / "o" / "shards", "test"), "test"))
    assert list(got) == [_sample(0, good).key]
    with pytest.raises(ValueError):
        make_dataset(shard_urls(tmp_path / "o" / "shards", "test"), "val")


def test_window_start_rule():
    import random
    rng = random.Random(0)
    assert window_start(5.0, False, rng) == 1.5
    assert window_start(1.7, True, rng) == 0.0
    assert all(0.0 <= window_start(5.0, True, rng) <= 3.0 for _ in range(20))


def test_loader_imports_neither_ray_nor_the_engine():
    code = ("import sys, shards.loader; "
            "bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.') or m.startswith('curate.execution.ray')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
