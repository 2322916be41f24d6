"""Speech filter: how much of a window somebody is talking (narration, voice-over), found by
Silero VAD with its real pretrained weights (MIT, shipped inside the ``silero-vad`` package;
DESIGN section 13).

Scores per window: ``speech``, the fraction of its 32-ms steps whose speech probability is at
least ``SPEECH_PROB``, and ``speech_run_s``, the longest run of consecutive speech steps in
seconds. Keep when ``speech <= max`` (and ``speech_run_s <= run_max`` when set). The paper's
recipes record these without gating; a custom recipe may gate on them.

The model runs once per segment on the grid's 16-kHz mono audio (``speech_probs``), its
LSTM state carried from the segment's start as in Silero's own streaming use; every window
reads the steps whose centre lies inside it (``window_scores``). A window's scores therefore
do not depend on which other windows were scored with it, nor on the cascade.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from filters import sampling
from filters.spec import Bound, FilterSpec, ModelSpec

NAME = "speech"
#: a step is speech when Silero's probability is at least this (Silero's own default)
SPEECH_PROB = 0.5
#: the model's input rate and step (``filters.sampling``)
SAMPLE_RATE = sampling.SPEECH_SAMPLE_RATE
STEP = sampling.SPEECH_STEP
STEP_SECONDS = STEP / SAMPLE_RATE


# ---------------------------------------------------------------- pure math

def window_scores(probs: np.ndarray, start: float, end: float,
                  prob: float = SPEECH_PROB) -> tuple[float, float]:
    """(speech fraction, longest speech run in s) of the window [start, end), in seconds from
    the start of the audio ``probs`` were computed on (step k covers [k, k+1) * 32 ms)."""
    probs = np.asarray(probs, dtype=np.float64)
    centres = (np.arange(len(probs)) + 0.5) * STEP_SECONDS
    inside = probs[(centres >= start) & (centres < end)]
    if inside.size == 0:
        raise ValueError(f"no 32-ms speech step lies in [{start:g}, {end:g}) "
                         f"({len(probs)} steps decoded)")
    speech = inside >= prob
    return float(speech.mean()), _longest_run(speech) * STEP_SECONDS


def _longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in ``flags``."""
    if not flags.any():
        return 0
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())


# ---------------------------------------------------------------- the filter

def run(seg, alive: list[int]) -> dict[int, str]:
    """The windows ``alive`` of one segment: Silero once over the segment's 16-kHz mono audio
    (cached on the segment), each window's steps read from it."""
    cache = seg.cache(NAME)
    if "probs" not in cache:
        cache["probs"] = seg.model(NAME).speech_probs(seg.grid.audio, seg.grid.sample_rate)
    probs, t0 = cache["probs"], seg.grid.start

    def one(k):
        s, e = seg.bounds(k)
        seg.rows[k]["speech"], seg.rows[k]["speech_run_s"] = window_scores(probs, s - t0, e - t0)
    return seg.per_window(alive, one)


# ---------------------------------------------------------------- the model

class SpeechScorer:
    """Silero VAD on CPU (or ``device``), loaded once (per scoring actor)."""

    def __init__(self, model, device: str = "cpu"):
        self.model, self.device = model, device

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, device: str = "cpu") -> "SpeechScorer":
        """``path``: a Silero VAD 16-kHz safetensors file; None: the installed package's."""
        from filters import silero_model
        return cls(silero_model.load_silero(path, device), device)

    def speech_probs(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Speech probability per 32-ms step of ``audio`` (float mono [N] at 16 kHz); the last
        partial step is zero-padded."""
        import torch

        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"Silero VAD takes {SAMPLE_RATE} Hz audio, got {sample_rate}")
        x = np.asarray(audio, dtype=np.float32).reshape(-1)
        n = -(-len(x) // STEP) * STEP
        x = np.pad(x, (0, n - len(x)))
        # one intra-op thread, whatever the worker runs on: the network's ops are tiny (a
        # 128-wide LSTM step after step), so on several threads their synchronisation is
        # most of the cost (measured on 10-s segments: 9 ms CPU on one thread, 100-160 ms
        # on two), and a fixed count keeps the bits the same on every worker
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                p = self.model(torch.from_numpy(x)[None].to(self.device))
        finally:
            torch.set_num_threads(threads)
        return p[0].float().cpu().numpy()


# ---------------------------------------------------------------- the declaration

def load(weights: str | None, random: bool, run_models: Mapping[str, Any], device: str,
         convention: str | None = None) -> SpeechScorer:
    """Silero on the CPU whatever ``device`` the other models use: one forward pass per
    segment of a 1-MFLOP-a-step network is cheaper there than a GPU round trip. ``random``:
    random-initialised (only when the silero-vad package is missing under
    ``--allow-random-weights``)."""
    if random:
        import torch
        from filters import silero_model
        torch.manual_seed(0)
        return SpeechScorer(silero_model.SileroVAD().eval())
    return SpeechScorer.from_checkpoint(weights)


def packaged(run_models: Mapping[str, Any]) -> str | None:
    """The installed silero-vad package's weight file, else None."""
    from filters import silero_model
    try:
        return str(silero_model.packaged_weights())
    except FileNotFoundError:
        return None


FILTER = FilterSpec(
    name=NAME, columns=("speech", "speech_run_s"),
    bounds=(Bound("speech", "max", "max", 0.5), Bound("speech_run_s", "run_max", "max")),
    run=run, needs_audio=True, gates=False, clip_max=True,
    # Silero's 16-kHz network, ~0.68 M multiply-adds per 32-ms step: ~0.13 GFLOP per 3-s
    # window, after the arithmetic filters and far before CLIP (~59)
    cost=0.13,
    params={"speech_prob": SPEECH_PROB, "steps": "one pass per segment; steps centred in the window"},
    # MIT: its row in the weights table (curate.config.weights, `curate models list`)
    model=ModelSpec("silero", "speech_checkpoint", load, default_weights=packaged, shipped=True),
    doc="speech fraction and longest speech run per window (Silero VAD, real weights)")
