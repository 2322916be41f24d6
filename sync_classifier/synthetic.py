"""Generated audio-visual media with events at random times (a flash and a click together).

Each source has a static random texture; at each event time the picture brightens (a disc
at a random place plus a global lift) and decays linearly over ``FLASH_DECAY`` seconds, and
the audio carries a decaying noise burst. Event gaps are random (not periodic), so a
shifted pair is distinguishable from the synchronised one, and the flash decay encodes
sub-frame timing at 6 fps. ``event_grid`` builds a ``decoding.media.Grid`` in memory at
``DECODE_FPS``; ``write_event_mp4`` writes the same as H.264/AAC with ffmpeg (for tests that
exercise decoding), recording the event times next to the file.
"""
from __future__ import annotations

import json
import random
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from decoding.media import Grid
from sync_classifier.data import DECODE_FPS, SAMPLE_RATE

FLASH_DECAY = 0.3     # seconds for a flash to fade
CLICK_LEN = 0.05      # seconds of noise burst
MIN_GAP = 0.35        # seconds between events
MEAN_GAP = 0.8


def event_times(rng: random.Random, duration: float) -> list[float]:
    """Random event onsets in [0, duration): gaps MIN_GAP + exponential(MEAN_GAP - MIN_GAP)."""
    t, out = rng.uniform(0, MEAN_GAP), []
    while t < duration:
        out.append(round(t, 4))
        t += MIN_GAP + rng.expovariate(1.0 / (MEAN_GAP - MIN_GAP))
    return out


def render(events: list[float], duration: float, fps: float, size: int, seed: int,
           sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 ``[T, size, size, 3]`` (frame i at i / fps) and mono float32 audio."""
    g = np.random.default_rng(seed)
    base = g.uniform(0.1, 0.45, size=(size // 8 + 1, size // 8 + 1, 3))
    base = np.kron(base, np.ones((8, 8, 1)))[:size, :size]
    yy, xx = np.mgrid[0:size, 0:size] / size
    n = int(round(duration * fps))
    frames = np.empty((n, size, size, 3), np.uint8)
    ev = np.asarray(events, np.float64)
    centres = g.uniform(0.25, 0.75, size=(len(ev), 2))
    for i in range(n):
        t = i / fps
        img = base.copy()
        age = t - ev
        live = np.nonzero((age >= 0) & (age < FLASH_DECAY))[0]
        for k in live:
            a = 1.0 - age[k] / FLASH_DECAY
            disc = ((yy - centres[k, 0]) ** 2 + (xx - centres[k, 1]) ** 2) < 0.04
            img = img + a * (0.15 + 0.5 * disc[..., None])
        img = img + g.normal(0, 0.02, size=img.shape)
        frames[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    ns = int(round(duration * sample_rate))
    audio = g.normal(0, 0.01, ns)
    cl = int(CLICK_LEN * sample_rate)
    env = np.exp(-np.arange(cl) / (0.2 * cl))
    for t0 in events:
        j = int(round(t0 * sample_rate))
        m = min(cl, ns - j)
        if m > 0:
            audio[j:j + m] += 0.6 * env[:m] * g.normal(0, 1, m)
    return frames, np.clip(audio, -1, 1).astype(np.float32)


def event_grid(rng: random.Random, duration: float = 8.0, size: int = 64,
               fps: int = DECODE_FPS) -> tuple[Grid, list[float]]:
    """An in-memory source (Grid at ``fps``, 16 kHz) and its event times."""
    events = event_times(rng, duration)
    frames, audio = render(events, duration, fps, size, seed=rng.randrange(2 ** 31))
    return Grid(frames=frames, audio_channels=audio[None], start=0.0, fps=fps,
                sample_rate=SAMPLE_RATE), events


def make_grid_factory(duration: float = 8.0, size: int = 64):
    """``make(index, rng) -> Grid`` for ``data.GeneratedClipDataset``."""
    def make(_index: int, rng: random.Random) -> Grid:
        return event_grid(rng, duration, size)[0]
    return make


def write_event_mp4(path: str | Path, seed: int, duration: float = 8.0, size: int = 128,
                    fps: int = DECODE_FPS, audio_shift: float = 0.0) -> list[float]:
    """Write an H.264/AAC mp4 with events; ``audio_shift`` > 0 delays the audio (for tests).

    The event times (video) are written to ``<path>.json``; returns them.
    """
    path = Path(path)
    rng = random.Random(seed)
    events = event_times(rng, duration)
    frames, _ = render(events, duration, fps, size, seed=seed)
    _, audio = render([t + audio_shift for t in events], duration, fps, 8, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "a.wav"
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes((audio * 32767).astype("<i2").tobytes())
        cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{size}x{size}", "-r", str(fps), "-i", "-", "-i", str(wav),
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-g", str(fps),
               "-c:a", "aac", "-b:a", "128k", "-shortest", str(path)]
        subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
    path.with_suffix(path.suffix + ".json").write_text(
        json.dumps({"events": events, "audio_shift": audio_shift, "duration": duration}))
    return events
