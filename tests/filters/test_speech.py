"""Speech filter (issue 26): Silero VAD with its real pretrained weights (MIT, shipped inside
the silero-vad package), on speech made locally by espeak-ng and mixed into generated
videos, against tones, noise, clicks and silence."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from decoding.media import decode_grid
from filters import silero_model, speech
from tests.avmedia import audio_kinds, espeak, mux_audio, SPEECH_TEXT

SPEECH_KINDS = ("speech_loud", "speech_quiet", "speech_over_tone", "speech_over_noise")
OTHER_KINDS = ("tone", "noise", "clicks", "silence")
#: 3-s windows every 0.5 s over the 6-s videos (the recipes' window grid)
WINDOWS = [(s / 2, s / 2 + 3.0) for s in range(7)]


@pytest.fixture(scope="module")
def scorer():
    return speech.SpeechScorer.from_checkpoint()


@pytest.fixture(scope="module")
def fractions(tmp_path_factory, scorer):
    """{kind: [speech fraction of each window]} of the generated videos (AAC, 48 kHz)."""
    d = tmp_path_factory.mktemp("speech")
    out = {}
    for kind, audio in audio_kinds(48000).items():
        g = decode_grid(mux_audio(d / f"{kind}.mp4", audio, 48000))
        probs = scorer.speech_probs(g.audio, g.sample_rate)
        out[kind] = [speech.window_scores(probs, s, e) for s, e in WINDOWS]
    return out


def test_espeak_windows_read_speech_and_the_others_none(fractions):
    for kind in SPEECH_KINDS:
        assert all(f > 0.5 for f, _ in fractions[kind]), (kind, fractions[kind])
        assert max(r for _, r in fractions[kind]) > 1.0          # a run of over a second
    for kind in OTHER_KINDS:
        assert all(f < 0.1 for f, _ in fractions[kind]), (kind, fractions[kind])


def _jit_reference(audio: np.ndarray) -> tuple[np.ndarray, torch.jit.ScriptModule]:
    """The package's own TorchScript model run the way its README runs it: 512 samples at a
    time, its state carried between calls (a test-only reference: we never load it)."""
    jit = torch.jit.load(str(silero_model.packaged_weights().parent / "silero_vad.jit"))
    jit.reset_states()
    with torch.no_grad():
        return np.array([jit(torch.from_numpy(audio[i:i + 512]), 16000).item()
                         for i in range(0, len(audio), 512)]), jit


def _jit_state_dict(jit) -> dict[str, torch.Tensor]:
    p = {**dict(jit._model.named_parameters()), **dict(jit._model.named_buffers())}
    names = {"stft_conv.weight": "stft.forward_basis_buffer",
             "final_conv.weight": "decoder.decoder.2.weight",
             "final_conv.bias": "decoder.decoder.2.bias"}
    for i in range(4):
        for w in ("weight", "bias"):
            names[f"conv{i + 1}.{w}"] = f"encoder.{i}.reparam_conv.{w}"
    for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        names[f"lstm.{w}_l0"] = f"decoder.rnn.{w}"
    return {k: p[v].detach().clone() for k, v in names.items()}


def test_our_network_is_silero_and_the_safetensors_weights_agree_with_the_torchscript():
    """Our module, given the TorchScript file's weights, gives the package's own model's
    probabilities (an independent implementation); with the safetensors file's weights (the
    ones we load) it takes the same speech / no-speech decision on nearly every step."""
    rng = np.random.default_rng(0)
    a = np.concatenate([np.zeros(8000), espeak(SPEECH_TEXT, 16000), rng.normal(0, 0.05, 16000)])
    a = a[: len(a) // 512 * 512].astype(np.float32)
    ref, jit = _jit_reference(a)
    ours = silero_model.SileroVAD()
    ours.load_state_dict(_jit_state_dict(jit))
    with torch.no_grad():
        p = ours.eval()(torch.from_numpy(a)[None])[0].numpy()
    assert np.abs(p - ref).max() < 1e-4
    shipped = speech.SpeechScorer.from_checkpoint().speech_probs(a, 16000)
    agree = np.mean((shipped >= 0.5) == (ref >= 0.5))
    assert agree > 0.95 and 0.3 < np.mean(ref >= 0.5) < 0.95, agree


def test_window_scores_fraction_and_longest_run():
    probs = np.array([0.9, 0.9, 0.1, 0.7, 0.7, 0.7, 0.2, 0.5])       # 32-ms steps
    step = speech.STEP_SECONDS
    frac, run = speech.window_scores(probs, 0.0, len(probs) * step)
    assert frac == 6 / 8 and run == pytest.approx(3 * step)
    frac, run = speech.window_scores(probs, 2 * step, 3 * step)     # the one 0.1 step
    assert frac == 0.0 and run == 0.0
    with pytest.raises(ValueError, match="no 32-ms speech step"):
        speech.window_scores(probs, 1.0, 2.0)


def test_loading_reads_tensors_only_and_leaves_the_thread_count_alone(tmp_path):
    """The package is never imported (its import sets torch to one thread); a missing or
    foreign weight file is a clear error naming the option."""
    code = ("import sys, torch; torch.set_num_threads(3)\n"
            "from filters.speech import SpeechScorer\n"
            "SpeechScorer.from_checkpoint()\n"
            "assert 'silero_vad' not in sys.modules, 'package imported'\n"
            "print(torch.get_num_threads())\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "3", res.stderr[-2000:]
    with pytest.raises(FileNotFoundError, match="--speech-checkpoint"):
        silero_model.load_silero(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not tensors")
    with pytest.raises(ValueError, match="--speech-checkpoint"):
        silero_model.load_silero(tmp_path / "bad.safetensors")
    from safetensors.torch import save_file
    save_file({"conv1.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="do not fit Silero"):
        silero_model.load_silero(tmp_path / "other.safetensors")


PROBS_SCRIPT = """
import sys
import numpy as np
from curate.ops.scoring import deterministic_torch
from filters.speech import SpeechScorer
from tests.avmedia import espeak, SPEECH_TEXT
deterministic_torch()
a = np.concatenate([espeak(SPEECH_TEXT, 16000), np.zeros(4000)]).astype(np.float32)
sys.stdout.write(SpeechScorer.from_checkpoint().speech_probs(a, 16000).tobytes().hex())
"""


def test_speech_probabilities_are_the_same_bits_on_one_thread_or_several():
    """As every score (``scoring.deterministic_torch``): a scoring worker on one CPU and one
    on several give the same bits, not only the same decisions."""
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    got = {}
    for n in (1, 3):
        env = {**os.environ, "OMP_NUM_THREADS": str(n), "PYTHONPATH": str(repo)}
        res = subprocess.run([sys.executable, "-c", PROBS_SCRIPT], env=env, cwd=str(repo),
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        got[n] = np.frombuffer(bytes.fromhex(res.stdout), np.float32)
    assert got[1].size > 100 and (got[1] >= 0.5).mean() > 0.5
    assert got[1].tobytes() == got[3].tobytes()
