"""The released AVSync classifier (issue 9, items 1-2): key/shape and forward checks against
../shared/reference/asva_sync, and strict loading of the released and AVID-CMA layouts."""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest
import torch

from sync_classifier.model import (MODULES, SyncClassifier, SyncConfig, config_from_state,
                                   load_init, load_sync_classifier, parameter_counts,
                                   save_checkpoint, save_released, small_config, tiny_config)

REF = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "asva_sync"
if not REF.is_dir():
    REF = Path("/work/shared/reference/asva_sync")


def _ref(name: str) -> dict:
    p = REF / name
    if not p.is_file():
        pytest.fail(f"reference file missing: {p}")
    return json.loads(p.read_text())


# ------------------------------------------------------------------ analytic weights (README)

def analytic_tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    numel = math.prod(shape) if shape else 1
    k = torch.arange(numel, dtype=torch.float64)
    phase = (zlib.crc32(name.encode("utf-8")) % 1000) / 1000 * 2 * math.pi
    s = torch.sin(0.7 * k + phase)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros((), dtype=torch.long)
    if leaf == "running_mean":
        v = 0.01 * s
    elif leaf == "running_var":
        v = 1 + 0.1 * s.abs()
    elif leaf == "weight" and len(shape) == 1:
        v = 1 + 0.1 * s
    elif leaf == "bias":
        v = 0.01 * s
    else:
        v = s * math.sqrt(3 / (numel / shape[0]))
    return v.reshape(shape).float()


def analytic_state(model: SyncClassifier) -> dict[str, torch.Tensor]:
    return {n: analytic_tensor(n, tuple(t.shape)) for n, t in model.state_dict().items()}


def analytic_inputs() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    c, t, h, w = torch.meshgrid(torch.arange(3.), torch.arange(12.), torch.arange(224.),
                                torch.arange(224.), indexing="ij")
    c, t, h, w = (x.double() for x in (c, t, h, w))
    v = (torch.sin(0.05 * (c + 1) * h + 0.03 * w + 0.4 * t)
         + 0.5 * torch.cos(0.011 * h * (c + 1) - 0.02 * w * (t + 1) / 12)).float()
    n, tt = torch.meshgrid(torch.arange(128.), torch.arange(204.), indexing="ij")
    n, tt = n.double(), tt.double()
    a = (torch.sin(0.1 * n + 0.05 * tt) + 0.3 * torch.cos(0.017 * n * tt / 10)).float()
    return [a[None], torch.roll(a, 25, dims=1)[None]], [v, v.flip(1)]


# ------------------------------------------------------------------ item 1

def test_state_dict_keys_and_shapes_equal_the_released_model() -> None:
    ref = _ref("asva_sync_state_dict.json")
    with torch.device("meta"):
        m = SyncClassifier()
    for mod in MODULES:
        sd = getattr(m, mod).state_dict()
        assert list(sd) == list(ref[mod]), mod
        assert {k: list(v.shape) for k, v in sd.items()} == ref[mod], mod
    assert parameter_counts(m) == {"audio_encoder": 4_725_696, "video_encoder": 15_379_136,
                                   "head": 656_385}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_forward_equals_the_released_model_under_analytic_weights() -> None:
    ref = _ref("asva_sync_forward.json")
    torch.manual_seed(0)
    m = SyncClassifier().eval()
    m.load_state_dict(analytic_state(m))
    audios, videos = analytic_inputs()
    with torch.inference_mode():
        fa = m.encode_audio(torch.stack(audios))
        fv = m.encode_video(torch.stack(videos))
        phi = m.pairwise(fa, fv)
        matched = m(torch.stack(audios), torch.stack(videos))
    want_phi = torch.tensor(ref["phi[audio_i][video_j]"], dtype=torch.float64)
    errs = {
        "phi": _rel(phi.double(), want_phi),
        "audio_first8": _rel(fa[:, :8].double(), torch.tensor(ref["audio_embedding_first8"], dtype=torch.float64)),
        "video_first8": _rel(fv[:, :8].double(), torch.tensor(ref["video_embedding_first8"], dtype=torch.float64)),
        "audio_l2": _rel(fa.double().norm(dim=1), torch.tensor(ref["audio_embedding_l2"], dtype=torch.float64)),
        "video_l2": _rel(fv.double().norm(dim=1), torch.tensor(ref["video_embedding_l2"], dtype=torch.float64)),
    }
    print("forward check max relative errors:", errs)
    assert max(errs.values()) < 1e-4, errs
    # the matched forward (concatenation head) agrees with the split pairwise head
    assert _rel(matched.double(), torch.diagonal(phi).double()) < 1e-4


def test_small_configs_keep_the_block_types() -> None:
    full = SyncClassifier()
    for cfg in (small_config(), tiny_config()):
        m = SyncClassifier(cfg)
        leaf = lambda k: ".".join(p for p in k.split(".") if not p.isdigit())  # noqa: E731
        assert {leaf(k) for k in m.state_dict()} <= {leaf(k) for k in full.state_dict()}
        # audio blocks have no residual branch; video blocks have res_conv where shapes change
        assert not any("down" in k or "res" in k for k in m.audio_encoder.state_dict())
        assert "conv3x.0.res_conv.weight" in m.video_encoder.state_dict()
        assert "conv2x.0.res_conv.weight" not in m.video_encoder.state_dict()


def test_config_is_read_back_from_full_size_weights() -> None:
    with torch.device("meta"):
        m = SyncClassifier()
    states = {mod: getattr(m, mod).state_dict() for mod in MODULES}
    assert config_from_state(states) == SyncConfig()
    small = SyncClassifier(small_config())
    states = {mod: getattr(small, mod).state_dict() for mod in MODULES}
    got = config_from_state(states, base=small_config())
    assert got == small_config()


# ------------------------------------------------------------------ item 2

def _mel_video(cfg: SyncConfig, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(n, 1, 128, 204, generator=g),
            torch.randn(n, 3, 12, cfg.frame_size, cfg.frame_size, generator=g))


@pytest.mark.parametrize("safetensors", [False, True])
def test_released_folder_loads_and_scores_the_same(tmp_path, safetensors) -> None:
    if safetensors:
        pytest.importorskip("safetensors")
    torch.manual_seed(3)
    m = SyncClassifier(small_config()).eval()
    root = tmp_path / "checkpoint-40000" / "modules"
    save_released(root, m, safetensors=safetensors)
    ext = "safetensors" if safetensors else "bin"
    for mod in MODULES:
        assert (root / mod / "config.json").is_file()
        assert (root / mod / f"diffusion_pytorch_model.{ext}").is_file()
    mel, vid = _mel_video(m.config)
    with torch.inference_mode():
        want = m(mel, vid)
    for p in (root, root.parent):       # the modules/ folder or the checkpoint folder above it
        got = load_sync_classifier(p)
        with torch.inference_mode():
            assert torch.allclose(got(mel, vid), want, atol=1e-6)


def test_released_folder_without_our_config_infers_the_architecture(tmp_path) -> None:
    """A folder as the ASVA code writes it: plain configs, plain torch.save state dicts."""
    torch.manual_seed(4)
    m = SyncClassifier(small_config()).eval()
    configs = {"audio_encoder": {"_class_name": "AudioConv2DNet", "pretrained": False},
               "video_encoder": {"_class_name": "VideoR2Plus1DNet", "pretrained": False},
               "head": {"_class_name": "FCHead", "dim": 64, "out_dim": 1, "dropout": 0.0}}
    for mod in MODULES:
        d = tmp_path / mod
        d.mkdir()
        (d / "config.json").write_text(json.dumps(configs[mod]))
        torch.save(getattr(m, mod).state_dict(), d / "diffusion_pytorch_model.bin")
    got = load_sync_classifier(tmp_path)
    assert got.config.audio_widths == (8, 16, 32, 32) and got.config.video_blocks == (1, 1, 1, 1)
    for k, v in m.state_dict().items():
        assert torch.equal(got.state_dict()[k], v), k


def test_released_folder_with_a_wrong_key_names_the_option(tmp_path) -> None:
    m = SyncClassifier(tiny_config())
    save_released(tmp_path, m)
    f = tmp_path / "video_encoder" / "diffusion_pytorch_model.bin"
    sd = torch.load(f)
    sd["conv2x.0.spt_conv1.weight_renamed"] = sd.pop("conv2x.0.spt_conv1.weight")
    torch.save(sd, f)
    with pytest.raises(ValueError) as e:
        load_sync_classifier(tmp_path)
    msg = str(e.value)
    assert "--sync-checkpoint" in msg and "conv2x.0.spt_conv1.weight" in msg
    assert "missing" in msg and "unexpected" in msg


def test_released_folder_missing_a_module_is_a_clear_error(tmp_path) -> None:
    save_released(tmp_path, SyncClassifier(tiny_config()))
    import shutil
    shutil.rmtree(tmp_path / "head")
    with pytest.raises((FileNotFoundError, ValueError), match="--sync-checkpoint"):
        load_sync_classifier(tmp_path)


def _avid_file(path: Path, model: SyncClassifier, extra: dict | None = None) -> Path:
    state = {f"module.video_model.{k}": v for k, v in model.video_encoder.state_dict().items()}
    state.update({f"module.audio_model.{k}": v for k, v in model.audio_encoder.state_dict().items()})
    state.update(extra or {})
    torch.save({"model": state, "epoch": 3}, path)
    return path


def test_avid_cma_init_loads_both_encoders_head_fresh(tmp_path) -> None:
    torch.manual_seed(5)
    src = SyncClassifier(small_config())
    # other AVID-CMA entries (projection heads) are not ours and are ignored, as released
    f = _avid_file(tmp_path / "AVID-CMA.pth.tar", src, {"module.video_proj.weight": torch.zeros(2)})
    got = load_init(f, small_config())
    for mod in ("audio_encoder", "video_encoder"):
        for k, v in getattr(src, mod).state_dict().items():
            assert torch.equal(getattr(got, mod).state_dict()[k], v), k
    assert not torch.equal(got.head.fc[0].weight, src.head.fc[0].weight)


def test_avid_cma_key_set_maps_onto_the_full_model() -> None:
    """The AVID-CMA keys are module.{video,audio}_model.<released encoder key>."""
    ref = _ref("asva_sync_state_dict.json")
    from sync_classifier.model import avid_state
    fake = {"model": {**{f"module.video_model.{k}": 0 for k in ref["video_encoder"]},
                      **{f"module.audio_model.{k}": 0 for k in ref["audio_encoder"]}}}
    st = avid_state(fake, "x")
    with torch.device("meta"):
        m = SyncClassifier()
    assert set(st["video_encoder"]) == set(m.video_encoder.state_dict())
    assert set(st["audio_encoder"]) == set(m.audio_encoder.state_dict())


def test_avid_cma_shape_mismatch_names_the_option(tmp_path) -> None:
    f = _avid_file(tmp_path / "avid.pth.tar", SyncClassifier(tiny_config()))
    with pytest.raises(ValueError) as e:
        load_init(f, small_config())
    assert "--init" in str(e.value) and "shape" in str(e.value)


def test_unknown_init_file_is_rejected(tmp_path) -> None:
    f = tmp_path / "x.pt"
    torch.save({"weights": 1}, f)
    with pytest.raises(ValueError, match="--init"):
        load_init(f)


def test_own_checkpoint_is_strict(tmp_path) -> None:
    m = SyncClassifier(tiny_config())
    p = save_checkpoint(tmp_path / "c.pt", m)
    assert isinstance(load_sync_classifier(p), SyncClassifier)
    st = torch.load(p, weights_only=True)
    st["model"].pop("head.fc.0.bias")
    torch.save(st, p)
    with pytest.raises(ValueError, match="--sync-checkpoint.*head.fc.0.bias"):
        load_sync_classifier(p)


def test_scorer_accepts_the_released_folder(tmp_path) -> None:
    from filters.sync import SyncScorer
    save_released(tmp_path / "modules", SyncClassifier(tiny_config()))
    s = SyncScorer.from_checkpoint(str(tmp_path / "modules"), device="cpu")
    assert s.model.config.video_widths == tiny_config().video_widths
