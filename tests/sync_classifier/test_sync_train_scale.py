"""Training at the paper's scale (issue 9 item 4): gradient accumulation, easy-negative warm-up,
autocast, DDP under torchrun (CPU, gloo)."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sync_classifier.data import TRAIN_OFFSETS, GeneratedClipDataset, collate_instances
from sync_classifier.model import SyncClassifier, load_sync_classifier, tiny_config
from sync_classifier.synthetic import make_grid_factory
from sync_classifier.train import (PairwisePhi, TrainConfig, _amp_context, _optimizer_step,
                                   amp_dtype, sync_contrastive_loss, train)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


def _batch(n: int = 2) -> dict:
    ds = GeneratedClipDataset(make_grid_factory(6.5, 32), n, TRAIN_OFFSETS, 32, train=False, seed=3)
    return collate_instances([ds[i] for i in range(n)])


def _split(batch: dict, parts: int) -> list[dict]:
    n = batch["mel"].shape[0] // parts
    return [{"mel": batch["mel"][i * n:(i + 1) * n], "video": batch["video"][i * n:(i + 1) * n],
             "failed": []} for i in range(parts)]


def test_gradient_accumulation_equals_the_whole_batch() -> None:
    """Two micro-batches of 1 instance make the same optimizer step as one batch of 2 (BN in eval
    mode, so batch statistics do not differ between the two ways)."""
    torch.manual_seed(0)
    batch = _batch(2)
    base = PairwisePhi(SyncClassifier(tiny_config())).eval()
    nets = [base, copy.deepcopy(base)]
    # SGD: the step is proportional to the gradient (Adam would amplify rounding in ~0 grads)
    opts = [torch.optim.SGD(n.parameters(), lr=0.1) for n in nets]
    autocast, scaler = _amp_context(torch.device("cpu"), "off")
    cfg1 = TrainConfig(out=Path("x.pt"), accum_steps=1)
    cfg2 = TrainConfig(out=Path("x.pt"), accum_steps=2)
    l1 = _optimizer_step(nets[0], opts[0], iter([batch]), torch.device("cpu"), autocast, scaler,
                         cfg1, False, 1)
    l2 = _optimizer_step(nets[1], opts[1], iter(_split(batch, 2)), torch.device("cpu"), autocast,
                         scaler, cfg2, False, 1)
    assert l1[0] == pytest.approx(l2[0], rel=1e-5)
    for (k, p1), (_, p2) in zip(nets[0].named_parameters(), nets[1].named_parameters()):
        assert torch.allclose(p1, p2, atol=1e-6), k
    # and the step did move the weights
    assert not all(torch.equal(p, q) for p, q in zip(base.parameters(),
                                                       PairwisePhi(SyncClassifier(tiny_config())).parameters()))


def test_easy_negatives_are_other_instances() -> None:
    torch.manual_seed(0)
    batch = _batch(3)
    net = PairwisePhi(SyncClassifier(tiny_config())).eval()
    with torch.no_grad():
        phi = net(batch["mel"], batch["video"], easy=True)
        hard = net(batch["mel"], batch["video"])
    assert phi.shape == (1, 3, 3)
    # diagonal of the easy matrix = instance b's own unshifted pair = hard phi[b, c, c]
    c = len(TRAIN_OFFSETS) // 2
    assert torch.allclose(torch.diagonal(phi[0]), hard[:, c, c], atol=1e-5)
    loss, _, _ = sync_contrastive_loss(phi)
    assert torch.isfinite(loss)


def test_warmup_then_hard_negatives_in_a_run(tmp_path) -> None:
    out = tmp_path / "w.pt"
    train(TrainConfig(out=out, steps=2, warmup_steps=1, batch_size=2, model=tiny_config(),
                      num_workers=0, ckpt_every=1, log_every=1, synthetic_duration=6.2))
    rows = [json.loads(x) for x in out.with_name("w.log.jsonl").read_text().splitlines()]
    assert [r["negatives"] for r in rows] == ["easy", "hard"]


def test_warmup_needs_two_instances(tmp_path) -> None:
    with pytest.raises(ValueError, match="easy negatives need at least 2"):
        train(TrainConfig(out=tmp_path / "w.pt", steps=1, warmup_steps=1, batch_size=1,
                          model=tiny_config(), num_workers=0, synthetic_duration=6.2))


def test_amp_modes() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype(cpu, "auto") is None and amp_dtype(cpu, True) is None
    assert amp_dtype(cpu, "off") is None and amp_dtype(cuda, "off") is None
    assert amp_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        amp_dtype(cpu, "fp16")
    with pytest.raises(ValueError, match="amp must be"):
        amp_dtype(cpu, "int8")
    assert amp_dtype(cuda, "fp16") == torch.float16


def test_bf16_autocast_step_on_cpu(tmp_path) -> None:
    out = tmp_path / "a.pt"
    train(TrainConfig(out=out, steps=1, batch_size=1, model=tiny_config(), amp="bf16",
                      num_workers=0, ckpt_every=1, log_every=1, synthetic_duration=6.2))
    rec = json.loads(out.with_name("a.log.jsonl").read_text().splitlines()[0])
    assert rec["loss"] == rec["loss"] and rec["loss"] > 0      # finite, computed in bf16
    assert load_sync_classifier(out).head.fc[0].weight.dtype == torch.float32


def test_ddp_under_torchrun_two_cpu_processes(tmp_path) -> None:
    """torchrun --nproc_per_node 2 (gloo): both ranks step together, rank 0 writes one checkpoint."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from sync_classifier.model import tiny_config
        from sync_classifier.train import TrainConfig, train
        train(TrainConfig(out={str(tmp_path / 'ddp.pt')!r}, steps=2, batch_size=2,
                          model=tiny_config(), num_workers=0, ckpt_every=1, log_every=1,
                          synthetic_duration=6.2, device="cpu"))
        """))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", str(script)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    state = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert state["step"] == 2
    rows = [json.loads(x) for x in (tmp_path / "ddp.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]     # logged once (rank 0), not per rank
