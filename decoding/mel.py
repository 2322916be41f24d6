"""Kaldi-compatible log-mel filterbank in torch, and ImageBind's 1x128x204 mel.

torchaudio cannot be installed next to the CPU torch wheel used here, so this module
re-implements ``torchaudio.compliance.kaldi.fbank`` (which matches Kaldi's
``compute-fbank-feats``) for the options ImageBind and AVSyncD use (DESIGN section 4):

* framing with ``snip_edges``: ``1 + (N - 400) // 160`` frames of 25 ms every 10 ms at 16 kHz;
* per-frame DC removal, pre-emphasis 0.97 (first sample pre-emphasised against itself);
* symmetric Hann window (Kaldi "hanning", ``0.5 - 0.5 cos(2 pi n / (L - 1))``);
* zero padding to the next power of two (512), power spectrum ``|rfft|^2``;
* triangular filters equally spaced on Kaldi's mel scale ``1127 ln(1 + f / 700)`` between
  20 Hz and Nyquist, weights computed in the mel domain in float32 (as torchaudio does);
* ``log(max(energy, float32 eps))``. No dither, no energy column (``use_energy=False``,
  so ``htk_compat`` changes nothing).

``imagebind_mel`` adds ImageBind's ``waveform2melspec`` steps: global mean removal,
transpose to bins x frames, zero pad / cut to ``target_length`` frames, and normalisation
with ImageBind's audio mean -4.268 and std 9.138.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
NUM_MEL_BINS = 128
TARGET_LENGTH = 204
IMAGEBIND_MEAN = -4.268
IMAGEBIND_STD = 9.138
# names the fbank's arithmetic in the score fingerprint of the audio filters: a change to it
# changes the scores (issue 25: filter weights evaluated in float32, as torchaudio does)
FBANK_ID = "kaldi-fbank/torchaudio-float32-weights"
# numeric_limits<float>::epsilon(), Kaldi's floor before the log
EPSILON = float(np.finfo(np.float32).eps)


def mel_scale(freq: torch.Tensor | float):
    """Kaldi's mel scale: 1127 ln(1 + f / 700)."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


def _next_power_of_2(x: int) -> int:
    return 1 if x == 0 else 2 ** (x - 1).bit_length()


def _window(window_type: str, size: int, dtype: torch.dtype) -> torch.Tensor:
    if window_type == "hanning":
        return torch.hann_window(size, periodic=False, dtype=dtype)
    if window_type == "povey":
        return torch.hann_window(size, periodic=False, dtype=dtype).pow(0.85)
    if window_type == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, dtype=dtype)
    if window_type == "rectangular":
        return torch.ones(size, dtype=dtype)
    raise ValueError(f"unsupported window_type {window_type!r} "
                     "(hanning, povey, hamming, rectangular)")


def rounded(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` (a ``log``, a power) correctly rounded to ``x``'s float32, the same on every
    CPU: evaluated in float64, then rounded. torch's float32 transcendentals are within an ulp
    but round as the CPU's kernels do, and one ulp of a ~10^3 mel moves a filter weight by
    ~1e-5 (41 of torchaudio's 32,768 weights differed between two x86 machines). Where
    torch's rounding is correct, this is bit for bit torchaudio's."""
    return fn(x.double()).to(x.dtype)


def mel_banks(num_bins: int, padded_window_size: int, sample_rate: float,
              low_freq: float = 20.0, high_freq: float = 0.0,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Triangular mel filters ``[num_bins, padded_window_size // 2 + 1]`` (last column 0).

    ``high_freq <= 0`` means Nyquist + high_freq, as in Kaldi. The edges are Python floats
    but the weights are computed in float32 whatever ``dtype`` is, as torchaudio's
    ``get_mel_banks`` does (its tensors take torch's default float32): the mel of a bin is
    ~10^3 while the filters are ~20 mel wide, so float32 rounding moves weights by ~1e-5,
    which is the 2e-5 relative difference of the mel once seen against the float64 weights.
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"bad mel range low={low_freq} high={high_freq} nyquist={nyquist}")
    num_fft_bins = padded_window_size // 2
    fft_bin_width = sample_rate / padded_window_size
    mel_low, mel_high = mel_scale(float(low_freq)), mel_scale(float(high_freq))
    delta = (mel_high - mel_low) / (num_bins + 1)
    # float32 throughout, in torchaudio's order of operations (scalar + tensor * scalar)
    b = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)
    left = mel_low + b * delta
    center = mel_low + (b + 1.0) * delta
    right = mel_low + (b + 2.0) * delta
    freqs = fft_bin_width * torch.arange(num_fft_bins, dtype=torch.float32)
    mel = (1127.0 * rounded(torch.log, 1.0 + freqs / 700.0)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    # the Nyquist FFT bin gets no weight (Kaldi uses num_fft_bins = padded / 2 columns)
    return torch.nn.functional.pad(banks, (0, 1)).to(dtype)


def _frames(wave: torch.Tensor, size: int, shift: int) -> torch.Tensor:
    """snip_edges framing: only frames that fit entirely."""
    n = wave.shape[0]
    if n < size:
        return wave.new_zeros((0, size))
    m = 1 + (n - size) // shift
    return wave.as_strided((m, size), (shift * wave.stride(0), wave.stride(0)))


def _as_tensor(wave) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(wave) if not isinstance(wave, torch.Tensor) else wave)
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1:
        raise ValueError(f"expected a mono waveform [N] (or [1, N]), got shape {tuple(t.shape)}")
    if not torch.is_floating_point(t):
        raise ValueError(f"expected a float waveform, got {t.dtype}")
    return t if t.dtype == torch.float64 else t.to(torch.float32)


def fbank(wave, sample_rate: int = SAMPLE_RATE, num_mel_bins: int = NUM_MEL_BINS,
          frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0,
          window_type: str = "hanning", preemphasis: float = 0.97,
          remove_dc_offset: bool = True, round_to_power_of_two: bool = True,
          low_freq: float = 20.0, high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi log-mel filterbank ``[frames, num_mel_bins]`` of a mono float waveform.

    ``wave``: numpy or torch, ``[N]`` or ``[1, N]``, float in [-1, 1] (not rescaled to int16,
    like ImageBind). Computed in float32 (float64 input stays float64). Fewer than one
    frame of samples gives a ``[0, num_mel_bins]`` tensor.
    """
    x = _as_tensor(wave)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    size = int(sample_rate * frame_length_ms * 0.001)
    if size < 2 or shift < 1:
        raise ValueError(f"frame length {size} / shift {shift} samples too small")
    padded = _next_power_of_2(size) if round_to_power_of_two else size
    frames = _frames(x, size, shift)
    if frames.shape[0] == 0:
        return x.new_zeros((0, num_mel_bins))
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    if preemphasis != 0.0:
        # x[j] -= c * x[max(0, j - 1)]: the first sample is pre-emphasised against itself
        prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = frames - preemphasis * prev
    frames = frames * _window(window_type, size, frames.dtype).unsqueeze(0)
    if padded != size:
        frames = torch.nn.functional.pad(frames, (0, padded - size))
    power = torch.fft.rfft(frames, dim=1).abs().pow(2)
    banks = mel_banks(num_mel_bins, padded, sample_rate, low_freq, high_freq, power.dtype)
    energies = power @ banks.T
    return torch.clamp(energies, min=EPSILON).log()


def imagebind_mel(wave, sample_rate: int = SAMPLE_RATE, target_length: int = TARGET_LENGTH,
                  num_mel_bins: int = NUM_MEL_BINS, normalize: bool = True) -> torch.Tensor:
    """ImageBind's audio input ``[1, num_mel_bins, target_length]`` (float32) for one clip.

    2 s at 16 kHz (32000 samples) gives 198 fbank frames, zero padded to 204 on the right
    (before normalisation, as ImageBind does). Longer inputs are cut to ``target_length``.
    """
    x = _as_tensor(wave)
    if x.shape[0] < int(sample_rate * 0.025):
        raise ValueError(f"audio too short for one 25-ms frame: {x.shape[0]} samples")
    x = x - x.mean()
    fb = fbank(x, sample_rate=sample_rate, num_mel_bins=num_mel_bins).T  # [bins, frames]
    n_frames = fb.shape[1]
    p = target_length - n_frames
    if abs(p) / max(n_frames, 1) > 0.2:
        log.warning("mel: %d frames padded/cut to %d (more than 20%%)", n_frames, target_length)
    if p > 0:
        fb = torch.nn.functional.pad(fb, (0, p), value=0.0)
    elif p < 0:
        fb = fb[:, :target_length]
    fb = fb.unsqueeze(0).to(torch.float32)
    if normalize:
        fb = (fb - IMAGEBIND_MEAN) / IMAGEBIND_STD
    return fb


def imagebind_mels_at(wave, starts, n_samples: int = 32000, sample_rate: int = SAMPLE_RATE,
                      target_length: int = TARGET_LENGTH, num_mel_bins: int = NUM_MEL_BINS) -> list[torch.Tensor]:
    """``imagebind_mel(wave[s:s + n_samples])`` for each of ``starts``, from one fbank per
    phase of the starts modulo the frame shift: clips 0.04 s apart (the sync classifier's
    offset search) share 196 of their 198 frames. Equal to the per-clip mel to float
    rounding only (each frame's DC removal subsumes the clip's mean removal, so the values
    agree to ~1e-5; not bit for bit). Every clip must lie inside ``wave``."""
    x = _as_tensor(wave)
    shift = int(sample_rate * 0.010)
    n_frames = 1 + (n_samples - int(sample_rate * 0.025)) // shift
    out: dict[int, torch.Tensor] = {}
    phases: dict[int, list[int]] = {}
    for s in dict.fromkeys(int(s) for s in starts):
        if s < 0 or s + n_samples > x.shape[0]:
            raise ValueError(f"clip [{s}, {s + n_samples}) outside the {x.shape[0]} samples")
        phases.setdefault(s % shift, []).append(s)
    for group in phases.values():
        lo, hi = min(group), max(group) + n_samples
        fb = fbank(x[lo:hi], sample_rate=sample_rate, num_mel_bins=num_mel_bins).T   # [bins, frames]
        for s in group:
            m0 = (s - lo) // shift
            clip = torch.nn.functional.pad(fb[:, m0:m0 + n_frames], (0, max(target_length - n_frames, 0)))
            out[s] = ((clip[:, :target_length].unsqueeze(0).to(torch.float32) - IMAGEBIND_MEAN) / IMAGEBIND_STD)
    return [out[int(s)] for s in starts]


def released_mel(wave, sample_rate: int = SAMPLE_RATE, target_samples: int = 32000,
                 target_length: int = TARGET_LENGTH, num_mel_bins: int = NUM_MEL_BINS) -> torch.Tensor:
    """The released ASVA mel (``avgen/data/utils.py: waveform_to_melspectrogram`` on ImageBind's
    ``waveform2melspec``) of a ``[C, n]`` waveform, ``[1, num_mel_bins, target_length]``.

    Longer inputs are centre-cropped to ``target_samples`` (start ``(n - target) // 2``),
    shorter ones kept unpadded; the mean over all channels and samples is subtracted; the
    Kaldi fbank then reads channel 0 only (its default ``channel=-1`` means the first: the
    left channel of a stereo file); zero pad / cut to ``target_length`` and ImageBind's
    normalisation. ``imagebind_mel`` is the mono form used by our own convention.
    """
    x = torch.as_tensor(np.asarray(wave) if not isinstance(wave, torch.Tensor) else wave)
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2 or not torch.is_floating_point(x):
        raise ValueError(f"expected a float [C, N] waveform, got {x.dtype} {tuple(x.shape)}")
    n = x.shape[1]
    i0 = (n - target_samples) // 2 if n > target_samples else 0
    x = x[:, i0:i0 + target_samples]
    if x.shape[1] < int(sample_rate * 0.025):
        raise ValueError(f"audio too short for one 25-ms frame: {x.shape[1]} samples")
    x = x - x.mean()
    fb = fbank(x[0], sample_rate=sample_rate, num_mel_bins=num_mel_bins).T
    p = target_length - fb.shape[1]
    if p > 0:
        fb = torch.nn.functional.pad(fb, (0, p), value=0.0)
    elif p < 0:
        fb = fb[:, :target_length]
    return ((fb.unsqueeze(0).to(torch.float32) - IMAGEBIND_MEAN) / IMAGEBIND_STD)
