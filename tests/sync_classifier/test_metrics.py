"""Sync/alignment metrics with hand-computed values (seed 003 Eqs. 4, 5, 7-11, 13-14)."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from sync_classifier import metrics
from sync_classifier.evaluate import chance_accuracy, tolerant_accuracy
from sync_classifier.model import SyncClassifier, tiny_config

torch.set_num_threads(1)


def test_p_sync() -> None:
    assert metrics.p_sync([0.0, 0.0, 0.0]) == pytest.approx(1 / 3)
    # e^2 / (e^0 + e^2 + e^1)
    assert metrics.p_sync([0.0, 2.0, 1.0]) == pytest.approx(math.e ** 2 / (1 + math.e ** 2 + math.e))
    # no temperature: phi scaled by 10 is not the same probability
    assert metrics.p_sync([0.0, 0.2, 0.1]) != pytest.approx(metrics.p_sync([0.0, 2.0, 1.0]))
    assert metrics.p_sync(torch.tensor([1000.0, 1000.0, -1000.0])) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        metrics.p_sync([0.0, 1.0])
    with pytest.raises(ValueError):
        metrics.p_sync([0.0, float("nan"), 1.0])


def test_rel_sync() -> None:
    assert metrics.rel_sync(0.0, 0.0) == 0.5
    assert metrics.rel_sync(1.0, 0.0) == pytest.approx(math.e / (math.e + 1))
    assert metrics.rel_sync(-3.0, 2.0) == pytest.approx(math.exp(-3) / (math.exp(-3) + math.exp(2)))
    assert metrics.rel_sync(800.0, 0.0) == pytest.approx(1.0)  # no overflow


def test_p_align_and_align_sync() -> None:
    ia_frames = [0.9, 0.3, 0.1, 0.3]       # the first (replicated) frame is excluded
    gt1 = 0.3
    s = lambda x: math.exp(x) / (math.exp(x) + math.exp(gt1))  # noqa: E731
    expected = (s(0.3) + s(0.1) + s(0.3)) / 3
    assert metrics.p_align(ia_frames, gt1) == pytest.approx(expected)
    assert metrics.p_align([5.0, 0.3, 0.3], 0.3) == pytest.approx(0.5)
    assert metrics.align_sync(1.0, 0.0, ia_frames, gt1) == pytest.approx(
        math.e / (math.e + 1) * expected)
    with pytest.raises(ValueError):
        metrics.p_align([0.2], 0.1)


def test_ia_it_cosines() -> None:
    a = np.array([1.0, 0.0])
    frames = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    assert metrics.ia(a, frames) == pytest.approx((1 + 0 - 1) / 3)
    assert metrics.ia(a, frames, generated=True) == pytest.approx(-0.5)
    assert metrics.it(torch.tensor([3.0, 3.0]), frames[:2]) == pytest.approx(math.sqrt(0.5))
    with pytest.raises(ValueError):
        metrics.ia(a, np.zeros((2, 3)))


def test_tolerant_accuracy_and_chance() -> None:
    phi = torch.zeros(31, 31)
    phi[torch.arange(31), (torch.arange(31) + 5).clamp(max=30)] = 1.0   # off by 5: still right
    a2v, _ = tolerant_accuracy(phi)
    assert a2v == 1.0
    phi2 = torch.zeros(31, 31)
    phi2[:, 30] = 1.0                 # every audio picks the last video: right for k >= 25
    a2v, v2a = tolerant_accuracy(phi2)
    assert a2v == pytest.approx(6 / 31)
    # every column is constant, so its argmax over audios is 0 (first max): right for j <= 5
    assert v2a == pytest.approx(6 / 31)
    assert chance_accuracy() == pytest.approx(311 / 961)
    # a random scorer lands near chance
    g = torch.Generator().manual_seed(0)
    accs = [tolerant_accuracy(torch.randn(31, 31, generator=g))[0] for _ in range(400)]
    assert abs(np.mean(accs) - 311 / 961) < 0.02


def test_p_sync_pair_on_grid() -> None:
    from sync_classifier.synthetic import event_grid

    torch.manual_seed(0)
    model = SyncClassifier(tiny_config())
    grid, _ = event_grid(random.Random(3), duration=4.0, size=32)
    out = metrics.p_sync_pair(model, grid, center=2.0)
    phi = torch.tensor(out["phi"])
    assert phi.shape == (3, 3)
    assert out["a2v"] == pytest.approx(metrics.p_sync(phi[1, :]))
    assert out["v2a"] == pytest.approx(metrics.p_sync(phi[:, 1]))
    assert 0 < out["a2v"] < 1 and model.training  # mode restored
    with pytest.raises(ValueError):
        metrics.p_sync_pair(model, grid, center=0.5)   # clips would leave the grid


class _FakeImageBind:
    """Deterministic stand-in embeddings: colour statistics and mel statistics."""

    def embed_audio(self, waves: np.ndarray) -> np.ndarray:
        assert waves.shape[1:] == (32000,) and waves.dtype == np.float32
        return np.stack([waves.mean(1), waves.std(1), np.ones(len(waves)), np.abs(waves).max(1)], 1)

    def embed_images(self, frames: np.ndarray) -> np.ndarray:
        assert frames.dtype == np.uint8 and frames.shape[1:] == (224, 224, 3)
        x = frames.astype(np.float64).mean(axis=(1, 2)) / 255.0
        return np.concatenate([x, np.ones((len(frames), 1))], axis=1)

    def embed_text(self, names: list[str]) -> np.ndarray:
        return np.array([[len(t), 1.0, 2.0, 0.5] for t in names])


def test_evaluate_generated_rows_and_table(tmp_path) -> None:
    from sync_classifier.generated_eval import evaluate_generated, format_table
    from sync_classifier.synthetic import write_event_mp4

    (tmp_path / "ref" / "dog_barking").mkdir(parents=True)
    (tmp_path / "gen" / "dog_barking").mkdir(parents=True)
    write_event_mp4(tmp_path / "ref" / "dog_barking" / "v1.mp4", seed=4, duration=5.0, size=32)
    for i, part in enumerate(("head", "center")):  # tail missing on purpose
        write_event_mp4(tmp_path / "gen" / "dog_barking" / f"v1_{part}.mp4", seed=10 + i,
                        duration=2.0, size=32)
    torch.manual_seed(0)
    model = SyncClassifier(tiny_config())
    rows = evaluate_generated(tmp_path / "gen", tmp_path / "ref", model, _FakeImageBind())
    assert [r["part"] for r in rows] == ["head", "center", "tail"]
    assert "missing generated clip" in rows[2]["error"]
    for r in rows[:2]:
        assert r["error"] is None and r["name"] == "dog_barking/v1"
        assert r["rel_sync"] == pytest.approx(metrics.rel_sync(r["phi_gen"], r["phi_gt"]))
        assert r["align_sync"] == pytest.approx(r["rel_sync"] * r["p_align"])
        assert -1 <= r["ia"] <= 1 and -1 <= r["it"] <= 1 and 0 < r["p_align"] < 1
    table = format_table(rows)
    assert "RelSync" in table and "AlignSync" in table and "n/c" in table
    assert f"{100 * np.mean([r['rel_sync'] for r in rows[:2]]):.2f}" in table
    # without a scorer only the sync columns are filled
    rows2 = evaluate_generated(tmp_path / "gen", tmp_path / "ref", model)
    assert rows2[0]["rel_sync"] == pytest.approx(rows[0]["rel_sync"]) and "ia" not in rows2[0]
