"""Sync classifier architecture (seed 003 Table 1, the released layout), checkpoints, clip preprocessing."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from decoding.media import Grid
from sync_classifier.data import (EVAL_OFFSETS, TRAIN_OFFSETS, VIDEO_MEAN, VIDEO_STD,
                                  find_sources, shifted_clips, span_needed, usable_sources,
                                  ShiftedClipDataset, collate_instances, video_tensor)
from sync_classifier.model import (SyncClassifier, SyncConfig, load_sync_classifier,
                                   save_checkpoint, tiny_config)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def full_meta() -> SyncClassifier:
    # meta tensors: full-size shape inference without allocating or computing anything
    with torch.device("meta"):
        return SyncClassifier(SyncConfig())


def test_audio_encoder_stages_full_size(full_meta: SyncClassifier) -> None:
    with torch.device("meta"):
        outs = full_meta.audio_encoder.stages(torch.empty(1, 1, 128, 204))
        pooled = full_meta.encode_audio(torch.empty(1, 1, 128, 204))
    assert [tuple(o.shape[1:]) for o in outs] == [
        (64, 64, 102), (64, 32, 51), (128, 16, 26), (256, 8, 13), (512, 8, 13)]
    assert tuple(pooled.shape) == (1, 512)


def test_video_encoder_stages_full_size(full_meta: SyncClassifier) -> None:
    with torch.device("meta"):
        outs = full_meta.video_encoder.stages(torch.empty(1, 3, 12, 224, 224))
        pooled = full_meta.encode_video(torch.empty(1, 3, 12, 224, 224))
    # full 3-D stem (conv + max pool) -> 64x12x56x56, then conv2x..conv5x
    assert [tuple(o.shape[1:]) for o in outs] == [
        (64, 12, 56, 56), (64, 12, 56, 56), (128, 6, 28, 28),
        (256, 3, 14, 14), (512, 2, 7, 7)]
    assert tuple(pooled.shape) == (1, 512)


def test_head_full_size(full_meta: SyncClassifier) -> None:
    linears = [m for m in full_meta.head.fc if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 512), (512, 256), (256, 1)]
    with torch.device("meta"):
        phi = full_meta(torch.empty(2, 1, 128, 204), torch.empty(2, 3, 12, 224, 224))
        pw = full_meta.pairwise(torch.empty(3, 512), torch.empty(5, 512))
    assert tuple(phi.shape) == (2,) and tuple(pw.shape) == (3, 5)
    # the released video encoder: no mid-plane widening, 15.4M parameters
    assert sum(p.numel() for p in full_meta.video_encoder.parameters()) == 15_379_136


def test_pairwise_equals_matched_head() -> None:
    torch.manual_seed(0)
    m = SyncClassifier(tiny_config()).eval()
    a, v = torch.randn(3, 16), torch.randn(4, 16)
    pw = m.pairwise(a, v)
    for i in range(3):
        for j in range(4):
            assert torch.allclose(pw[i, j], m.head(a[i:i + 1], v[j:j + 1])[0], atol=1e-6)
    # the head really is a function of concat(a, v): an explicit concat MLP gives the same
    ref = m.head.fc(torch.cat([a[1], v[2]]))
    assert torch.allclose(ref[0], pw[1, 2], atol=1e-6)


def test_small_forward_and_checkpoint_roundtrip(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = tiny_config()
    m = SyncClassifier(cfg).eval()
    mel, vid = torch.randn(2, 1, 128, 204), torch.randn(2, 3, 12, 32, 32)
    with torch.no_grad():
        phi = m(mel, vid)
    assert phi.shape == (2,) and torch.isfinite(phi).all()
    path = save_checkpoint(tmp_path / "c" / "s.pt", m, step=7)
    assert not list((tmp_path / "c").glob("*.tmp"))
    m2 = load_sync_classifier(path)
    assert m2.config == cfg and not m2.training
    with torch.no_grad():
        assert torch.allclose(m2(mel, vid), phi)


def test_missing_or_bad_checkpoint_names_option(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="--sync-checkpoint"):
        load_sync_classifier(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="--sync-checkpoint"):
        load_sync_classifier(bad)


def test_video_tensor_normalisation_and_flip() -> None:
    f = np.zeros((12, 4, 6, 3), np.uint8)
    f[..., 2, 0] = 255          # a red column at x = 2
    x = video_tensor(f, size=4)  # already 4 high: the 6 wide is centre-cropped to columns 1..4
    assert x.shape == (3, 12, 4, 4)
    assert x[0, 0, 0, 1].item() == pytest.approx((1 - VIDEO_MEAN[0]) / VIDEO_STD[0], rel=1e-5)
    assert x[2, 0, 0, 0].item() == pytest.approx(-VIDEO_MEAN[2] / VIDEO_STD[2], rel=1e-5)
    flipped = video_tensor(f, size=4, flip=True)
    assert torch.equal(flipped[..., 2], x[..., 1])
    assert video_tensor(np.zeros((12, 224, 224, 3), np.uint8), size=32).shape == (3, 12, 32, 32)
    with pytest.raises(ValueError):
        video_tensor(np.zeros((12, 4, 4), np.uint8))


def test_video_tensor_is_the_released_preprocessing() -> None:
    """Short side to the size (bicubic, antialiased), centre crop, CLIP mean/std: the same
    numbers as torchvision's Resize(size, BICUBIC, antialias=True) + CenterCrop + Normalize."""
    from sync_classifier.data import resize_frames
    assert VIDEO_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert VIDEO_STD == (0.26862954, 0.26130258, 0.27577711)
    rng = np.random.default_rng(0)
    f = rng.integers(0, 256, size=(2, 240, 320, 3), dtype=np.uint8)
    x = video_tensor(f, size=224)
    assert x.shape == (3, 2, 224, 224)
    t = torch.from_numpy(f).permute(0, 3, 1, 2).float() / 255     # [T, 3, 240, 320]
    r = torch.nn.functional.interpolate(t, size=(224, 298), mode="bicubic",
                                        align_corners=False, antialias=True)
    top, left = 0, int(round((298 - 224) / 2))
    r = r.clamp(0, 1)     # as torchvision's uint8 / PIL resize: bicubic overshoot is clipped
    want = (r[:, :, top:top + 224, left:left + 224] - torch.tensor(VIDEO_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(VIDEO_STD).view(1, 3, 1, 1)
    assert torch.allclose(x.permute(1, 0, 2, 3), want, atol=1e-5)
    try:
        from torchvision.transforms import v2 as T
    except Exception:   # not installed, or built for another torch
        T = None
    if T is not None:   # torchvision's own transform, when installed, gives the same
        tv = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                        T.CenterCrop(224)])
        ref = (tv(t).clamp(0, 1) - torch.tensor(VIDEO_MEAN).view(1, 3, 1, 1)) \
            / torch.tensor(VIDEO_STD).view(1, 3, 1, 1)
        assert torch.allclose(x.permute(1, 0, 2, 3), ref, atol=1e-4)
    # the cached uint8 frames of training use the same resize and crop
    small = resize_frames(f, 32)
    assert small.shape == (2, 32, 32, 3)
    direct = video_tensor(f, size=32)
    cached = video_tensor(small, size=32)
    assert (direct - cached).abs().max().item() < 1.0 / 255 / min(VIDEO_STD) + 1e-6


def _clock_grid(seconds: float = 7.0, fps: int = 25) -> Grid:
    """Frame i has value i (mod 256) in its red channel; audio is a ramp of the time."""
    n = int(seconds * fps)
    frames = np.zeros((n, 8, 8, 3), np.uint8)
    frames[..., 0] = (np.arange(n) % 256)[:, None, None]
    audio = (np.arange(int(seconds * 16000)) / 16000 / seconds).astype(np.float32)
    return Grid(frames=frames, audio_channels=audio[None], start=0.0, fps=fps)


def test_shifted_clips_timing() -> None:
    g = _clock_grid()
    assert span_needed(TRAIN_OFFSETS) == pytest.approx(6.0)
    assert span_needed(EVAL_OFFSETS) == pytest.approx(3.2)
    assert len(TRAIN_OFFSETS) == 21 and len(EVAL_OFFSETS) == 31
    centre = 3.0
    mel, vid = shifted_clips(g, centre, TRAIN_OFFSETS)
    assert mel.shape == (21, 1, 128, 204) and vid.shape == (21, 3, 12, 8, 8)
    red = vid[:, 0, :, 0, 0] * VIDEO_STD[0] + VIDEO_MEAN[0]
    frame_idx = torch.round(red * 255)
    for k, off in enumerate(TRAIN_OFFSETS):
        t0 = centre + off - 1.0
        want = [round((t0 + j / 6) * 25) for j in range(12)]
        assert frame_idx[k].tolist() == want
    # 0.04-s eval shifts move the 6-fps frames by exactly one 25-fps frame
    _, vid_e = shifted_clips(g, centre, EVAL_OFFSETS)
    first = torch.round((vid_e[:, 0, 0, 0, 0] * VIDEO_STD[0] + VIDEO_MEAN[0]) * 255)
    assert torch.equal(torch.diff(first), torch.ones(30))
    # clips reaching outside the grid are refused, not padded
    with pytest.raises(ValueError, match="needs 6.00s"):
        shifted_clips(g, 2.0, TRAIN_OFFSETS)


def test_shifted_clips_audio_follows_offset() -> None:
    # a click at 3.0 s appears in the mel of clip k at (3.0 - (centre + off_k - 1)) s
    g = _clock_grid()
    audio = np.zeros(7 * 16000, np.float32)
    audio[48000:48000 + 160] = 0.9
    g = Grid(frames=g.frames, audio_channels=audio[None], start=0.0, fps=25)
    mel, _ = shifted_clips(g, 3.0, (-0.4, 0.0, 0.4))
    peaks = mel[:, 0, :, :198].mean(1).argmax(1)  # loudest 10-ms frame (198 real, 6 padding)
    assert [abs(int(p) - e) <= 3 for p, e in zip(peaks, (140, 100, 60))] == [True] * 3


def test_mp4_sources_and_dataset(tmp_path) -> None:
    from sync_classifier.synthetic import write_event_mp4

    write_event_mp4(tmp_path / "long.mp4", seed=1, duration=6.4, size=32)
    write_event_mp4(tmp_path / "short.mp4", seed=2, duration=3.0, size=32)
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    srcs = find_sources(tmp_path)
    assert sorted(s.path.name for s in srcs) == ["broken.mp4", "long.mp4", "short.mp4"]
    ok, skipped = usable_sources(srcs, TRAIN_OFFSETS)
    assert [s.path.name for s in ok] == ["long.mp4"]
    reasons = {s.source.split("/")[-1]: s.reason for s in skipped}
    assert reasons["short.mp4"].startswith("too short") and "probe failed" in reasons["broken.mp4"]
    ok_eval, _ = usable_sources(srcs, EVAL_OFFSETS)
    assert [s.path.name for s in ok_eval] == ["long.mp4"]  # 3.0 s < 3.2 s needed
    ds = ShiftedClipDataset(ok, TRAIN_OFFSETS, frame_size=32, train=True)
    item = ds[0]
    assert item["mel"].shape == (21, 1, 128, 204) and item["video"].shape == (21, 3, 12, 32, 32)
    bad = ShiftedClipDataset([srcs[0]], TRAIN_OFFSETS, 32, train=False)  # broken.mp4
    batch = collate_instances([bad[0], item])
    assert batch["mel"].shape[0] == 1 and len(batch["failed"]) == 1


def test_sources_from_selected_manifest(tmp_path) -> None:
    from manifests.schemas import write_manifest
    from sync_classifier.synthetic import write_event_mp4

    out = tmp_path / "out"
    (out / "media" / "raw").mkdir(parents=True)
    sid = "abc-_1_000010_000020"
    write_event_mp4(out / "media" / "raw" / f"{sid}.mp4", seed=3, duration=6.4, size=32)
    write_manifest(out, "downloads", [
        {"source_id": sid, "path": "ignored/elsewhere.mp4", "status": "ok"},
        {"source_id": "gone_000000_000010", "path": None, "status": "failed", "error": "404"},
        {"source_id": "../evil", "path": "/etc/passwd", "status": "ok"}])
    write_manifest(out, "selected", [
        {"key": "k1", "source_id": sid, "start": 0.2, "end": 6.4, "status": "ok"},
        {"key": "k2", "source_id": sid, "start": 1.0, "end": 3.0, "status": "ok"},
        {"key": "k3", "source_id": "gone_000000_000010", "start": 0.0, "end": 8.0, "status": "ok"},
        {"key": "k4", "source_id": "../evil", "start": 0.0, "end": 8.0, "status": "ok"},
        {"key": "k5", "source_id": sid, "start": 0.0, "end": 6.4, "status": "rejected"}])
    srcs = find_sources(out)
    assert [(s.path, s.start, s.end) for s in srcs] == [
        (out / "media" / "raw" / f"{sid}.mp4", 0.2, 6.4), (out / "media" / "raw" / f"{sid}.mp4", 1.0, 3.0)]
    assert find_sources(out / "manifests" / "selected.parquet") == srcs
    ok, skipped = usable_sources(srcs, TRAIN_OFFSETS)
    assert [(s.start, s.end) for s in ok] == [(0.2, 6.4)] and "too short" in skipped[0].reason
    item = ShiftedClipDataset(ok, TRAIN_OFFSETS, 32, train=False)[0]
    assert item["video"].shape == (21, 3, 12, 32, 32)


def test_hop_mels_equal_exact_mels_on_the_hop() -> None:
    """Training's sliced whole-audio fbank equals the per-clip ImageBind mel on the 10-ms hop,
    and stays close (<= 5 ms rounding) off it."""
    from decoding.mel import imagebind_mel
    from sync_classifier.data import HopMels
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 6) + 0.05).astype(np.float32)   # DC on purpose
    hm = HopMels(audio)
    for i0 in (0, 160 * 7, 160 * 250):
        want = imagebind_mel(audio[i0:i0 + 32000])
        got = hm.clip(i0, 32000)
        assert got.shape == want.shape == (1, 128, 204)
        assert torch.allclose(got, want, atol=2e-4), (i0, (got - want).abs().max())
    # a start between hops takes the nearest hop
    assert torch.equal(hm.clip(160 * 7 + 70, 32000), hm.clip(160 * 7, 32000))
