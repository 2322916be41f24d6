"""The score grid with the video decoded on the GPU (NVDEC, through NVIDIA's PyNvVideoCodec).

Chosen over torchcodec because its wheel brings the only FFmpeg part it needs (libavformat
for demuxing; NVDEC decodes) and needs no torch of a given version: torchcodec's PyPI wheel
loads the system's FFmpeg libraries, which the bare lent machine lacks. Both install next to
torch 2.11-2.13 here (``pip download``); PyNvVideoCodec's wheel is cp312 only, so this path
is never taken on the CPU machines (python 3.11), where ``unavailable()`` says why.

What differs from ``decoding.media.decode_grid`` (the CPU path, unchanged): the frames a grid
slot takes are the same source frames (picked from the packets' pts by the same rule, decoded
by index), but NVDEC converts to RGB and torch resizes (bilinear, on the GPU), so pixels
differ in low bits from swscale's: scores from this path are another decoder's
(``GRID_DECODE_GPU``, for a score fingerprint) and are not mixed with the CPU path's. The audio
is ``decode_grid``'s, decoded on the CPU from the same open file. Rotation metadata is not
applied here (a rotated source must take the CPU path).
"""
from __future__ import annotations

import bisect
import importlib
import math
from pathlib import Path

import av
import numpy as np

from decoding.media import (GRID_DECODE, GRID_FPS, GRID_SIZE, PTS_SLACK, SAMPLE_RATE,
                            SHORT_TOLERANCE, DecodeError, Grid, NoVideoError, _decode_audio, _sar,
                            _short_notes, container_end, scaled_size)

#: the GPU path's values are another decoder's: a run scored with it fingerprints this
GRID_DECODE_GPU = f"{GRID_DECODE}-nvdec"


def unavailable() -> str | None:
    """Why the GPU decode cannot run here (None when it can): PyNvVideoCodec missing, or no
    CUDA device for torch."""
    try:
        import torch
    except ImportError as e:          # pragma: no cover - torch is a dependency
        return f"torch is not installed: {e}"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        nvc = importlib.import_module("PyNvVideoCodec")
    except Exception as e:  # noqa: BLE001 - missing wheel or a driver it cannot load
        return f"PyNvVideoCodec does not import: {e}"
    if not hasattr(nvc, "SimpleDecoder"):
        return "PyNvVideoCodec imported without its decoder (driver or CUDA runtime missing)"
    return None


def frame_pts(c, stream) -> list[float]:
    """Presentation times of every frame of ``stream`` in display order, from the packets (no
    decoding); index i is the frame NVDEC returns at index i."""
    pts = [float(pk.pts * stream.time_base) for pk in c.demux(stream)
           if pk.pts is not None and pk.size and not pk.is_discard]
    return sorted(pts)


def slot_indices(pts: list[float], start: float, n: int, fps: float) -> list[int]:
    """Display index taken by each of ``n`` slots from ``start``: the last frame with pts <=
    slot time + PTS_SLACK (the first frame for slots before it), as the CPU path."""
    return [max(bisect.bisect_right(pts, start + k / fps + PTS_SLACK) - 1, 0) for k in range(n)]


def decode_grid_gpu(path: str | Path, start: float = 0.0, end: float | None = None,
                    offset: float = 0.0, gpu_id: int = 0, to_cpu: bool = True) -> Grid:
    """``decode_grid`` with the video decoded by NVDEC and resized on GPU ``gpu_id``. With
    ``to_cpu`` False, ``Grid.frames`` is the uint8 ``[T, 224, 224, 3]`` CUDA tensor."""
    reason = unavailable()
    if reason:
        raise RuntimeError(f"GPU decode unavailable: {reason}")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise NoVideoError("no video stream")
            v = c.streams.video[0]
            end = container_end(c) - offset if end is None else end
            a, b = start + offset, end + offset
            pts, sar = frame_pts(c, v), _sar(v)
            rate = float(v.average_rate or v.guessed_rate or GRID_FPS)
            audio = _decode_audio(c, a, b, SAMPLE_RATE)
    except av.error.FFmpegError as e:
        raise DecodeError(f"cannot decode {Path(path).name}: {e}") from e
    if not pts:
        raise DecodeError("no video frames")
    n = max(int(math.floor((end - start) * GRID_FPS + 1e-6)), 0)
    frames = _nvdec_frames(path, slot_indices(pts, a, n, GRID_FPS), sar, gpu_id)
    video_end = pts[-1] + 1.0 / rate - offset
    audio_end = audio.end - offset if audio is not None else None
    return Grid(frames=frames.cpu().numpy() if to_cpu else frames,
                audio_channels=audio.grid if audio is not None
                else np.zeros((1, round((end - start) * SAMPLE_RATE)), np.float32),
                start=start, has_audio=audio is not None,
                notes=_short_notes(start, end, video_end, audio_end),
                video_end=video_end if video_end < end - SHORT_TOLERANCE else None,
                native_audio=audio.native if audio is not None else None,
                native_rate=audio.native_rate if audio is not None else None)


def _nvdec_frames(path, picks: list[int], sar: float, gpu_id: int):
    """The picked display indices decoded by NVDEC (each distinct index once) as planar RGB,
    resized (short side 224, display aspect) and centre-cropped on the GPU."""
    import PyNvVideoCodec as nvc
    import torch

    device = torch.device("cuda", gpu_id)
    dec = nvc.SimpleDecoder(str(path), gpu_id=gpu_id, use_device_memory=True,
                            output_color_type=nvc.OutputColorType.RGBP)
    distinct = sorted(set(picks))
    got = dec.get_batch_frames_by_index(distinct)
    planes = {i: torch.as_tensor(f, device=device) for i, f in zip(distinct, got)}
    if not picks:
        return torch.zeros((0, GRID_SIZE, GRID_SIZE, 3), dtype=torch.uint8, device=device)
    x = torch.stack([planes[i] for i in picks])
    h, w = x.shape[-2:]
    nw, nh = scaled_size(w, h, sar, GRID_SIZE)
    x = torch.nn.functional.interpolate(x.float(), size=(nh, nw), mode="bilinear",
                                        align_corners=False, antialias=True)
    top, left = (nh - GRID_SIZE) // 2, (nw - GRID_SIZE) // 2
    x = x[..., top:top + GRID_SIZE, left:left + GRID_SIZE]
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
