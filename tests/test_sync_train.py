"""Contrastive loss (seed 003 Eq. 1), training loop, resume, evaluation protocol."""
from __future__ import annotations

import json
import math

import pytest
import torch

from sync_classifier.data import TRAIN_OFFSETS, GeneratedClipDataset, collate_instances
from sync_classifier.evaluate import evaluate
from sync_classifier.model import SyncClassifier, load_sync_classifier, tiny_config
from sync_classifier.synthetic import make_grid_factory
from sync_classifier.train import (PairwisePhi, TrainConfig, checkpoint_paths, sync_contrastive_loss,
                                   train)

torch.set_num_threads(1)


def test_loss_hand_computed() -> None:
    # tau = 0.1: logits = phi * 10 = [[1, 2], [0, 0]]
    phi = torch.tensor([[0.1, 0.2], [0.0, 0.0]])
    loss, acc_a2v, acc_v2a = sync_contrastive_loss(phi, tau=0.1)
    e = math.e
    a2v = (math.log(1 + e) + math.log(2)) / 2                  # rows, targets 0 and 1
    v2a = (math.log(1 + e) - 1 + math.log(1 + e * e)) / 2      # columns [1,0] and [2,0]
    assert loss.item() == pytest.approx(a2v + v2a, rel=1e-6)
    assert acc_a2v.item() == 0.0 and acc_v2a.item() == 0.5
    # a batch of two instances averages them
    batch = torch.stack([phi, torch.zeros(2, 2)])
    loss2, _, _ = sync_contrastive_loss(batch, tau=0.1)
    assert loss2.item() == pytest.approx((a2v + v2a + 2 * math.log(2)) / 2, rel=1e-6)
    # a perfect diagonal gives ~0 loss and accuracy 1
    loss3, a3, v3 = sync_contrastive_loss(torch.eye(21) * 10, tau=0.1)
    assert loss3.item() < 1e-6 and a3.item() == 1.0 and v3.item() == 1.0


def test_steps_on_generated_data_lower_the_loss() -> None:
    torch.manual_seed(0)
    ds = GeneratedClipDataset(make_grid_factory(6.5, 32), 2, TRAIN_OFFSETS, 32, train=False, seed=1)
    batch = collate_instances([ds[0], ds[1]])
    assert batch["mel"].shape == (2, 21, 1, 128, 204) and batch["video"].shape == (2, 21, 3, 12, 32, 32)
    net = PairwisePhi(SyncClassifier(tiny_config()))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.01)
    losses = []
    for _ in range(12):
        loss, _, _ = sync_contrastive_loss(net(batch["mel"], batch["video"]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(2 * math.log(21), abs=0.3)  # near-uniform at init
    assert min(losses[-3:]) < losses[0] - 0.5, losses


def test_train_checkpoint_resume_and_eval(tmp_path) -> None:
    out = tmp_path / "run" / "sync.pt"
    cfg = TrainConfig(out=out, steps=2, batch_size=1, model=tiny_config(), num_workers=0,
                      ckpt_every=1, log_every=1, synthetic_duration=6.2)
    final = train(cfg)
    final_p, last_p = checkpoint_paths(out)
    assert final == final_p == out and last_p.exists()
    assert torch.load(last_p, weights_only=False)["step"] == 2
    log_rows = [json.loads(line) for line in final.with_name("sync.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in log_rows)
    # resume continues from the last checkpoint instead of starting again
    train(cfg, steps=3)
    assert torch.load(final, weights_only=False)["step"] == 3
    # --init starts a fresh run from given weights
    init_run = train(out=tmp_path / "b", init=final, steps=1, batch_size=1, num_workers=0,
                     synthetic_duration=6.2)
    assert load_sync_classifier(init_run).config == tiny_config()
    model = load_sync_classifier(final)
    res = evaluate(model=model, data=None, n_generated=2, num_workers=0)
    assert res["n_videos"] == 2 and 0.0 <= res["a2v"] <= 1.0 and 0.0 <= res["v2a"] <= 1.0
    assert res["chance"] == pytest.approx(311 / 961) and res["chance_middle"] == pytest.approx(11 / 31)


def test_train_without_usable_data_fails_clearly(tmp_path) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError, match="no usable training videos"):
        train(out=tmp_path / "o.pt", data=tmp_path / "data", steps=1, model=tiny_config(),
              num_workers=0)
