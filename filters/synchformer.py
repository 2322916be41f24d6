"""Synchformer offsets and DeSync: the sync certificate of a merged clip.

Preprocessing is the authors' test-time pipeline (v-iashin/Synchformer ``configs/sync.yaml``,
``transform_sequence_test``), written from it and checked against it with fixtures their
code made (``tests/fixtures/synchformer/``):
- video at 25 fps (ffmpeg's ``fps`` filter picks the frame shown half an output frame after
  each output instant), short side 256, centre crop 224 (offsets ``round((h - 224) / 2)``),
  ``uint8 -> half / 255``, then ``(x - 0.5) / 0.5`` in half precision;
- audio 16 kHz mono; per segment of 10240 samples (0.64 s): a 128-band HTK mel power
  spectrogram (n_fft 1024, window 400 Hann, hop 160, centred, reflect padding), ``log(x +
  1e-6)``, zero-padded from 65 to 66 frames, ``(x + 4.2677393) / (2 * 4.5689974)``;
- a context of 14 segments of 16 frames with 50% overlap: 4.8 s (120 frames, 76800 samples).

Offsets: 21 classes from -2.0 to +2.0 s in 0.2-s steps. Following the authors' transforms, a
positive offset means the audio track runs ahead: what is heard at video time t belongs to
video time t + offset. DeSync of a clip (MMAudio's av-benchmark): per-segment features on a
grid from the clip's first frame, the contexts made of the first 14 and the last 14
segments, DeSync = the mean of |predicted offset| over the two.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

FPS = 25
SAMPLE_RATE = 16000
SHORT_SIDE = 256
CROP = 224
SEG_FRAMES = 16
SEG_STEP = 8
N_SEGMENTS = 14
SEG_SAMPLES = SEG_FRAMES * SAMPLE_RATE // FPS        # 10240
SEG_STEP_SAMPLES = SEG_STEP * SAMPLE_RATE // FPS     # 5120
CONTEXT_FRAMES = (N_SEGMENTS - 1) * SEG_STEP + SEG_FRAMES        # 120
CONTEXT_S = CONTEXT_FRAMES / FPS                                  # 4.8
N_FFT, WIN, HOP, N_MELS, SPEC_T = 1024, 400, 160, 128, 66
AST_MEAN, AST_STD = -4.2677393, 4.5689974
MAX_OFFSET_S = 2.0
N_CLASSES = 21


def offset_grid(n_classes: int = N_CLASSES, max_offset: float = MAX_OFFSET_S) -> np.ndarray:
    """Class index -> offset in seconds (float32, as the authors' ``make_class_grid``)."""
    return np.linspace(-max_offset, max_offset, n_classes).astype(np.float32)


# ----------------------------------------------------------------------------- video

def centre_crop_offsets(h: int, w: int, size: int = CROP) -> tuple[int, int]:
    """(top, left) of the centre crop; Python's round (half to even), as the authors' code."""
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


def normalise_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., H, W, 3]`` -> float32 ``[..., 3, 224, 224]``: centre crop, then the
    authors' half-precision scaling to [-1, 1]."""
    x = torch.from_numpy(np.array(frames, dtype=np.uint8))
    top, left = centre_crop_offsets(x.shape[-3], x.shape[-2])
    x = x[..., top:top + CROP, left:left + CROP, :].movedim(-1, -3)
    x = x.half().div(255.0)
    half = torch.tensor(0.5, dtype=torch.float16)
    return x.sub(half).div(half).float()


def segment_starts(first: int, n: int = N_SEGMENTS, step: int = SEG_STEP) -> np.ndarray:
    return first + step * np.arange(n)


def video_segments(frames: np.ndarray, first: int, n: int = N_SEGMENTS) -> torch.Tensor:
    """(n, 16, 3, 224, 224) from 25-fps frames ``[T, H, W, 3]`` starting at frame ``first``."""
    idx = segment_starts(first, n)[:, None] + np.arange(SEG_FRAMES)[None, :]
    if idx.max() >= len(frames):
        raise ValueError(f"a {n}-segment context from frame {first} needs {idx.max() + 1} frames, "
                         f"got {len(frames)}")
    return normalise_frames(np.asarray(frames)[idx])


# ----------------------------------------------------------------------------- audio

def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0) if isinstance(f, np.ndarray) else \
        2595.0 * math.log10(1.0 + f / 700.0)


def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """``[n_fft // 2 + 1, n_mels]`` triangular HTK-mel filters, unnormalised, 0 Hz to Nyquist,
    computed in float32 like torchaudio's ``MelSpectrogram`` defaults."""
    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    m = torch.linspace(_hz_to_mel(0.0), _hz_to_mel(float(sample_rate // 2)), n_mels + 2)
    f_pts = 700.0 * (10 ** (m / 2595.0) - 1.0)
    width = f_pts[1:] - f_pts[:-1]
    rel = f_pts.unsqueeze(0) - freqs.unsqueeze(1)                  # (n_freqs, n_mels + 2)
    rising = -rel[:, :-2] / width[:-1]
    falling = rel[:, 2:] / width[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


_MEL = None


def log_mel(segments: torch.Tensor) -> torch.Tensor:
    """``[..., 10240]`` 16-kHz samples -> ``[..., 128, 66]`` normalised log-mel."""
    global _MEL
    if _MEL is None:
        _MEL = mel_filters()
    x = torch.as_tensor(segments, dtype=torch.float32)
    flat = x.reshape(-1, x.shape[-1])
    spec = torch.stft(flat, N_FFT, hop_length=HOP, win_length=WIN, window=torch.hann_window(WIN),
                      center=True, pad_mode="reflect", return_complex=True).abs().pow(2.0)
    mel = torch.matmul(spec.transpose(-1, -2), _MEL).transpose(-1, -2)
    mel = torch.log(mel + 1e-6)
    mel = F.pad(mel, (0, max(SPEC_T - mel.shape[-1], 0)))[..., :SPEC_T]
    mel = (mel - AST_MEAN) / (2 * AST_STD)
    return mel.reshape(*x.shape[:-1], N_MELS, SPEC_T)


def audio_segments(wave: np.ndarray, first_sample: int, n: int = N_SEGMENTS) -> torch.Tensor:
    """(n, 1, 128, 66) from mono 16-kHz ``wave`` starting at ``first_sample``."""
    w = torch.as_tensor(np.asarray(wave, np.float32))
    starts = first_sample + SEG_STEP_SAMPLES * np.arange(n)
    if starts[-1] + SEG_SAMPLES > len(w) or first_sample < 0:
        raise ValueError(f"a {n}-segment context from sample {first_sample} needs "
                         f"{starts[-1] + SEG_SAMPLES} samples, got {len(w)}")
    segs = torch.stack([w[s:s + SEG_SAMPLES] for s in starts])
    return log_mel(segs).unsqueeze(1)


def first_sample_of(frame: int) -> int:
    """The authors' ``sec2frames(frames2sec(v_start, 25), 16000)``: int() of the time."""
    return int(frame / FPS * SAMPLE_RATE)


def context(frames: np.ndarray, wave: np.ndarray, first_frame: int,
            n: int = N_SEGMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's inputs for one context starting at 25-fps frame ``first_frame``."""
    return video_segments(frames, first_frame, n), audio_segments(wave, first_sample_of(first_frame), n)


# ----------------------------------------------------------------------------- decisions

@dataclass(frozen=True)
class Offset:
    """One context's prediction."""

    offset_s: float          # argmax class's offset
    prob: float              # its softmax probability
    prob_zero: float         # probability of offset 0


def offset_of(logits: np.ndarray | torch.Tensor, grid: np.ndarray | None = None) -> Offset:
    grid = offset_grid(len(logits)) if grid is None else grid
    p = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=-1).numpy()
    k = int(np.argmax(p))
    zero = int(np.argmin(np.abs(grid)))
    return Offset(float(grid[k]), float(p[k]), float(p[zero]))


def desync(offsets: Sequence[Offset]) -> float:
    """av-benchmark's DeSync of one clip: mean |offset| over its contexts (first and last)."""
    return float(np.mean([abs(o.offset_s) for o in offsets]))


def n_grid_segments(n_frames: int) -> int:
    """Segments of 16 frames every 8 that fit in ``n_frames`` (av-benchmark's grid)."""
    return max((n_frames - SEG_FRAMES) // SEG_STEP + 1, 0)


def context_starts(n_frames: int) -> list[int]:
    """First frames of the first and the last 14-segment context on the clip's grid (one
    context when they coincide); empty when the clip holds fewer than 14 segments."""
    n = n_grid_segments(n_frames)
    if n < N_SEGMENTS:
        return []
    first, last = 0, (n - N_SEGMENTS) * SEG_STEP
    return [first] if last == first else [first, last]
