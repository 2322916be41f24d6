"""Synchformer: layout, forward and preprocessing parity with the authors' code (fixtures
their code made: tests/fixtures/synchformer/README.md), strict loading of both public
checkpoint forms, and frame / sample picks against ffmpeg."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from decoding.media import decode_clip, ffmpeg_fps_lead
from decoding.native import sinc_resample
from filters import synchformer as sf
from filters.synchformer_model import Synchformer, SynchformerConfig, load_synchformer
from tests.avmedia import index_of, make_clip

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "synchformer"


@pytest.fixture(scope="module")
def small():
    return torch.load(FIX / "small.pt", weights_only=True)


def _small_cfg(sizes: dict) -> SynchformerConfig:
    return SynchformerConfig(video_dim=sizes["d"], video_depth=sizes["depth"],
                             video_heads=sizes["heads"], audio_dim=sizes["d"],
                             audio_depth=sizes["depth"], audio_heads=sizes["heads"],
                             dim=sizes["t_embd"], layers=sizes["t_layers"],
                             heads=sizes["t_heads"], n_segments=sizes["segments"])


def _small_inputs(small) -> tuple[torch.Tensor, torch.Tensor]:
    frames = np.frombuffer(zlib.decompress(small["frames_zlib"].numpy().tobytes()), np.uint8)
    frames = frames.reshape(small["frames_shape"])                     # (S, 16, 224, 224, 3)
    return sf.normalise_frames(frames).unsqueeze(0), small["audio"]


def test_full_size_keys_and_shapes_match_authors():
    with torch.device("meta"):
        ours = Synchformer()
    theirs = json.loads((FIX / "full_keys.json").read_text())
    assert {k: list(v.shape) for k, v in ours.state_dict().items()} == theirs
    assert len(theirs) == 513


def test_reduced_model_logits_match_authors(small):
    model = Synchformer(_small_cfg(small["sizes"])).eval()
    model.load_state_dict(small["state_dict"], strict=True)
    with torch.no_grad():
        logits = model(*_small_inputs(small))
    assert logits.shape == (1, 21)
    assert torch.allclose(logits, small["logits"], atol=1e-5, rtol=0)


def test_both_checkpoint_forms_load_strictly(small, tmp_path):
    cfg = _small_cfg(small["sizes"])
    sd = small["state_dict"]
    torch.save(sd, tmp_path / "synchformer_state_dict.pth")               # MMAudio's form
    torch.save({"model": sd, "epoch": 3, "loss": 0.5, "metrics": {"accuracy_1": 0.4}},
               tmp_path / "24-01-04T16-39-21.pt")                           # the authors' form
    vid, aud = _small_inputs(small)
    for name in ("synchformer_state_dict.pth", "24-01-04T16-39-21.pt"):
        model = load_synchformer(tmp_path / name, cfg=cfg)
        with torch.no_grad():
            assert torch.allclose(model(vid, aud), small["logits"], atol=1e-5, rtol=0)


def test_the_authors_training_checkpoint_loads_without_trust_or_their_libraries(small, monkeypatch):
    """authors_ckpt.pt is what their training script writes (make_authors_checkpoint.py): the
    weights beside an OmegaConf config, Adam's state with OmegaConf betas, numpy metrics.
    torch's weights-only reader refuses it; omegaconf is not installed here."""
    monkeypatch.delenv("CURATE_TRUST_CHECKPOINT", raising=False)
    path = FIX / "authors_ckpt.pt"
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    assert "omegaconf.dictconfig.DictConfig" in unsafe and "numpy.dtype" in unsafe
    with pytest.raises(Exception, match="(?i)weights only"):
        torch.load(path, weights_only=True)
    model = load_synchformer(path, cfg=_small_cfg(small["sizes"]))
    with torch.no_grad():
        assert torch.allclose(model(*_small_inputs(small)), small["logits"], atol=1e-5, rtol=0)
    assert "omegaconf" not in sys.modules


MARK: list[str] = []


def _planted(note: str) -> str:
    """What a hostile checkpoint would call while being read."""
    MARK.append(note)
    return note


class _Hostile:
    def __reduce__(self):
        return (_planted, ("ran",))


def test_objects_beside_the_weights_never_run(small, tmp_path, monkeypatch):
    monkeypatch.delenv("CURATE_TRUST_CHECKPOINT", raising=False)
    torch.save({"model": small["state_dict"], "args": _Hostile(), "epoch": 3}, tmp_path / "h.pt")
    MARK.clear()
    model = load_synchformer(tmp_path / "h.pt", cfg=_small_cfg(small["sizes"]))
    assert MARK == []
    with torch.no_grad():
        assert torch.allclose(model(*_small_inputs(small)), small["logits"], atol=1e-5, rtol=0)
    # the weights themselves are still read strictly: a hostile object in place of a tensor
    sd = dict(small["state_dict"])
    sd["transformer.off_head.bias"] = _Hostile()
    torch.save({"model": sd}, tmp_path / "h2.pt")
    with pytest.raises(ValueError, match="--synchformer-checkpoint"):
        load_synchformer(tmp_path / "h2.pt", cfg=_small_cfg(small["sizes"]))
    assert MARK == []


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_key_mismatch_is_an_error_naming_the_option(small, tmp_path, change):
    sd = dict(small["state_dict"])
    if change == "missing":
        sd.pop("transformer.off_head.bias")
    elif change == "extra":
        sd["transformer.sync_head.weight"] = torch.zeros(2, 32)
    else:
        sd["transformer.off_head.weight"] = torch.zeros(7, 32)
    torch.save({"model": sd}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="--synchformer-checkpoint"):
        load_synchformer(tmp_path / "bad.pt", cfg=_small_cfg(small["sizes"]))


def test_missing_checkpoint_names_the_option(tmp_path, monkeypatch):
    monkeypatch.delenv("CURATE_SYNCHFORMER_CKPT", raising=False)
    for path in (None, tmp_path / "nope.pth"):
        with pytest.raises(FileNotFoundError, match="--synchformer-checkpoint"):
            load_synchformer(path)


# ------------------------------------------------------------------ preprocessing parity

def _media_frames(n: int, h: int, w: int) -> np.ndarray:
    """The fixture script's frames, channels last (same formula)."""
    k, c = np.arange(n).reshape(n, 1, 1, 1), np.arange(3).reshape(1, 1, 1, 3)
    y, x = np.arange(h).reshape(1, h, 1, 1), np.arange(w).reshape(1, 1, w, 1)
    return ((k * 7 + c * 50 + y + 2 * x) % 256).astype(np.uint8)


def _media_wave(sr: int, seconds: float) -> torch.Tensor:
    t = torch.arange(int(round(sr * seconds)), dtype=torch.float64) / sr
    x = 0.3 * torch.sin(2 * math.pi * 440 * t) + 0.2 * torch.sin(2 * math.pi * 1234.5 * t)
    return (x + 0.4 * ((t * 2.5) % 1 < 0.01).double()).float()


@pytest.fixture(scope="module")
def preproc():
    return torch.load(FIX / "preproc.pt", weights_only=True)


def test_preprocessing_matches_authors_transforms(preproc):
    # their transforms take the middle 4.8 s of a 5-s crop: the context starts at frame 2
    for case in preproc["cases"]:
        video = sf.video_segments(_media_frames(case["n_frames"], case["h"], case["w"]), 2)
        assert video.shape == (14, 16, 3, 224, 224)
        assert torch.equal(video.double().sum(dim=(2, 3, 4)), case["video_sums"])
        assert torch.equal(video[:, :, :, ::16, ::16], case["video_sub"].float())
        first = sf.first_sample_of(2)
        spec = sf.audio_segments(case["wave16k"].numpy(), first, dtype=torch.float64)
        assert spec.shape == (14, 1, 128, 66) and spec.dtype == torch.float64
        assert torch.allclose(spec[preproc["segments"]], case["spec64"], atol=1e-5, rtol=0)


def test_the_float32_spectrogram_is_within_float32_rounding_of_theirs(preproc):
    """What the pipeline runs (float32, as the authors do) against their float64 result: a
    float32 FFT's rounding depends on the CPU (their own float32 run differs by 1.1e-4
    between the two x86 machines it ran on, and lies 6.3e-5 to 7.4e-5 from their float64
    result), so a float32 reference is not compared at 1e-5."""
    for case in preproc["cases"]:
        spec = sf.audio_segments(case["wave16k"].numpy(), sf.first_sample_of(2))
        assert spec.shape == (14, 1, 128, 66) and spec.dtype == torch.float32
        err = (spec[preproc["segments"]].double() - case["spec64"]).abs()
        assert err.max() < 1.5e-4, (case["sr"], err.max())
        assert err.mean() < 1e-5, (case["sr"], err.mean())     # measured 1.9e-6 to 2.0e-6


def test_resampling_matches_torchaudio(preproc):
    for case in preproc["cases"]:
        wave = _media_wave(case["sr"], case["n_frames"] / 25)
        ours = sinc_resample(wave, case["sr"], 16000)
        assert ours.shape == case["wave16k"].shape
        assert torch.allclose(ours, case["wave16k"], atol=1e-5, rtol=0), case["sr"]


def _index(frame: np.ndarray) -> int:
    h = frame.shape[0]
    return index_of(np.median(frame[8:h // 2 - 8]), np.median(frame[h // 2 + 8:-8]))


@pytest.mark.parametrize("fps,sr,channels", [("24", 44100, 2), ("25", 16000, 1),
                                              ("30000/1001", 48000, 2), ("30", 48000, 1)])
def test_frame_and_sample_picks_match_ffmpeg(tmp_path, fps, sr, channels):
    """The authors re-encode with ffmpeg (``-vf fps=25 -ar 16000``): our 25-fps picks are the
    same source frames and our 16-kHz audio the same samples."""
    path = make_clip(tmp_path / "c.mp4", 6.0, fps, sr=sr, channels=channels)
    grid = decode_clip(path, 0.0, 5.6, fps=25, short_side=128, crop=None, sample_rate=16000,
                       pick_lead=ffmpeg_fps_lead(25))
    run = ["ffmpeg", "-v", "error", "-i", str(path)]
    raw = subprocess.run(run + ["-vf", "fps=25", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    ref = np.frombuffer(raw, np.uint8).reshape(-1, 128, 192, 3)
    ours = [_index(f) for f in grid.frames]
    assert ours == [_index(f) for f in ref[:len(ours)]]
    pcm = subprocess.run(run + ["-vn", "-ar", "16000", "-f", "f32le", "-"],
                         capture_output=True, check=True).stdout
    ref_a = np.frombuffer(pcm, np.float32).reshape(-1, channels).mean(1)
    ours_a = grid.audio_channels.mean(0)
    n = len(ours_a) - 100
    assert np.abs(ref_a[:n] - ours_a[:n]).max() < 1e-5


# ------------------------------------------------------------------ the clip certificate

def test_contexts_on_the_av_benchmark_grid():
    assert sf.context_starts(120) == [0]                 # exactly one 4.8-s context
    assert sf.context_starts(200) == [0, 80]             # 8 s: segments 0-13 and 10-23
    assert sf.context_starts(127) == [0]                 # a partial segment does not count
    assert sf.context_starts(136) == [0, 16]              # 16 segments: 0-13 and 2-15
    assert sf.context_starts(119) == []


def test_short_clip_takes_a_centred_context_inside_the_segment():
    assert sf.context_span(1.0, 7.0, 10.0) == (1.0, 7.0, None)
    a, b, note = sf.context_span(4.0, 6.0, 10.0)
    assert (a, b) == pytest.approx((2.6, 7.4)) and "centred" in note
    assert sf.context_span(0.0, 2.0, 10.0)[:2] == pytest.approx((0.0, 4.8))     # clamped left
    assert sf.context_span(9.0, 10.0, 10.0)[:2] == pytest.approx((5.2, 10.0))   # clamped right
    with pytest.raises(ValueError, match="shorter than"):
        sf.context_span(0.0, 2.0, 4.0)


def test_offset_desync_and_probabilities():
    grid = sf.offset_grid()
    assert grid[0] == -2.0 and grid[10] == 0.0 and grid[20] == 2.0 and len(grid) == 21
    logits = torch.full((21,), -10.0)
    logits[13], logits[10] = 5.0, 4.0                      # +0.6 s wins, 0 s second
    o = sf.offset_of(logits)
    p = torch.softmax(logits, -1)
    assert o.offset_s == pytest.approx(0.6) and o.prob == pytest.approx(float(p[13]))
    assert o.prob_zero == pytest.approx(float(p[10]))
    assert sf.desync([o, sf.Offset(-0.4, 0.9, 0.0)]) == pytest.approx(0.5)


class _FirstFrameModel(torch.nn.Module):
    """Logits peaked at the class named by the context's first frame value (k / 8 % 21)."""

    def forward(self, video, spec):
        k = ((video[:, 0, 0, 0, 0, 0] + 1) / 2 * 255).round().long()   # undo the normalisation
        return torch.nn.functional.one_hot((k // 8) % 21, 21).float() * 10


def test_certificate_reads_the_first_and_the_last_context():
    frames = np.repeat(np.arange(200, dtype=np.uint8)[:, None, None, None], 256, 1)
    frames = np.repeat(np.repeat(frames, 256, 2), 3, 3)         # frame k is grey level k
    cert = sf.certify_media(_FirstFrameModel(), frames, np.zeros(8 * 16000, np.float32))
    grid = sf.offset_grid()
    assert cert["sf_offset_first"] == pytest.approx(grid[0])    # context from frame 0
    assert cert["sf_offset_last"] == pytest.approx(grid[10])    # from frame 80: class 10
    assert cert["desync_s"] == pytest.approx((abs(grid[0]) + abs(grid[10])) / 2)


def test_certify_clip_end_to_end_with_a_small_model(tmp_path):
    path = make_clip(tmp_path / "c.mp4", 6.0, "30000/1001", sr=44100, channels=2)
    torch.manual_seed(0)
    model = Synchformer(SynchformerConfig(video_dim=32, video_depth=1, video_heads=2, audio_dim=32,
                                          audio_depth=1, audio_heads=2, dim=32, layers=1, heads=2)).eval()
    cert, note = sf.certify_clip(model, path, 0.5, 3.0, seg_end=6.0)
    assert "centred" in note and set(cert) == set(sf.CERT_COLUMNS)
    assert cert["sf_offset_first"] == cert["sf_offset_last"]    # one context
    assert 0 <= cert["sf_p0_first"] <= 1 and 0 < cert["sf_prob_first"] <= 1
    assert cert["desync_s"] == pytest.approx(abs(cert["sf_offset_first"]))


def test_our_checkpoint_carries_its_sizes(tmp_path):
    from filters.synchformer_model import save_synchformer
    cfg = SynchformerConfig(video_dim=16, video_depth=1, video_heads=2, audio_dim=16, audio_depth=1,
                            audio_heads=2, dim=16, layers=1, heads=2, image=32)
    save_synchformer(Synchformer(cfg), tmp_path / "small.pt")
    model = load_synchformer(tmp_path / "small.pt")
    assert model.cfg == cfg
    frames = np.zeros((120, 256, 300, 3), np.uint8)
    (o,) = sf.predict(model, frames, np.zeros(80000, np.float32), [0])   # 32-px frames inside
    assert o.offset_s in set(sf.offset_grid().tolist())
    assert sf.normalise_frames(frames[:2], 32).shape == (2, 3, 32, 32)
