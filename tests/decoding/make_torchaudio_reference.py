"""Make ``tests/decoding/data/torchaudio_reference.npz``: what the real torchaudio computes
for the released ASVA audio chain (``torchaudio.functional.resample`` at its defaults, then
``avgen/data/utils.py: waveform_to_melspectrogram`` on ImageBind's ``waveform2melspec``,
whose fbank is ``torchaudio.compliance.kaldi.fbank``) on fixed synthetic signals.

It imports nothing of this repository: the fixture is a reference made by the reference
implementation. torchaudio has no build next to the torch used here, so run it in a
throwaway venv outside the repository that holds a torch + torchaudio pair, e.g.::

    python3 -m venv /tmp/ref-venv
    /tmp/ref-venv/bin/pip install --no-deps torchaudio==2.11.1
    # torch from the project's venv; torchaudio's C extension is not needed by resample
    # or compliance.kaldi (move torchaudio/lib/*.so aside if it fails to load)
    echo /work/main/.venv/lib/python3.11/site-packages > /tmp/ref-venv/lib/python3.11/site-packages/main.pth
    /tmp/ref-venv/bin/python tests/decoding/make_torchaudio_reference.py

A float32 result depends on the CPU it was computed on: the file made on one x86 machine
differed from the one made on another in 41 filter weights (torchaudio's float32 ``log``;
up to 1.1e-5) and, through the float32 FFT, in every float32 mel (up to 2.7e-4 relative).
So the file also holds each chain in float64 (``/mel64``), and it was remade on a machine
whose float32 ``log`` is correctly rounded (as ``decoding.mel.rounded`` evaluates it on every
CPU), so the weights, and the float64 results built on them, hold on any CPU.

The signals come from ``signal`` below (numpy only), which the tests import to rebuild the
same inputs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "data" / "torchaudio_reference.npz"

# name: (sample rate, channels, samples); all go through the released chain to 16 kHz
CASES = {
    "mono16k": (16000, 1, 33001),        # no resampling; centre crop of 1001 samples
    "stereo44k": (44100, 2, 86000),      # resampled to 31202 samples: zero-padded frames
    "stereo48k": (48000, 2, 110500),     # resampled to 36834 samples: centre crop
}
FBANK64 = (16000, 8000)                  # a bare float64 fbank of 0.5 s


def signal(sample_rate: int, channels: int, n: int, seed: int = 0) -> np.ndarray:
    """Float32 ``[channels, n]``: tones, a chirp, a DC offset, integer-LCG noise, and 0.1 s
    of exact silence (energies at the log floor) in channel 0."""
    t = np.arange(n, dtype=np.float64) / sample_rate
    state, noise = 12345 + seed, np.empty(n, np.float64)
    for i in range(n):                       # integer LCG: the same numbers on every platform
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        noise[i] = (state >> 40) / float(1 << 24) - 0.5
    out = []
    for c in range(channels):
        x = (0.3 * np.sin(2 * np.pi * (220.0 * (c + 1)) * t)
             + 0.2 * np.sin(2 * np.pi * (50.0 * t + 900.0 * t * t))
             + 0.05 * np.sin(2 * np.pi * 3100.0 * t) + 0.02 + 0.05 * np.roll(noise, 977 * c))
        if c == 0:
            x[int(0.6 * sample_rate):int(0.7 * sample_rate)] = 0.0
        out.append(x)
    return np.asarray(out, np.float32)


def _released_mel(wave16, torch, kaldi):
    """waveform_to_melspectrogram (clip_duration 2, 16 kHz) on waveform2melspec, as released."""
    n = wave16.shape[1]
    i0 = (n - 32000) // 2 if n > 32000 else 0
    w = wave16[:, i0:i0 + 32000].clone()
    w -= w.mean()
    fb = kaldi.fbank(w, htk_compat=True, sample_frequency=16000, use_energy=False,
                     window_type="hanning", num_mel_bins=128, dither=0.0, frame_length=25,
                     frame_shift=10).transpose(0, 1)
    p = 204 - fb.size(1)
    fb = torch.nn.functional.pad(fb, (0, p)) if p > 0 else fb[:, :204]
    return (fb.unsqueeze(0) - (-4.268)) / 9.138


def main() -> None:
    import torch
    import torchaudio
    import torchaudio.compliance.kaldi as kaldi
    torch.set_num_threads(1)
    arrays = {}
    for name, (sr, ch, n) in CASES.items():
        x = torch.from_numpy(signal(sr, ch, n))
        w16 = torchaudio.functional.resample(x, sr, 16000)
        arrays[f"{name}/resampled_mid"] = w16[:, 10000:12000].numpy()
        arrays[f"{name}/resampled_len"] = np.int64(w16.shape[1])
        arrays[f"{name}/mel"] = _released_mel(w16, torch, kaldi).numpy()
        # the same chain on the same float32 signal taken as float64: a float32 mel carries
        # the CPU's FFT rounding (see above), this one does not
        w64 = torchaudio.functional.resample(x.double(), sr, 16000)
        arrays[f"{name}/mel64"] = _released_mel(w64, torch, kaldi).numpy()
    sr, n = FBANK64
    x64 = torch.from_numpy(signal(sr, 1, n, seed=1).astype(np.float64))
    arrays["fbank64"] = kaldi.fbank(x64, htk_compat=True, sample_frequency=sr, use_energy=False,
                                    window_type="hanning", num_mel_bins=128, dither=0.0).numpy()
    banks, _ = kaldi.get_mel_banks(128, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    arrays["mel_banks"] = banks.numpy()     # the weights as torchaudio evaluates them (float32)
    arrays["versions"] = np.array(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) with {arrays['versions']}", file=sys.stderr)


if __name__ == "__main__":
    main()
