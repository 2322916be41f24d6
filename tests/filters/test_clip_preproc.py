"""clip_diff's CLIP preprocessing checked against open_clip's own transform (issue 9, item 8).

``open_clip.create_model_and_transforms(...)`` returns the model and its eval ``preprocess``
(Resize(224, bicubic, antialias) on the short side, CenterCrop(224), ToTensor, Normalize with
the model's mean/std). ``ClipScorer`` must give the same tensor for the same frame. Random
weights (``pretrained=None``): no hub.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from filters.clip_model import ClipScorer, resize_crop_like_open_clip
from filters.torch_compat import import_open_clip

torch.set_num_threads(1)

SIZES = [(224, 224), (240, 320), (360, 640), (320, 240), (64, 96), (225, 400)]


@pytest.fixture(scope="module")
def vit_b32():
    open_clip = import_open_clip()
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    return model.eval(), preprocess


def _frame(h: int, w: int, seed: int) -> np.ndarray:
    """Blocky colour texture with noise: edges and fine detail, where resamplers differ."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
    f = np.asarray(Image.fromarray(base).resize((w, h), Image.BILINEAR)).astype(int)
    return np.clip(f + rng.integers(-20, 21, f.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("h,w", SIZES)
def test_prep_equals_open_clip_preprocess_on_the_same_frames(vit_b32, h, w):
    model, preprocess = vit_b32
    frames = np.stack([_frame(h, w, s) for s in range(3)])
    ref = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
    ours = ClipScorer(model)._prep(frames)
    assert ours.shape == ref.shape == (3, 3, 224, 224)
    # the same operations on the same uint8 pixels (PIL bicubic resize where the frame is not
    # 224 square, /255, (x - mean) / std): equal up to float32 rounding
    assert torch.allclose(ours, ref, rtol=0, atol=1e-6), (ours - ref).abs().max()
    # the tiny demo model uses the same (OpenAI) mean/std
    assert torch.allclose(ClipScorer.random()._prep(frames), ref, rtol=0, atol=1e-6)


def test_the_old_square_interpolation_would_fail_this_check(vit_b32):
    """Teeth: resizing straight to 224x224 (aspect squashed, bicubic without antialias), as
    ``_prep`` did, is far from open_clip's transform on a 4:3 frame."""
    _, preprocess = vit_b32
    f = _frame(240, 320, 0)
    ref = preprocess(Image.fromarray(f))[None]
    x = torch.from_numpy(f[None]).permute(0, 3, 1, 2).float() / 255
    old = torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False)
    sc = ClipScorer.random()
    assert ((old - sc.mean) / sc.std - ref).abs().mean() > 0.3
    assert resize_crop_like_open_clip(f, 224).shape == (224, 224, 3)


def test_embeddings_equal_open_clip_pipeline(vit_b32):
    model, preprocess = vit_b32
    frames = np.stack([_frame(240, 320, s) for s in range(5)])
    with torch.inference_mode():
        ref = model.encode_image(torch.stack([preprocess(Image.fromarray(f)) for f in frames]))
    ours = ClipScorer(model, batch_size=2).embed(frames)       # other batching, same maths
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-4, atol=1e-4)


def test_grid_frames_are_close_to_open_clip_on_the_source_frames(tmp_path, vit_b32):
    """What clip_diff sees in a build: the 224 analysis grid (decoding.media: swscale resize
    from YUV, bilinear) then ``_prep``; open_clip would resize the full RGB frame with PIL
    bicubic. Not the same resampler, so not equal: measured on testsrc2 at 640x360 the
    normalised tensors differ by 0.039 on average (about 2.7 of 255 levels, largest at sharp
    coloured edges) and random-weight ViT-B-32 embeddings keep a cosine of 0.998. The bounds
    below leave a 2x margin over those figures."""
    from decoding.media import decode_clip, decode_grid
    model, preprocess = vit_b32
    path = tmp_path / "src.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc2=size=640x360:rate=30:duration=1", "-c:v", "libx264",
                    "-crf", "12", "-pix_fmt", "yuv420p", str(path)], check=True)
    grid = decode_grid(path)
    full = decode_clip(path, 0.0, grid.duration, short_side=360, crop=None)
    assert grid.frames.shape[1:] == (224, 224, 3) and full.frames.shape[1:] == (360, 640, 3)
    ref = torch.stack([preprocess(Image.fromarray(f)) for f in full.frames])
    ours = ClipScorer(model)._prep(grid.frames)
    assert (ours - ref).abs().mean() < 0.08
    with torch.inference_mode():
        a = torch.nn.functional.normalize(model.encode_image(ours), dim=-1)
        b = torch.nn.functional.normalize(model.encode_image(ref), dim=-1)
    assert (a * b).sum(-1).min() > 0.99
