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

from decoding.mel import rounded

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


def normalise_frames(frames: np.ndarray | torch.Tensor, size: int = CROP) -> torch.Tensor:
    """uint8 ``[..., H, W, 3]`` -> float32 ``[..., 3, size, size]``: centre crop 224, the
    authors' half-precision scaling to [-1, 1], then (a small model's ``size`` < 224 only)
    area averaging down to ``size``."""
    x = torch.from_numpy(np.array(frames, dtype=np.uint8))
    top, left = centre_crop_offsets(x.shape[-3], x.shape[-2])
    x = x[..., top:top + CROP, left:left + CROP, :].movedim(-1, -3)
    x = x.half().div(255.0)
    half = torch.tensor(0.5, dtype=torch.float16)
    x = x.sub(half).div(half).float()
    if size != CROP:
        lead = x.shape[:-3]
        x = F.interpolate(x.reshape(-1, 3, CROP, CROP), size=(size, size), mode="area")
        x = x.reshape(*lead, 3, size, size)
    return x


def segment_starts(first: int, n: int = N_SEGMENTS, step: int = SEG_STEP) -> np.ndarray:
    return first + step * np.arange(n)


def video_segments(frames: np.ndarray, first: int, n: int = N_SEGMENTS, size: int = CROP) -> torch.Tensor:
    """(n, 16, 3, size, size) from 25-fps frames ``[T, H, W, 3]`` starting at frame ``first``."""
    idx = segment_starts(first, n)[:, None] + np.arange(SEG_FRAMES)[None, :]
    if idx.max() >= len(frames):
        raise ValueError(f"a {n}-segment context from frame {first} needs {idx.max() + 1} frames, "
                         f"got {len(frames)}")
    return normalise_frames(np.asarray(frames)[idx], size)


# ----------------------------------------------------------------------------- audio

def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0) if isinstance(f, np.ndarray) else \
        2595.0 * math.log10(1.0 + f / 700.0)


def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """``[n_fft // 2 + 1, n_mels]`` triangular HTK-mel filters, unnormalised, 0 Hz to Nyquist,
    computed in float32 like torchaudio's ``MelSpectrogram`` defaults, the power correctly
    rounded (``decoding.mel.rounded``: the same bank on every CPU)."""
    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    m = torch.linspace(_hz_to_mel(0.0), _hz_to_mel(float(sample_rate // 2)), n_mels + 2)
    f_pts = 700.0 * (rounded(lambda d: 10 ** d, m / 2595.0) - 1.0)
    width = f_pts[1:] - f_pts[:-1]
    rel = f_pts.unsqueeze(0) - freqs.unsqueeze(1)                  # (n_freqs, n_mels + 2)
    rising = -rel[:, :-2] / width[:-1]
    falling = rel[:, 2:] / width[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


_MEL = None


def log_mel(segments: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[..., 10240]`` 16-kHz samples -> ``[..., 128, 66]`` normalised log-mel, in float32 as
    the authors run it (bit for bit theirs on the same CPU; a float32 FFT's rounding differs
    between CPUs, which the log lifts to ~1e-4 in silent bins). ``dtype=torch.float64`` is
    their modules cast with ``.double()``: the window and mel bank made in float32, then cast."""
    global _MEL
    if _MEL is None:
        _MEL = mel_filters()
    x = torch.as_tensor(segments, dtype=dtype)
    flat = x.reshape(-1, x.shape[-1])
    window = torch.hann_window(WIN).to(dtype)
    spec = torch.stft(flat, N_FFT, hop_length=HOP, win_length=WIN, window=window,
                      center=True, pad_mode="reflect", return_complex=True).abs().pow(2.0)
    mel = torch.matmul(spec.transpose(-1, -2), _MEL.to(dtype)).transpose(-1, -2)
    mel = torch.log(mel + 1e-6)
    mel = F.pad(mel, (0, max(SPEC_T - mel.shape[-1], 0)))[..., :SPEC_T]
    mel = (mel - AST_MEAN) / (2 * AST_STD)
    return mel.reshape(*x.shape[:-1], N_MELS, SPEC_T)


def audio_segments(wave: np.ndarray, first_sample: int, n: int = N_SEGMENTS,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, 1, 128, 66) from mono 16-kHz ``wave`` starting at ``first_sample`` (``log_mel``'s
    ``dtype``)."""
    w = torch.as_tensor(np.asarray(wave, np.float32))
    starts = first_sample + SEG_STEP_SAMPLES * np.arange(n)
    if starts[-1] + SEG_SAMPLES > len(w) or first_sample < 0:
        raise ValueError(f"a {n}-segment context from sample {first_sample} needs "
                         f"{starts[-1] + SEG_SAMPLES} samples, got {len(w)}")
    segs = torch.stack([w[s:s + SEG_SAMPLES] for s in starts])
    return log_mel(segs, dtype).unsqueeze(1)


def first_sample_of(frame: int) -> int:
    """The authors' ``sec2frames(frames2sec(v_start, 25), 16000)``: int() of the time."""
    return int(frame / FPS * SAMPLE_RATE)


def context(frames: np.ndarray, wave: np.ndarray, first_frame: int, n: int = N_SEGMENTS,
            size: int = CROP) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's inputs for one context starting at 25-fps frame ``first_frame``."""
    return (video_segments(frames, first_frame, n, size),
            audio_segments(wave, first_sample_of(first_frame), n))


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


# ----------------------------------------------------------------------------- one clip

#: what a clip's certificate holds (the clips / selected manifests and sample JSON)
CERT_COLUMNS = ("sf_offset_first", "sf_prob_first", "sf_p0_first",
                "sf_offset_last", "sf_prob_last", "sf_p0_last", "desync_s")


def context_span(start: float, end: float, seg_end: float) -> tuple[float, float, str | None]:
    """The decoded span for a clip: the clip itself when it holds a 4.8-s context, else 4.8 s
    centred on it and kept inside the segment ``[0, seg_end)`` (note says so); a segment
    shorter than a context raises."""
    if end - start >= CONTEXT_S:
        return start, end, None
    if seg_end < CONTEXT_S:
        raise ValueError(f"segment of {seg_end:.2f} s is shorter than a {CONTEXT_S} s context")
    a = min(max((start + end) / 2 - CONTEXT_S / 2, 0.0), seg_end - CONTEXT_S)
    return a, a + CONTEXT_S, f"context {a:.2f}-{a + CONTEXT_S:.2f} s centred on the clip"


def decode_context_media(src, a: float, b: float, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """25-fps frames (short side 256, ffmpeg's fps-filter picks) and mono 16-kHz audio of [a, b)."""
    from decoding.media import decode_clip, ffmpeg_fps_lead
    g = decode_clip(src, a, b, fps=FPS, short_side=SHORT_SIDE, crop=None, sample_rate=SAMPLE_RATE,
                    offset=offset, pick_lead=ffmpeg_fps_lead(FPS))
    return g.frames, g.audio_channels.mean(axis=0)


def predict(model, frames: np.ndarray, wave: np.ndarray, starts: Sequence[int],
            device: str = "cpu") -> list[Offset]:
    """One ``Offset`` per context start (frames on the 25-fps grid), one batched forward."""
    size = getattr(getattr(model, "cfg", None), "image", CROP)
    vids, auds = zip(*(context(frames, wave, s, size=size) for s in starts))
    with torch.no_grad():
        logits = model(torch.stack(vids).to(device), torch.stack(auds).to(device)).float().cpu()
    return [offset_of(row) for row in logits]


def certify_media(model, frames: np.ndarray, wave: np.ndarray, device: str = "cpu") -> dict:
    """The certificate of decoded media (first and last contexts on the av-benchmark grid)."""
    starts = context_starts(len(frames))
    if not starts:
        raise ValueError(f"{len(frames)} frames hold no {CONTEXT_S} s context")
    offs = predict(model, frames, wave, starts, device)
    first, last = offs[0], offs[-1]
    return {"sf_offset_first": first.offset_s, "sf_prob_first": first.prob, "sf_p0_first": first.prob_zero,
            "sf_offset_last": last.offset_s, "sf_prob_last": last.prob, "sf_p0_last": last.prob_zero,
            "desync_s": desync([first, last])}


def certify_clip(model, src, start: float, end: float, seg_end: float, offset: float = 0.0,
                 device: str = "cpu", audio_shift: float = 0.0) -> tuple[dict, str | None]:
    """(certificate columns, note) of the clip [start, end) of a segment of ``seg_end`` s whose
    time 0 lies at ``offset`` on ``src``'s clock. A short clip is measured on 4.8 s centred on
    it (its one context counts as first and last). ``audio_shift`` (s): the audio heard at t
    is the source's at t + audio_shift (a repaired clip, ``curate.selection.repair``)."""
    a, b, note = context_span(start, end, seg_end)
    frames, wave = decode_context_media(src, a, b, offset)
    if audio_shift:
        _, wave = decode_context_media(src, a + audio_shift, b + audio_shift, offset)
    return certify_media(model, frames, wave, device), note
