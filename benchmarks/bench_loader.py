"""The trainer-side loader (``shards.loader.make_dataset``, convention ``ours``) against plain
webdataset + PyAV decoding the same inputs, in samples per CPU-second.

    python benchmarks/bench_loader.py                       # 24 clips of 6 s at 360p, 3 rounds
    python benchmarks/bench_loader.py --clips 48 --height 720 --seconds 10

Clips: real-looking footage as ``bench_decode`` makes it (a panned textured still, 30 fps
H.264 with B-frames, stereo 44.1-kHz AAC), cut to ``--seconds``, written into one WebDataset
tar (``key.mp4``, ``key.cls``, ``key.txt``). Both sides read the same tar in one process and
produce, per sample, the 2-s centred window (test split) as ``float32 [12, 3, 256, 256]`` video
in [0, 1] and ImageBind's ``[1, 128, 204]`` mel:

* ``project``: ``make_dataset(tar, split="test")`` (one open per sample; the window's frames
  and the window's audio only);
* ``plain``: ``wds.WebDataset(tar).map(...)``: one ``av.open`` per sample, the video decoded
  from a seek to the window, the frame on screen at each 1/6-s instant converted by PyAV to
  short side 256 and centre-cropped, the audio decoded from a seek, resampled to 16-kHz mono
  by libswresample, 2 s taken, ``decoding.mel.imagebind_mel``.

CPU time is the process's (``time.process_time``, all threads; torch on one thread, as a
DataLoader worker runs). Rounds interleave the two; min and median over rounds, and the ratio
within each round (median), with the load average (a shared machine moves the medians).
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import webdataset as wds  # noqa: E402

from bench_decode import make_real  # noqa: E402
from decoding.mel import imagebind_mel  # noqa: E402
from shards.loader import FPS, NUM_FRAMES, SIZE, WINDOW_S, make_dataset  # noqa: E402


def make_tar(folder: Path, clips: int, height: int, seconds: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tar = folder / f"clips_{clips}x{seconds:g}s_{height}p.tar"
    if tar.exists():
        return tar
    src = folder / f"real{height}_{seconds:g}s.mp4"
    if not src.exists():
        make_real(src, height, seconds, folder)
    data = src.read_bytes()
    tmp = tar.with_suffix(".part")
    with tarfile.open(tmp, "w") as t:
        for i in range(clips):       # the same clip under distinct keys: the decode is the cost
            for ext, blob in (("mp4", data), ("cls", b"0"), ("txt", b"a dog barking")):
                info = tarfile.TarInfo(f"clip{i:04d}.{ext}")
                info.size = len(blob)
                t.addfile(info, io.BytesIO(blob))
    tmp.rename(tar)
    return tar


def plain_sample(sample: dict) -> dict:
    with av.open(io.BytesIO(sample["mp4"])) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        dur = min(float(v.duration * v.time_base), float(a.duration * a.time_base))
        start = max(dur - WINDOW_S, 0.0) / 2
        video = _plain_frames(c, v, start)
        wave = _plain_wave(c, a, start)
    return {"video": video, "audio": imagebind_mel(wave), "label": int(sample["cls"]),
            "text": sample["txt"].decode()}


def _plain_frames(c, v, start: float) -> torch.Tensor:
    v.thread_count = 1
    c.seek(int(start / v.time_base), stream=v, backward=True)
    times = start + np.arange(NUM_FRAMES) / FPS + 1e-3
    out, last = [], None
    for f in c.decode(v):
        t = float(f.pts * v.time_base)
        while len(out) < NUM_FRAMES and last is not None and times[len(out)] < t:
            out.append(_square(last))
        if len(out) == NUM_FRAMES:
            break
        last = f
    while len(out) < NUM_FRAMES:
        out.append(_square(last))
    # the loader's layout: [T, 3, S, S] float, contiguous
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _square(f: av.VideoFrame) -> np.ndarray:
    s = SIZE / min(f.width, f.height)
    img = f.to_ndarray(width=round(f.width * s), height=round(f.height * s), format="rgb24")
    t, l = (img.shape[0] - SIZE) // 2, (img.shape[1] - SIZE) // 2
    return img[t:t + SIZE, l:l + SIZE]


def _plain_wave(c, a, start: float) -> np.ndarray:
    c.seek(max(int((start - 0.1) / a.time_base), 0), stream=a, backward=True)
    r = av.AudioResampler(format="flt", layout="mono", rate=16000)
    chunks, t0 = [], None
    for f in c.decode(a):
        t0 = float(f.pts * a.time_base) if t0 is None else t0
        chunks += [x.to_ndarray()[0] for x in r.resample(f)]
        if f.time > start + WINDOW_S + 0.1:
            break
    wave = np.concatenate(chunks)
    i0 = max(round((start - t0) * 16000), 0)
    return wave[i0:i0 + int(WINDOW_S * 16000)]


def run_once(kind: str, tar: Path) -> tuple[int, float]:
    ds = (make_dataset(str(tar), split="test") if kind == "project"
          else wds.WebDataset(str(tar), shardshuffle=False, empty_check=False).map(plain_sample))
    t = time.process_time()
    n = sum(1 for s in ds if s["video"].shape == (NUM_FRAMES, 3, SIZE, SIZE))
    return n, time.process_time() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media", type=Path, default=Path("/tmp/curate_bench_decode"))
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tar = make_tar(args.media, args.clips, args.height, args.seconds)
    rate: dict[str, list[float]] = {"project": [], "plain": []}
    for kind in rate:                       # warm up both paths
        run_once(kind, tar)
    for _ in range(args.rounds):
        for kind in rate:
            n, cpu = run_once(kind, tar)
            assert n == args.clips, f"{kind}: {n} of {args.clips} samples"
            rate[kind].append(n / cpu)
    ratio = statistics.median(p / q for p, q in zip(rate["project"], rate["plain"]))
    print(f"{args.clips} clips of {args.seconds:g} s at {args.height}p, {args.rounds} interleaved rounds, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for kind, r in rate.items():
        print(f"  {kind:8s} samples per CPU-second: min {min(r):6.2f}  median {statistics.median(r):6.2f}")
    print(f"  project / plain (median of per-round ratios): {ratio:.2f}x")


if __name__ == "__main__":
    main()
