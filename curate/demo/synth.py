"""Synthetic audio-visual corpus with recorded truth (DESIGN section 10).

Every video is drawn with numpy, piped as raw RGB to one ffmpeg call that also muxes a
WAV written with the ``wave`` module, so the corpus needs nothing but ffmpeg. The truth
of each file (cuts, static, silent, event times, audio offset) is written to
``truth.json`` beside it, so each filter's decision can be asserted in tests.

Kinds (the truth) and what they are made of:

- ``flash_click``: moving texture; a bright disc flashes at random event times
  (every 0.5-1.5 s) and a short beep sounds at the same instants.
- ``flash_click_shifted``: the same with the audio shifted by +-``SHIFT_S`` (``audio_offset``).
- ``drum``: moving texture; a disc pulses on each beat of a steady tempo, a kick drum
  sounds on the beat.
- ``hard_cuts``: 3 or 4 distinct scenes (palette, texture, direction, tone) with hard cuts
  at recorded times.
- ``tone_motion``: moving texture with a continuous siren tone (no discrete events).
- ``static_tone``: a perfectly static frame with an audible tone (fails pixel_diff).
- ``silent_motion``: moving texture with digital silence (fails amplitude).

Conventions: ``event_times`` are the visual event times in seconds; the matching sounds
are at ``event_times + audio_offset`` (a positive offset means the audio is late). A shifted
video is a true shift of a longer recording: sounds whose flash lies before 0 or after the
end still sound inside the file, as they would in a real out-of-sync upload.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import subprocess
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from manifests.atomic import write_text
from curate.ops.encoding import encode_args

log = logging.getLogger(__name__)

FPS = 24
SIZE = (320, 240)          # width, height
SAMPLE_RATE = 44100
AUDIO_CHANNELS = 2

#: flash / pulse disc: radius as a fraction of the frame height, and the blend towards white.
#: Kept small enough that a flash neither pushes pixel_diff past 0.15 nor looks like a cut
#: to a content detector (it covers ~8% of the frame).
DISC_RADIUS = 0.18
FLASH_GAIN = 0.9
FLASH_SECONDS = 0.125       # 3 frames at 24 fps: always seen by the 12-fps analysis grid

#: the size of a ``flash_click_shifted`` video's shift (its sign is drawn). Chosen so that both
#: sync models can find it and repair can undo it: a Synchformer class centre (its 21 classes
#: are 0.2 s apart) on the paper's classifier's 0.04-s grid, inside its +-0.6-s search and not
#: at its edge, and well past the 0.25-s shift the demo classifier was trained to reject (its
#: sync gate passes few windows at 0.4 s; at 0.2 s up to 6 of a video's 15).
SHIFT_S = 0.4

KINDS = ("flash_click", "flash_click_shifted", "drum", "hard_cuts", "tone_motion",
         "static_tone", "silent_motion")

#: labels (dataset classes) and the kind of each of their videos, in order. Each class has
#: mostly "good" videos and a few of the failures real classes contain (a still image with
#: music, a muted clip, audio out of sync).
LABEL_KINDS: dict[str, tuple[str, ...]] = {
    "flash click": ("flash_click", "flash_click_shifted", "flash_click", "flash_click",
                    "static_tone", "flash_click", "flash_click_shifted", "flash_click"),
    "drum beat": ("drum", "silent_motion", "drum", "drum", "drum", "static_tone", "drum",
                  "silent_motion"),
    "scene change": ("hard_cuts", "static_tone", "hard_cuts", "hard_cuts", "silent_motion",
                     "hard_cuts", "hard_cuts", "flash_click_shifted"),
    "siren": ("tone_motion", "static_tone", "tone_motion", "silent_motion", "tone_motion",
              "tone_motion", "static_tone", "tone_motion"),
}
LABELS: list[str] = list(LABEL_KINDS)
#: index within a label -> test split (2 of every 8, i.e. 75/25)
TEST_SLOTS = (2, 6)


@dataclass
class VideoSpec:
    """Everything needed to render one video, and its truth."""
    id: str
    label: str
    kind: str
    split: str
    seed: int
    duration: float
    fps: int = FPS
    size: tuple[int, int] = SIZE
    cuts: list[float] = field(default_factory=list)
    event_times: list[float] = field(default_factory=list)
    audio_event_times: list[float] = field(default_factory=list)
    audio_offset: float = 0.0

    @property
    def static(self) -> bool:
        return self.kind == "static_tone"

    @property
    def silent(self) -> bool:
        return self.kind == "silent_motion"

    def truth(self) -> dict:
        return {
            "id": self.id, "label": self.label, "kind": self.kind, "split": self.split,
            "path": f"videos/{self.id}.mp4", "duration": self.duration,
            "cuts": self.cuts, "static": self.static, "silent": self.silent,
            "event_times": self.event_times, "audio_event_times": self.audio_event_times,
            "audio_offset": self.audio_offset, "fps": self.fps, "size": list(self.size),
            "sample_rate": SAMPLE_RATE, "audio_channels": AUDIO_CHANNELS, "seed": self.seed,
        }


# --------------------------------------------------------------------------- pictures

def _texture(rng: np.random.Generator, h: int, w: int, corr: float) -> np.ndarray:
    """Periodic smooth noise in [0, 1], float32 [h, w]: white noise low-passed in Fourier space.

    Periodic, so a scrolling view is taken with modular indices and never runs out.
    ``corr`` is the correlation length in pixels (Gaussian spectrum).
    """
    noise = rng.standard_normal((h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    spectrum = np.exp(-2 * (np.pi * corr) ** 2 * (fx ** 2 + fy ** 2))
    field_ = np.real(np.fft.ifft2(np.fft.fft2(noise) * spectrum))
    field_ = (field_ - field_.mean()) / (field_.std() + 1e-9)
    return np.clip(0.5 + 0.2 * field_, 0.0, 1.0).astype(np.float32)


@dataclass
class _Scene:
    """A scrolling textured scene: a coloured periodic tile and a velocity (pixels per second).

    The tile is stored padded by one frame size with its own wrap-around, so every
    frame is a plain slice (no per-pixel indexing): rendering stays cheap.
    """
    tile: np.ndarray            # uint8 [th + h, tw + w, 3]
    period: tuple[int, int]     # (th, tw)
    size: tuple[int, int]       # (w, h)
    velocity: tuple[float, float]

    @classmethod
    def random(cls, rng: np.random.Generator, size: tuple[int, int], moving: bool = True,
               hue: float | None = None) -> "_Scene":
        th, tw = 192, 256
        field_ = _texture(rng, th, tw, corr=float(rng.uniform(6.0, 10.0)))
        hue = float(rng.uniform(0, 1)) if hue is None else hue
        base = _hue_rgb(hue)
        # capped at 0.85 so a white flash is always clearly brighter than the scene
        c0 = (0.1 + 0.25 * base).astype(np.float32)
        c1 = (0.5 + 0.35 * base).astype(np.float32)
        rgb = _to_u8(c0 + (c1 - c0) * field_[..., None])
        w, h = size
        padded = np.take(rgb, np.arange(th + h) % th, axis=0)
        padded = np.take(padded, np.arange(tw + w) % tw, axis=1)
        speed = float(rng.uniform(25.0, 45.0)) if moving else 0.0
        angle = float(rng.uniform(0, 2 * np.pi))
        return cls(np.ascontiguousarray(padded), (th, tw), size,
                   (speed * np.cos(angle), speed * np.sin(angle)))

    def frame(self, t: float) -> np.ndarray:
        """uint8 RGB [H, W, 3] at time t (a view into the tile)."""
        th, tw = self.period
        w, h = self.size
        dy = int(round(self.velocity[1] * t)) % th
        dx = int(round(self.velocity[0] * t)) % tw
        return self.tile[dy:dy + h, dx:dx + w]


def _hue_rgb(h: float) -> np.ndarray:
    """Fully saturated colour of hue h in [0, 1) as RGB in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _disc_mask(size: tuple[int, int]) -> tuple[np.ndarray, tuple[slice, slice]]:
    """The centred disc as an anti-aliased alpha [h', w', 1] over its bounding box."""
    w, h = size
    r = DISC_RADIUS * h
    y0, y1 = max(int((h - 1) / 2 - r - 1), 0), min(int((h - 1) / 2 + r + 2), h)
    x0, x1 = max(int((w - 1) / 2 - r - 1), 0), min(int((w - 1) / 2 + r + 2), w)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    alpha = np.clip(r + 0.5 - d, 0.0, 1.0).astype(np.float32)[..., None]
    return alpha, (slice(y0, y1), slice(x0, x1))


def _flash_envelope(t: np.ndarray, events: Sequence[float], decay: float | None) -> np.ndarray:
    """Flash strength in [0, 1] at frame times t: a box of FLASH_SECONDS, or an exp decay."""
    env = np.zeros_like(t)
    for e in events:
        dt = t - e
        if decay is None:
            env = np.maximum(env, ((dt > -1e-6) & (dt < FLASH_SECONDS - 1e-6)).astype(float))
        else:
            env = np.maximum(env, np.where(dt > -1e-6, np.exp(-np.maximum(dt, 0) / decay), 0.0))
    return env


def _frames(spec: VideoSpec, rng: np.random.Generator):
    """Yield uint8 RGB frames [H, W, 3] of the video."""
    n = int(round(spec.duration * spec.fps))
    times = np.arange(n) / spec.fps
    if spec.kind == "hard_cuts":
        # golden-ratio hue steps: consecutive scenes are >= 0.38 of the hue circle apart
        hues = (rng.uniform(0, 1) + 0.618034 * np.arange(len(spec.cuts) + 1)) % 1.0
        scenes = [_Scene.random(rng, spec.size, hue=float(hh)) for hh in hues]
    else:
        scenes = [_Scene.random(rng, spec.size, moving=not spec.static)]
    decay = 0.1 if spec.kind == "drum" else None
    env = _flash_envelope(times, spec.event_times, decay)
    disc, box = _disc_mask(spec.size)
    for i, t in enumerate(times):
        # cuts sit on frame instants (rounded to 1e-6 s): half a frame of slack
        k = int(np.searchsorted(spec.cuts, t + 0.5 / spec.fps, side="right"))
        # a static video is the same frame, byte for byte
        img = scenes[k].frame(0.0 if spec.static else float(t) - (spec.cuts[k - 1] if k else 0.0))
        if env[i] > 0:
            img = img.copy()
            a = FLASH_GAIN * env[i] * disc
            patch = img[box].astype(np.float32)
            img[box] = np.clip(patch * (1 - a) + 255.0 * a + 0.5, 0, 255).astype(np.uint8)
        yield img


def _to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- sounds

def _beep(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A 40-ms beep with a sharp onset: the audio twin of a flash."""
    f = float(rng.uniform(900.0, 1800.0))
    t = np.arange(int(0.04 * sr)) / sr
    return (0.8 * np.sin(2 * np.pi * f * t) * np.exp(-t / 0.012)).astype(np.float32)


def _kick(sr: int) -> np.ndarray:
    """A kick drum: a sine sweeping 150 -> 50 Hz with a 0.12-s decay."""
    t = np.arange(int(0.3 * sr)) / sr
    freq = 50.0 + 100.0 * np.exp(-t / 0.04)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    return (0.85 * np.sin(phase) * np.exp(-t / 0.12)).astype(np.float32)


def _place(sig: np.ndarray, snd: np.ndarray, times: Sequence[float], sr: int) -> None:
    for e in times:
        i = int(round(e * sr))
        j0, j1 = max(i, 0), min(i + len(snd), len(sig))
        if j1 > j0:
            sig[j0:j1] += snd[j0 - i:j1 - i]


def _audio(spec: VideoSpec, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Float32 [N, channels] in [-1, 1]."""
    n = int(round(spec.duration * sr))
    t = np.arange(n) / sr
    sig = np.zeros(n, np.float32)
    if spec.kind in ("flash_click", "flash_click_shifted"):
        sig += rng.normal(0, 0.004, n).astype(np.float32)       # room noise, far below 0.03
        _place(sig, _beep(rng, sr), spec.audio_event_times, sr)
    elif spec.kind == "drum":
        sig += rng.normal(0, 0.004, n).astype(np.float32)
        _place(sig, _kick(sr), spec.audio_event_times, sr)
    elif spec.kind == "hard_cuts":
        bounds = [0.0, *spec.cuts, spec.duration]
        for a, b in zip(bounds[:-1], bounds[1:]):
            f = float(rng.uniform(200.0, 900.0))
            m = (t >= a) & (t < b)
            sig[m] = 0.3 * np.sin(2 * np.pi * f * t[m]) + rng.normal(0, 0.02, int(m.sum()))
    elif spec.kind == "tone_motion":
        f0, depth, rate = rng.uniform(500, 800), rng.uniform(150, 300), rng.uniform(0.3, 0.8)
        phase = 2 * np.pi * np.cumsum(f0 + depth * np.sin(2 * np.pi * rate * t)) / sr
        sig += (0.3 * np.sin(phase)).astype(np.float32)
    elif spec.kind == "static_tone":
        f = float(rng.uniform(220.0, 660.0))
        sig += (0.3 * np.sin(2 * np.pi * f * t) * (0.8 + 0.2 * np.sin(2 * np.pi * 0.5 * t))
                ).astype(np.float32)
    # silent_motion: digital silence
    sig = np.clip(sig, -1.0, 1.0)
    return np.repeat(sig[:, None], AUDIO_CHANNELS, axis=1)


def _write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(audio.shape[1])
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


# --------------------------------------------------------------------------- encoding

def _encode(spec: VideoSpec, path: Path, rng: np.random.Generator) -> None:
    """Render and mux one video; written to a temp name, then renamed (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = spec.size
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as tmp:
        wav = Path(tmp) / "audio.wav"
        out = Path(tmp) / "video.mp4"
        _write_wav(wav, _audio(spec, rng), SAMPLE_RATE)
        # the pipeline's deterministic encoder arguments (``curate.ops.encoding``): with
        # x264's automatic threads the bytes depended on the CPUs the process may use (its
        # affinity mask: 1 or 2 cores gave different files), so a corpus generated in another
        # environment differed; one encoder thread and bitexact muxing make it the same file
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", str(spec.fps),
               "-i", "pipe:0", "-i", str(wav), "-map", "0:v:0", "-map", "1:a:0",
               *encode_args(crf=20, preset="veryfast", audio_bitrate="128k"), "-g", str(2 * spec.fps),
               "-t", f"{spec.duration:.3f}", "-movflags", "+faststart", str(out)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for frame in _frames(spec, rng):
                proc.stdin.write(frame.tobytes())
        except BrokenPipeError:
            pass   # ffmpeg died; its stderr says why
        finally:
            proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed for {path.name}: {err.strip()[-500:]}")
        os.replace(out, path)


def _events(rng: np.random.Generator, t0: float, t1: float, lo: float = 0.5,
            hi: float = 1.5) -> list[float]:
    """Random event times in [t0, t1) with gaps uniform in [lo, hi]."""
    out, t = [], t0 + float(rng.uniform(0.0, hi))
    while t < t1:
        out.append(t)
        t += float(rng.uniform(lo, hi))
    return out


def _on_frames(times: Sequence[float], fps: int) -> list[float]:
    """Snap times to frame instants, so a flash starts exactly when its sound does."""
    return [round(round(t * fps) / fps, 6) for t in times]


def make_spec(vid: str, label: str, kind: str, split: str, seed: int,
              duration: float = 10.0) -> VideoSpec:
    """Draw the random truth (events, offset, cuts) of one video from its own seed."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")
    rng = np.random.default_rng([seed, 1])
    spec = VideoSpec(vid, label, kind, split, seed, duration)
    if kind in ("flash_click", "flash_click_shifted"):
        if kind == "flash_click_shifted":
            spec.audio_offset = float(rng.choice([-1, 1])) * SHIFT_S
            rng.uniform(0.5, 1.0)   # the draw of the former random size: same events as before
        events = _on_frames(_events(rng, -2.0, duration + 2.0), FPS)
        spec.event_times = [e for e in events if 0.0 <= e < duration]
        spec.audio_event_times = [round(e + spec.audio_offset, 6) for e in events
                                  if 0.0 <= e + spec.audio_offset < duration]
    elif kind == "drum":
        period = 60.0 / float(rng.uniform(80.0, 140.0))
        first = float(rng.uniform(0.1, period))
        beats = _on_frames(list(np.arange(first, duration, period)), FPS)
        spec.event_times = beats
        spec.audio_event_times = list(beats)
    elif kind == "hard_cuts":
        n_cuts = int(rng.integers(2, 4))
        shot = duration / (n_cuts + 1)
        # jitter each cut by +-15% of a shot: every shot keeps >= 70% of the mean length
        cuts = [(k + 1) * shot + float(rng.uniform(-0.15, 0.15)) * shot for k in range(n_cuts)]
        spec.cuts = _on_frames(cuts, FPS)
    return spec


def corpus_specs(n_videos: int = 32, seed: int = 0, duration: float = 10.0) -> list[VideoSpec]:
    """The corpus plan: labels round-robin, kinds per LABEL_KINDS, 2 of 8 per label in test."""
    specs = []
    for i in range(n_videos):
        label = LABELS[i % len(LABELS)]
        j = i // len(LABELS)
        kinds = LABEL_KINDS[label]
        kind = kinds[j % len(kinds)]
        split = "test" if j % len(kinds) in TEST_SLOTS else "train"
        specs.append(make_spec(f"synth{i:04d}", label, kind, split,
                               seed=seed * 100003 + i, duration=duration))
    return specs


def render(spec: VideoSpec, path: str | os.PathLike) -> Path:
    """Render one spec to ``path`` (mp4)."""
    path = Path(path)
    _encode(spec, path, np.random.default_rng([spec.seed, 2]))
    return path


def make_event_video(path: str | os.PathLike, duration: float, event_times: Sequence[float],
                     audio_offset: float = 0.0, fps: int = FPS,
                     size: tuple[int, int] = SIZE, seed: int = 0,
                     kind: str = "flash_click") -> dict:
    """A flash/beep (or drum, ``kind="drum"``) video with flashes at ``event_times``.

    Sounds are at ``event_times + audio_offset``; pass events outside [0, duration) to get
    sounds whose flash is off-screen (a true shift). Event times are snapped to frame
    instants (1/fps) so a flash starts exactly with its sound. Returns the truth dict.
    """
    if kind not in ("flash_click", "drum"):
        raise ValueError("make_event_video draws kind 'flash_click' or 'drum'")
    events = _on_frames([float(e) for e in event_times], int(fps))
    spec = VideoSpec(Path(path).stem, "", kind, "", seed, float(duration), int(fps),
                     (int(size[0]), int(size[1])))
    spec.event_times = [e for e in events if 0.0 <= e < duration]
    spec.audio_event_times = [round(e + audio_offset, 6) for e in events
                              if 0.0 <= e + audio_offset < duration]
    spec.audio_offset = float(audio_offset)
    if audio_offset and kind == "flash_click":
        spec.kind = "flash_click_shifted"
    render(spec, path)
    return spec.truth()


def synthesize(out_dir: str | os.PathLike, n_videos: int = 32, seed: int = 0,
               duration: float = 10.0, url_base: str | None = None) -> dict:
    """Write ``videos/<id>.mp4``, ``truth.json`` and ``sources.csv`` under ``out_dir``.

    ``sources.csv`` is in the generic source format ``id,url,start,end,label,split`` with
    ``url = url_base + <id>.mp4`` when ``url_base`` is given, else ``id,path,...`` with
    paths relative to ``out_dir``; start 0, end = whole seconds of ``duration``. Returns
    the truth dict (also written to truth.json) with the paths of both files added.
    """
    if n_videos < 1 or duration < 1:
        raise ValueError("n_videos must be >= 1 and duration >= 1 s")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    specs = corpus_specs(n_videos, seed, duration)
    for s in specs:
        render(s, out / "videos" / f"{s.id}.mp4")
        log.debug("synth: wrote %s (%s)", s.id, s.kind)
    truth = {"seed": seed, "duration": duration, "labels": LABELS,
             "videos": [s.truth() for s in specs]}
    _write_text_atomic(out / "truth.json", json.dumps(truth, indent=1))
    _write_sources(out / "sources.csv", specs, url_base)
    return {**truth, "truth_path": str(out / "truth.json"),
            "sources_csv": str(out / "sources.csv")}


def _write_sources(path: Path, specs: Sequence[VideoSpec], url_base: str | None) -> None:
    col = "url" if url_base is not None else "path"
    rows = []
    for s in specs:
        loc = f"{url_base}{s.id}.mp4" if url_base is not None else f"videos/{s.id}.mp4"
        # source ids need whole seconds: end is the last whole second inside the file
        rows.append({"id": s.id, col: loc, "start": "0", "end": str(math.floor(s.duration)),
                     "label": s.label, "split": s.split})
    buf = io.StringIO(newline="")
    wr = csv.DictWriter(buf, fieldnames=["id", col, "start", "end", "label", "split"])
    wr.writeheader()
    wr.writerows(rows)
    write_text(path, buf.getvalue())


def _write_text_atomic(path: Path, text: str) -> None:
    write_text(path, text)
