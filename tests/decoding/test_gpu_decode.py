"""The NVDEC path's CPU side (``decoding.gpu``): frames picked by display index from the
packets' pts are the frames the CPU grid shows; where it cannot run it says why."""
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation
import pytest
import torch

from decoding import gpu
from decoding.media import GRID_FPS, GRID_SIZE, decode_grid, scaled_size

SEGMENT_COPY = Path(__file__).parent / "data" / "segment_copy.mp4"


@pytest.mark.parametrize("offset", [1.0, 1.2, 2.5])
def test_display_indices_pick_the_cpu_grids_frames(offset):
    """Index i of the sorted packet pts is the i-th decoded frame (display order): the frames
    at the picked indices, converted as the CPU path does, are the CPU grid."""
    with av.open(str(SEGMENT_COPY)) as c:
        pts = gpu.frame_pts(c, c.streams.video[0])
    with av.open(str(SEGMENT_COPY)) as c:
        tb = c.streams.video[0].time_base
        decoded = list(c.decode(c.streams.video[0]))
    assert [float(f.pts * tb) for f in decoded] == pts
    picks = gpu.slot_indices(pts, offset, 12, GRID_FPS)
    want = decode_grid(SEGMENT_COPY, 0.0, 1.0, offset=offset).frames
    for k, i in enumerate(picks):
        f = decoded[i]
        nw, nh = scaled_size(f.width, f.height, 1.0, GRID_SIZE)
        # grid-4's conversion: bilinear into 4:2:2 YUV, then RGB unscaled, rounding accurately
        img = f.reformat(width=nw, height=nh, format="yuv422p").reformat(
            format="rgb24", interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND).to_ndarray()
        top, left = (nh - GRID_SIZE) // 2, (nw - GRID_SIZE) // 2
        assert np.array_equal(img[top:top + GRID_SIZE, left:left + GRID_SIZE], want[k]), k


def test_without_cuda_the_gpu_decode_says_why():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: the device check measures this path")
    assert gpu.unavailable() == "no CUDA device (torch.cuda.is_available() is False)"
    with pytest.raises(RuntimeError, match="GPU decode unavailable: no CUDA device"):
        gpu.decode_grid_gpu(SEGMENT_COPY)
