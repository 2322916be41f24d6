"""Generated media shared by tests: frame index encoded as brightness, audio bursts at known times."""
from __future__ import annotations

import subprocess
import wave
from fractions import Fraction
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
    wav = write_wav(path.with_suffix(".wav"), audio, sr)
    gop = ["-g", "10000"] if one_keyframe else []
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
           "-i", str(wav), "-c:v", "libx264", *gop, "-crf", "10", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-b:a", "128k", "-shortest", str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
    wav.unlink()
    return path


# ---------------------------------------------------------------- flash / beep sources

FLASH_W, FLASH_H = 64, 48     # tiny frames: encoding 45 s takes well under a second


def frame_times(fps: str, n: int, vfr: bool = False) -> list:
    """Presentation times (Fractions) of frames 0..n-1: ``fps`` is a rational like
    ``30000/1001``; ``vfr`` drops every frame k with k % 3 == 1 (durations alternate
    2 and 1 periods: a variable rate)."""
    from fractions import Fraction
    step = 1 / Fraction(fps)
    return [k * step for k in range(n) if not (vfr and k % 3 == 1)]


def make_flash_beep(path: Path, fps: str, sr: int, duration: float = 20.0,
                    events_every: float = 0.7, gop: int = 120, vfr: bool = False,
                    audio_delay: float = 0.0, flash_frames: int = 2) -> list[float]:
    """mp4 (H.264 + AAC) of a black frame with a white disc on the event frames and a 40-ms
    1-kHz beep starting at each event frame's instant (the truth: 0 ms offset). Keyframes
    every ``gop`` frames (no scene-cut keyframes). ``audio_delay``: the audio stream starts
    that much later than the video (its first sample at ``audio_delay`` s), the beeps stay
    on their frame instants. Returns the event (flash) times in seconds."""
    import math
    from fractions import Fraction
    rate = Fraction(fps)
    n = int(math.ceil(duration * float(rate)))     # frames of the constant-rate input
    times = frame_times(fps, n)
    kept = set(range(n)) if not vfr else {k for k in range(n) if k % 3 != 1}
    ev, next_t = [], max(Fraction(events_every) / 2, Fraction(audio_delay) + Fraction(1, 10))
    for k, t in enumerate(times):
        if t >= next_t and k + flash_frames < n and k in kept:
            ev.append(k)
            next_t = t + Fraction(events_every)
    lit = {k + j for k in ev for j in range(flash_frames)}
    yy, xx = np.mgrid[:FLASH_H, :FLASH_W]
    disc = ((yy - FLASH_H / 2) ** 2 + (xx - FLASH_W / 2) ** 2) < (FLASH_H / 3) ** 2
    dark = np.zeros((FLASH_H, FLASH_W, 3), np.uint8)
    white = dark.copy()
    white[disc] = 255
    frames = b"".join((white if k in lit else dark).tobytes() for k in range(n))
    end = float(times[-1] + 1 / rate)
    na = int(round((end - audio_delay) * sr))
    audio = np.zeros(na)
    for k in ev:
        i0 = int(round((float(times[k]) - audio_delay) * sr))
        m = int(round(0.040 * sr))
        audio[i0:i0 + m] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(m) / sr)
    wav = write_wav(path.with_suffix(".wav"), audio, sr)
    vin = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{FLASH_W}x{FLASH_H}",
           "-r", str(rate), "-i", "-"]
    vf = []
    if vfr:
        # the frames of frame_times(vfr=True), each at its own instant
        vf = ["-vf", "select='not(eq(mod(n\\,3)\\,1))'", "-fps_mode", "passthrough",
              "-video_track_timescale", str(rate.numerator)]
    ain = (["-itsoffset", f"{audio_delay:.6f}"] if audio_delay else []) + ["-i", str(wav)]
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *vin, *ain,
           "-map", "0:v", "-map", "1:a", *vf,
           "-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop), "-keyint_min", str(gop),
           "-sc_threshold", "0", "-bf", "2", "-crf", "20", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-b:a", "96k", str(path)]
    subprocess.run(cmd, input=frames, check=True, capture_output=True)
    wav.unlink()
    return [float(times[k]) for k in ev]


def onsets(path_or_bytes, thresh_video: float = 60.0, thresh_audio: float = 0.3,
           start: float | None = None, end: float | None = None) -> tuple[list[float], list[float]]:
    """(flash onsets, beep onsets) in seconds on the file's own clock, as a player shows
    them: a frame's pts after edit lists; an audio sample's time = its decoded frame's pts
    (encoder delay dropped by the decoder) + index / rate. Only onsets in [start, end).
    The audio threshold is 60% of the beep's 0.5 peak: AAC pre-echo (a 1024-sample frame is
    64 ms at 16 kHz) reaches ~0.2 up to a few ms before the beep; the 1-kHz sine passes 0.3
    0.1 ms after its start."""
    import io
    import av
    def src():
        return io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else str(path_or_bytes)
    flashes, beeps = [], []
    with av.open(src()) as c:
        v = c.streams.video[0]
        prev = None          # an onset needs a dark frame before it (not the file's first)
        for fr in c.decode(v):
            on = bool(fr.to_ndarray(format="gray").mean() > thresh_video * (1 / 3))
            if on and prev is False:
                flashes.append(float(fr.pts * v.time_base))
            prev = on
    with av.open(src()) as c:
        a = c.streams.audio[0]
        quiet_from = None    # an onset needs >= 20 ms of quiet before it
        for fr in c.decode(a):
            x = fr.to_ndarray()
            x = np.abs(x).max(axis=0) if x.ndim == 2 else np.abs(x)
            t0 = float(fr.pts * a.time_base)
            if quiet_from is None:
                quiet_from = t0
            for i in np.flatnonzero(x > thresh_audio):
                t = t0 + i / fr.sample_rate
                if t - quiet_from > 0.02:
                    beeps.append(t)
                quiet_from = t + 1 / fr.sample_rate
    keep = (lambda t: (start is None or t >= start - 1e-6) and (end is None or t < end))
    return [t for t in flashes if keep(t)], [t for t in beeps if keep(t)]


def pair_offsets_ms(flashes: list[float], beeps: list[float]) -> list[float]:
    """beep - flash (ms) for every flash, paired with the nearest beep (within 0.2 s)."""
    out = []
    for f in flashes:
        near = [b for b in beeps if abs(b - f) < 0.2]
        out.append(min((b - f for b in near), key=abs) * 1000 if near else float("nan"))
    return out


def index_of(top: float, bottom: float) -> int:
    """Frame index from the two half-frame grey levels written by ``make_clip``."""
    return int(round((top - 16) / 4)) + 50 * int(round((bottom - 16) / 4))


def make_clip(path: Path, duration: float, fps: str, sr: int = 16000, channels: int = 1,
              size: tuple[int, int] = (192, 128), pns: bool = True) -> Path:
    """mp4 (H.264 + AAC). Video frame i: top half grey 16 + 4 (i % 50), bottom half
    16 + 4 (i // 50). Audio: 440 Hz left (or mono) and 1320 Hz right, a click every 0.1 s.
    ``pns``: the AAC encoder's perceptual noise substitution (its default: on)."""
    rate = Fraction(fps)
    n = int(duration * rate)
    w, h = size
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, : h // 2] = 16 + 4 * (i % 50)
        frames[i, h // 2:] = 16 + 4 * (i // 50)
    t = np.arange(int(duration * sr)) / sr
    click = (np.mod(t, 0.1) < 0.002).astype(np.float64)
    chans = [0.3 * np.sin(2 * np.pi * 440 * t) + 0.5 * click,
             0.3 * np.sin(2 * np.pi * 1320 * t)][:channels]
    pcm = (np.stack(chans, 1) * 32767).astype("<i2")
    raw = path.with_suffix(".pcm")
    raw.write_bytes(pcm.tobytes())
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", fps, "-i", "-",
           "-f", "s16le", "-ar", str(sr), "-ac", str(channels), "-i", str(raw),
           "-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p", "-g", "12",
           "-c:a", "aac", "-b:a", "128k", *([] if pns else ["-aac_pns", "0"]), "-shortest", str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
    raw.unlink()
    return path


def demo_sources(root: Path, n_videos: int, seed: int) -> Path:
    """The demo corpus (``curate.demo.synth.synthesize``) in ``root`` and its sources CSV with
    absolute paths (``root/abs_sources.csv``), usable from any working folder."""
    import csv
    from curate.demo.synth import synthesize

    synthesize(root, n_videos=n_videos, seed=seed)
    with open(root / "sources.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["path"] = str(root / r["path"])
    src = root / "abs_sources.csv"
    with open(src, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return src


def write_wav(path: Path, audio: np.ndarray, sr: int) -> Path:
    """Mono 16-bit PCM of ``audio`` (floats in [-1, 1])."""
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sr)
        f.writeframes((audio * 32767).astype("<i2").tobytes())
    return path


def event_video_copies(folder: Path, n: int) -> list[str]:
    """``n`` copies of one 3-s 96x64 event video, ``v00.mp4`` .. (the throttle tests' media);
    returns their ids."""
    import shutil
    from curate.demo.synth import make_event_video

    folder.mkdir(parents=True, exist_ok=True)
    make_event_video(folder / "v00.mp4", duration=3.0, size=(96, 64), event_times=[1.0], seed=0)
    for i in range(1, n):
        shutil.copyfile(folder / "v00.mp4", folder / f"v{i:02d}.mp4")
    return [f"v{i:02d}" for i in range(n)]


def served_sources_csv(path: Path, server, ids: list[str], end: float = 3) -> Path:
    """A sources CSV of ``<id>.mp4`` on ``server`` (a ``LoopbackServer``), segments [0, end)."""
    path.write_text("id,url,start,end,label,split\n" + "".join(
        f"{i},{server.url(f'{i}.mp4')},0,{end:g},x,train\n" for i in ids))
    return path


# ---------------------------------------------------------------- what the audio holds (issue 26)

#: sentences espeak-ng reads for the speech tests (about 2.5 words a second, few pauses)
SPEECH_TEXT = ("The weather today is bright and clear, and the market by the river is full of "
               "people buying bread, fruit and fresh fish from the morning boats. ")


def espeak(text: str, sr: int) -> np.ndarray:
    """Mono float speech of ``text`` made locally by espeak-ng (Debian package, installed by
    ``scripts/setup.sh --test``), resampled to ``sr`` by ffmpeg, peak-normalised to 1."""
    import shutil
    import tempfile

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (bash scripts/setup.sh --test installs it)")
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "s.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), text], check=True,
                       capture_output=True)
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), "-ar", str(sr), "-ac", "1",
                              "-f", "f32le", "-"], check=True, capture_output=True).stdout
    x = np.frombuffer(raw, np.float32).astype(np.float64)
    return x / max(np.abs(x).max(), 1e-9)


def mux_audio(path: Path, audio: np.ndarray, sr: int, codec: str = "aac",
              size: tuple[int, int] = (96, 64), fps: int = 12, out_sr: int | None = None) -> Path:
    """A video (a grey square drifting over a still noise texture: one shot) with ``audio`` (float ``[N]`` or
    ``[N, C]`` in [-1, 1], written as 16-bit) as its sound. ``codec``: ``aac`` (mp4, 192 kb/s)
    or ``pcm`` (mov, lossless 16-bit: the exact samples come back). ``out_sr``: ffmpeg
    resamples the sound to this rate in the file (an upsampled source)."""
    audio = np.asarray(audio, np.float64)
    audio = audio[:, None] if audio.ndim == 1 else audio
    n = int(np.ceil(len(audio) / sr * fps))
    w, h = size
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(60, 90, (1, h, w, 3), dtype=np.uint8), n, axis=0)
    for i in range(n):
        x = (2 * i) % (w - 16)
        frames[i, 20:36, x:x + 16] = 200
    raw = path.with_suffix(".s16")
    raw.write_bytes(np.round(np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    acodec = ["-c:a", "aac", "-b:a", "192k"] if codec == "aac" else ["-c:a", "pcm_s16le"]
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
           "-f", "s16le", "-ar", str(sr), "-ac", str(audio.shape[1]), "-i", str(raw),
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
           *acodec, *(["-ar", str(out_sr)] if out_sr else []), "-shortest", str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
    raw.unlink()
    return path


def audio_kinds(sr: int, seconds: float = 6.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Mono test sounds of ``seconds``, by kind: espeak speech alone at two levels and over
    a tone and a noise bed (``speech_*``), and ``tone``, ``noise``, ``clicks``, ``silence``."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    speech = np.resize(espeak(SPEECH_TEXT, sr), n)   # repeated to fill the span
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    noise = rng.normal(0, 0.1, n)
    clicks = np.zeros(n)
    for c in np.arange(0.05, seconds, 0.25):
        i = int(c * sr)
        clicks[i:i + int(0.003 * sr)] = 0.8
    return {"speech_loud": 0.7 * speech, "speech_quiet": 0.1 * speech,
            "speech_over_tone": 0.5 * speech + 0.5 * tone,
            "speech_over_noise": 0.5 * speech + 0.5 * noise,
            "tone": tone, "noise": noise, "clicks": clicks, "silence": np.zeros(n)}


def make_burst_clip(path: Path, duration: float = 5.0, burst: int = 10, period: int = 30) -> Path:
    """Variable-frame-rate mp4 as some uploads are: of every ``period`` frames of a 30-fps
    test pattern only the first ``burst`` are kept, on their own times (frames in bursts, then
    a gap). FFmpeg's guessed rate (r_frame_rate) is 30, the average rate about
    ``30 * burst / period``; 16-kHz AAC 440 Hz tone for ``duration`` s."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=30:duration={duration}",
           "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={duration}",
           "-vf", f"select='lt(mod(n\\,{period})\\,{burst})'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return path
