"""Silero VAD v5/v6 (16 kHz branch) as our own torch module, loaded from a safetensors file.

The ``silero-vad`` package (MIT) ships its real weights inside the wheel
(``silero_vad/data/silero_vad_16k.safetensors``). We read that file with ``safetensors``
(tensors only, no pickle, no TorchScript) into the module below, and we never import the
package itself: its ``__init__`` calls ``torch.set_num_threads(1)``, which would change the
thread count every other score runs on (``curate.ops.scoring.deterministic_torch``).

The network, per 32-ms step of 512 samples: the step with the 64 samples before it (zeros
before the audio starts), reflect-padded by 64 on the right, goes through a learnt STFT
(a 256-tap convolution with stride 128 giving 129 real and 129 imaginary bins), the
magnitude, four 3-tap convolutions with ReLU (strides 1, 2, 2, 1) down to one 128-vector, an
LSTM cell whose state runs from step to step, and a 1x1 convolution with a sigmoid: the
probability that the step holds speech.

The encoder sees only its own 576 samples, so every step of a recording is encoded in one
batched pass; only the LSTM runs step after step (``nn.LSTM`` over the sequence).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from filters.sampling import SPEECH_SAMPLE_RATE as SAMPLE_RATE, SPEECH_STEP as STEP

CONTEXT = 64         # samples of the previous step each step also sees
PAD = 64             # reflect padding on the right before the STFT
N_BINS = 129         # 256-point STFT
HIDDEN = 128
WEIGHTS_FILE = "silero_vad_16k.safetensors"
#: the option that names another weight file (``curate build --speech-checkpoint``)
OPTION = "--speech-checkpoint"


class SileroVAD(nn.Module):
    """The 16-kHz Silero VAD; parameter names are those of the shipped safetensors file."""

    def __init__(self) -> None:
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 2 * N_BINS, kernel_size=256, stride=128, bias=False)
        self.conv1 = nn.Conv1d(N_BINS, 128, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, kernel_size=3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, HIDDEN, kernel_size=3, padding=1)
        self.lstm = nn.LSTM(HIDDEN, HIDDEN, batch_first=True)
        self.final_conv = nn.Conv1d(HIDDEN, 1, kernel_size=1)

    def encode(self, steps: torch.Tensor) -> torch.Tensor:
        """``[S, CONTEXT + STEP]`` step inputs -> ``[S, HIDDEN]`` (independent per step)."""
        x = F.pad(steps, (0, PAD), mode="reflect").unsqueeze(1)
        x = self.stft_conv(x)
        x = torch.sqrt(x[:, :N_BINS] ** 2 + x[:, N_BINS:] ** 2)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = F.relu(conv(x))
        return x.squeeze(-1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio``: float ``[B, N]`` at 16 kHz, N a multiple of ``STEP`` -> speech
        probability per step, ``[B, N // STEP]``; the LSTM state starts at zero."""
        b, n = audio.shape
        padded = F.pad(audio, (CONTEXT, 0))
        steps = padded.unfold(1, CONTEXT + STEP, STEP)          # [B, S, 576]
        s = steps.shape[1]
        z = self.encode(steps.reshape(b * s, CONTEXT + STEP)).reshape(b, s, HIDDEN)
        h, _ = self.lstm(z)
        return torch.sigmoid(self.final_conv(F.relu(h).transpose(1, 2))).squeeze(1)


def packaged_weights() -> Path:
    """The weight file inside the installed ``silero-vad`` package, found without importing
    it (``find_spec`` of a top-level package runs none of its code)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the speech filter needs the silero-vad package (pip install "
                                f"silero-vad) or a weight file given with {OPTION}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the installed silero-vad package has no {WEIGHTS_FILE} "
                                f"(expected {path}); reinstall it or pass {OPTION}")
    return path


def _state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The file's names onto ours: its LSTM cell is our one-layer ``nn.LSTM``."""
    out = {}
    for k, v in tensors.items():
        if k.startswith("lstm_cell."):
            k = "lstm." + k[len("lstm_cell."):] + "_l0"
        out[k] = v
    return out


def load_silero(path: str | Path | None = None, device: str = "cpu") -> SileroVAD:
    """The model with the weights of ``path`` (default: ``packaged_weights()``), strictly:
    a file whose tensors do not fit is an error naming it and ``OPTION``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path) if path is not None else packaged_weights()
    if not path.is_file():
        raise FileNotFoundError(f"speech weights {path} not found (check {OPTION})")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"speech weights {path} are not a safetensors file ({OPTION}): {e}") from e
    model = SileroVAD()
    try:
        model.load_state_dict(_state_dict(tensors), strict=True)
    except RuntimeError as e:
        raise ValueError(f"speech weights {path} do not fit Silero VAD 16 kHz ({OPTION}): {e}") from e
    return model.to(device).eval()
