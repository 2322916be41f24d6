"""Our ImageBind against Meta's reference code (imagebind-unofficial, test-only dependency),
the checkpoint loader, the ImageBind filter math and the scorer."""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from filters import imagebind as ib
from filters import imagebind_scorer as ibs
from filters import registry
from filters.imagebind_model import (CHECKPOINT_ENV, ImageBind, ImageBindConfig,
                                     load_imagebind)
from filters.torch_compat import import_torchvision

torch.set_num_threads(1)

SOT, EOT = 49406, 49407


# ---------------------------------------------------------------- Meta's reference model


def _stub_module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


@pytest.fixture(scope="module")
def ref():
    """Meta's ``imagebind.models.imagebind_model`` without running ``imagebind/__init__.py``
    (it imports data.py, which needs pkg_resources, torchaudio...). iopath, needed only by
    Meta's tokenizer that we never call, is stubbed when missing; sys.modules is restored."""
    import_torchvision()  # timm imports torchvision
    spec = importlib.util.find_spec("imagebind")
    if spec is None or spec.origin is None:
        raise RuntimeError("imagebind-unofficial is not installed (test-only reference): "
                           "pip install --no-deps imagebind-unofficial")
    fake = {"imagebind": _stub_module("imagebind", __path__=[str(Path(spec.origin).parent)])}
    if importlib.util.find_spec("iopath") is None:
        fake["iopath"] = _stub_module("iopath", __path__=[])
        fake["iopath.common"] = _stub_module("iopath.common", __path__=[])
        fake["iopath.common.file_io"] = _stub_module("iopath.common.file_io", g_pathmgr=None)
    saved = {k: sys.modules.get(k) for k in fake}
    sys.modules.update(fake)
    try:
        return importlib.import_module("imagebind.models.imagebind_model")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        for k in [k for k in sys.modules if k.startswith("imagebind.")]:
            sys.modules.pop(k)


def _reference_kwargs(cfg: ImageBindConfig) -> dict:
    """Our config as the keyword arguments of Meta's ImageBindModel."""
    names = ["video_frames", "kernel_size", "audio_kernel_size", "audio_stride",
             "out_embed_dim", "audio_num_mel_bins", "audio_target_len",
             "depth_kernel_size", "thermal_kernel_size", "imu_kernel_size"]
    for m in ("vision", "text", "audio", "depth", "thermal", "imu"):
        names += [f"{m}_embed_dim", f"{m}_num_blocks", f"{m}_num_heads"]
    kw = {n: getattr(cfg, n) for n in names}
    # drop path as in imagebind_huge(): identity in eval, so outputs must still match
    kw.update(audio_drop_path=0.1, imu_drop_path=0.7)
    return kw


def _tokens(lengths: list[int], context: int = 77, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(len(lengths), context, dtype=torch.long)
    for i, n in enumerate(lengths):
        out[i, 0] = SOT
        out[i, 1:n + 1] = torch.randint(1, SOT, (n,), generator=g)
        out[i, n + 1] = EOT
    return out


def _inputs(cfg: ImageBindConfig) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    s = cfg.image_size
    return {
        "vision": torch.randn(3, 3, s, s, generator=g),
        "audio": torch.randn(3, 1, cfg.audio_num_mel_bins, cfg.audio_target_len, generator=g),
        "text": _tokens([3, 10, 75]),
        "depth": torch.randn(2, 1, s, s, generator=g),
        "thermal": torch.randn(2, 1, s, s, generator=g),
        "imu": torch.randn(2, cfg.imu_channels, cfg.imu_length, generator=g),
    }


@pytest.fixture(scope="module")
def tiny_pair(ref):
    cfg = ImageBindConfig.tiny()
    torch.manual_seed(0)
    reference = ref.ImageBindModel(**_reference_kwargs(cfg)).eval()
    ours = ImageBind(cfg)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours, cfg


def test_tiny_model_matches_reference_every_modality(tiny_pair):
    reference, ours, cfg = tiny_pair
    inputs = _inputs(cfg)
    with torch.no_grad():
        expected = reference(inputs)
        got = ours(inputs)
        normed = {m: ours.embed(m, x) for m, x in inputs.items()}
    for m in inputs:
        assert got[m].shape == expected[m].shape == (inputs[m].shape[0], cfg.out_embed_dim)
        assert (got[m] - expected[m]).abs().max().item() < 1e-4, m
        unit = torch.nn.functional.normalize(expected[m], dim=-1)
        assert (normed[m] - unit).abs().max().item() < 1e-4, m
        assert torch.allclose(normed[m].norm(dim=-1), torch.ones(len(unit)), atol=1e-5)
    # random weights give different embeddings for different inputs (no degenerate model)
    assert (normed["vision"][0] - normed["vision"][1]).abs().max() > 1e-3


def test_tiny_model_matches_reference_on_clips(tiny_pair):
    """[N, clips, ...] inputs are embedded per clip and averaged, as Meta's forward does."""
    reference, ours, cfg = tiny_pair
    g = torch.Generator().manual_seed(2)
    inputs = {"audio": torch.randn(2, 3, 1, 128, 204, generator=g),
              "vision": torch.randn(2, 2, 3, 224, 224, generator=g)}
    with torch.no_grad():
        expected = reference(inputs)
        got = ours(inputs)
        audio = ours.embed_audio(inputs["audio"])
        per_clip = ours.embed_audio(inputs["audio"].reshape(6, 1, 128, 204)).reshape(2, 3, -1)
    for m in inputs:
        assert (got[m] - expected[m]).abs().max().item() < 1e-4, m
    mean = torch.nn.functional.normalize(per_clip.mean(dim=1), dim=-1)
    assert (audio - mean).abs().max().item() < 1e-5


def test_text_pools_the_end_token(tiny_pair):
    """Causal attention + EOT pooling: tokens after the end token cannot change the output;
    a token before it does."""
    _, ours, _ = tiny_pair
    tok = _tokens([5]).repeat(2, 1)
    tok[1, 20:30] = 1234  # junk after EOT (position 6) in the second copy
    changed = tok.clone()
    changed[1, 3] = 999
    with torch.no_grad():
        a, b = ours.embed_text(tok)
        c = ours.embed_text(changed)[1]
    assert (a - b).abs().max().item() < 1e-6
    assert (b - c).abs().max().item() > 1e-4


def test_huge_state_dict_keys_and_shapes_equal_official(ref, monkeypatch):
    """Both ImageBind-huge models on the meta device (no memory): identical state-dict keys and
    shapes are what lets the unchanged official imagebind_huge.pth load strictly."""
    linspace = torch.linspace
    # Meta's transformer calls .item() on torch.linspace for drop-path rates, impossible on
    # the meta device: build that tensor on the CPU.
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    with torch.device("meta"):
        reference = ref.imagebind_huge(pretrained=False)
        ours = ImageBind()
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert sorted(mine) == sorted(theirs)
    assert mine == theirs
    assert mine["modality_preprocessors.vision.rgbt_stem.proj.1.weight"] == (1280, 3, 2, 14, 14)
    assert mine["modality_heads.text.proj.1.weight"] == (1024, 1024)
    n_params = sum(v.numel() for v in ours.parameters())
    assert 1.1e9 < n_params < 1.3e9
    # and a strict, assigning load of the reference's (meta) tensors goes through
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)


def test_huge_config_matches_reference_defaults(ref):
    """Our huge defaults are the numbers of Meta's imagebind_huge() call + constructor."""
    import inspect

    src = inspect.getsource(ref.imagebind_huge)
    cfg = ImageBindConfig()
    for name in ["vision_embed_dim", "vision_num_blocks", "vision_num_heads", "text_embed_dim",
                 "text_num_blocks", "text_num_heads", "out_embed_dim"]:
        assert f"{name}={getattr(cfg, name)}," in src, name
    defaults = {k: p.default for k, p in
                inspect.signature(ref.ImageBindModel.__init__).parameters.items()}
    for name in ["video_frames", "kernel_size", "audio_kernel_size", "audio_stride",
                 "audio_embed_dim", "audio_num_blocks", "audio_num_heads", "audio_num_mel_bins",
                 "audio_target_len", "depth_embed_dim", "depth_num_blocks", "depth_num_heads",
                 "thermal_embed_dim", "thermal_num_blocks", "thermal_num_heads", "imu_embed_dim",
                 "imu_num_blocks", "imu_num_heads"]:
        assert defaults[name] == getattr(cfg, name), name


# ---------------------------------------------------------------- loading


def test_missing_checkpoint_names_the_option(tmp_path, monkeypatch):
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="--imagebind-checkpoint") as e:
        load_imagebind(tmp_path / "nope.pth")
    assert CHECKPOINT_ENV in str(e.value) and "nope.pth" in str(e.value)
    assert "CC BY-NC" in str(e.value)
    with pytest.raises(FileNotFoundError, match=CHECKPOINT_ENV):
        load_imagebind(None)


def test_checkpoint_roundtrip_strict(tmp_path, monkeypatch):
    cfg = ImageBindConfig.tiny()
    torch.manual_seed(3)
    src = ImageBind(cfg)
    path = tmp_path / "tiny.pth"
    torch.save(src.state_dict(), path)
    monkeypatch.setenv(CHECKPOINT_ENV, str(path))
    loaded = load_imagebind(None, config=cfg)  # via the environment variable
    assert not any(t.is_meta for t in loaded.state_dict().values())
    x = _inputs(cfg)
    with torch.no_grad():
        for m in ("vision", "audio", "text"):
            assert torch.equal(src.embed(m, x[m]), loaded.embed(m, x[m])), m

    state = src.state_dict()
    del state["modality_trunks.audio.blocks.0.attn.bias_k"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="bias_k"):
        load_imagebind(tmp_path / "broken.pth", config=cfg)
    with pytest.raises(ValueError, match="size mismatch"):
        load_imagebind(path)  # tiny weights, huge config


# ---------------------------------------------------------------- the filter math


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_score_is_min_cosine_per_pair():
    img = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]])  # unnormalised on purpose
    aud = np.array([[1.0, 1.0, 0], [0, 1.0, 0], [0, 3.0, 4.0]])
    txt = np.array([1.0, 2.0, 2.0])
    ia, it = ib.score(img, aud, txt)
    # cos per frame: 1/sqrt(2), 1, 4/5 -> min 0.7071; text: 1/3, 2/3, 2/3 -> min 1/3
    assert ia == pytest.approx(1 / np.sqrt(2))
    assert it == pytest.approx(1 / 3)
    # pairs are per frame (row i with row i), not all against all
    ia2, _ = ib.score(img, aud[[1, 0, 2]], txt)
    assert ia2 == pytest.approx(0.0)


def test_score_rejects_bad_input():
    e = np.eye(3)
    with pytest.raises(ValueError, match="do not match"):
        ib.score(e, e[:2], e[0])
    with pytest.raises(ValueError, match="text embedding"):
        ib.score(e, e, np.ones(4))
    with pytest.raises(ValueError, match="zero norm"):
        ib.score(e, np.zeros((3, 3)), e[0])
    with pytest.raises(ValueError, match="non-finite"):
        ib.score(e, e, np.array([np.nan, 0, 1]))


def _keep(ia, it, thr=None) -> bool:
    """The selection's rule on a row of the two ImageBind columns."""
    row = {"imagebind_ia": ia, "imagebind_it": it}
    return registry.passes("imagebind", row, {"imagebind": thr or ib.FILTER.thresholds}) is True


def test_keep_threshold_edges():
    t = ib.FILTER.thresholds
    assert t == {"ia_min": 0.15, "it_min": 0.22}
    assert _keep(0.15, 0.22)
    assert not _keep(np.nextafter(0.15, 0), 0.5)
    assert not _keep(0.5, np.nextafter(0.22, 0))
    assert not _keep(None, 0.5) and not _keep(float("nan"), 0.5)
    assert not _keep(0.2, 0.3, {"ia_min": 0.25, "it_min": 0.0})


def test_score_then_keep_on_constructed_embeddings():
    """Embeddings built with known cosines around the thresholds."""
    def at_cos(c):  # unit vector with cos c to e0
        return np.array([c, np.sqrt(1 - c * c), 0.0])

    img = np.tile([1.0, 0, 0], (3, 1))
    aud = np.stack([at_cos(0.9), at_cos(0.16), at_cos(0.5)])
    txt = np.array([0.3, 0.0, np.sqrt(1 - 0.09)])
    ia, it = ib.score(img, aud, txt)
    assert ia == pytest.approx(0.16) and it == pytest.approx(0.3)
    assert _keep(ia, it)
    aud[1] = at_cos(0.14)
    assert not _keep(*ib.score(img, aud, txt))


# ---------------------------------------------------------------- the scorer


@pytest.fixture(scope="module")
def scorer():
    return ibs.ImageBindScorer.random(seed=0, batch_size=2)


def test_scorer_images_match_manual_preprocessing(scorer):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(5, 224, 224, 3), dtype=np.uint8)
    emb = scorer.embed_images(frames)
    assert scorer.is_random
    assert emb.shape == (5, scorer.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(ibs.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(ibs.CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        manual = scorer.model.embed_vision((x - mean) / std).numpy()
    np.testing.assert_allclose(emb, manual, atol=1e-5)  # batches of 2 == one batch of 5


def test_scorer_resizes_non_224_frames(scorer):
    frames = np.random.default_rng(1).integers(0, 256, size=(2, 240, 320, 3), dtype=np.uint8)
    x = ibs.preprocess_frames(frames)
    assert x.shape == (2, 3, 224, 224)
    assert scorer.embed_images(frames).shape == (2, scorer.dim)
    with pytest.raises(ValueError, match="uint8"):
        scorer.embed_images(frames.astype(np.float32))


def test_scorer_audio_uses_imagebind_mel(scorer):
    from decoding.mel import imagebind_mel

    t = np.arange(32000) / 16000
    waves = np.stack([0.5 * np.sin(2 * np.pi * f * t) for f in (220, 1000, 3000)]).astype(np.float32)
    emb = scorer.embed_audio(waves)
    assert emb.shape == (3, scorer.dim)
    mel = torch.stack([imagebind_mel(w) for w in waves])
    assert mel.shape == (3, 1, 128, 204)
    with torch.no_grad():
        manual = scorer.model.embed_audio(mel).numpy()
    np.testing.assert_allclose(emb, manual, atol=1e-5)
    assert np.abs(emb[0] - emb[2]).max() > 1e-3
    with pytest.raises(ValueError, match="non-finite"):
        scorer.embed_audio(np.full((1, 32000), np.nan, np.float32))


def test_scorer_text_tokenizes_with_clip_bpe(scorer):
    tok = scorer.tokenize(["dog barking", "playing violin fiddle"])
    assert tok.shape == (2, 77) and tok[0, 0] == SOT
    assert int(tok[0].argmax()) == 3 and tok[0, 3] == EOT  # sot, dog, barking, eot
    emb = scorer.embed_text(["dog barking", "playing violin fiddle", "dog barking"])
    assert emb.shape == (3, scorer.dim)
    np.testing.assert_array_equal(emb[0], emb[2])
    with torch.no_grad():
        manual = scorer.model.embed_text(tok).numpy()
    np.testing.assert_allclose(emb[:2], manual, atol=1e-5)
    with pytest.raises(ValueError, match="list"):
        scorer.embed_text("dog barking")


def test_scorer_end_to_end_window_scores(scorer):
    """Three frames, three 2-s audio clips, a class name -> (IA, IT) in [-1, 1] -> decision."""
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    waves = (0.1 * rng.standard_normal((3, 32000))).astype(np.float32)
    ia, it = ib.score(scorer.embed_images(frames), scorer.embed_audio(waves),
                      scorer.embed_text(["dog barking"])[0])
    assert -1.0 <= ia <= 1.0 and -1.0 <= it <= 1.0
    assert _keep(ia, it) == (ia >= 0.15 and it >= 0.22)


def test_unknown_precision_refused():
    with pytest.raises(ValueError, match="precision"):
        ibs.ImageBindScorer(ImageBind(ImageBindConfig.tiny()), device="cpu", precision="fp16")


def test_tiny_config_is_a_variant_of_the_huge_one():
    tiny, huge = ImageBindConfig.tiny(), ImageBindConfig()
    diff = {f.name for f in dataclasses.fields(huge) if getattr(tiny, f.name) != getattr(huge, f.name)}
    assert all(n.endswith(("_embed_dim", "_num_blocks", "_num_heads")) for n in diff)
    with pytest.raises(ValueError, match="divisible"):
        ImageBindConfig(vision_embed_dim=30, vision_num_heads=4)
