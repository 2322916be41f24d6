"""Generated media shared by tests: frame index encoded as brightness, audio bursts at known times."""
from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np


def brightness(i: int) -> int:
    """Grey level of source frame i (frame index encoded as brightness; 60 frames at most).

    Steps of 4: the RGB -> yuv420p -> RGB round trip moves a flat grey by up to ~1 level."""
    return 16 + 4 * i


def make_av(path: Path, duration: float, fps: int, size: tuple[int, int] = (160, 120),
            burst: tuple[float, float] | None = None, sr: int = 16000,
            one_keyframe: bool = False) -> Path:
    """mp4 whose frame i is uniformly grey at brightness(i); audio is silent except a 1-kHz
    burst in ``burst`` (seconds). ``one_keyframe``: any cut must decode from frame 0."""
    n = int(round(duration * fps))
    w, h = size
    frames = np.stack([np.full((h, w, 3), brightness(i), np.uint8) for i in range(n)])
    t = np.arange(int(round(duration * sr))) / sr
    audio = np.zeros_like(t)
    if burst is not None:
        on = (t >= burst[0]) & (t < burst[1])
        audio[on] = 0.5 * np.sin(2 * np.pi * 1000 * t[on])
    wav = path.with_suffix(".wav")
    with wave.open(str(wav), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sr)
        f.writeframes((audio * 32767).astype("<i2").tobytes())
    gop = ["-g", "10000"] if one_keyframe else []
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
           "-i", str(wav), "-c:v", "libx264", *gop, "-crf", "10", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-b:a", "128k", "-shortest", str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
    wav.unlink()
    return path
