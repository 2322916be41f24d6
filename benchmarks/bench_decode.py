"""CPU cost of the score stage's decode (``decoding.media.decode_grid``) against plain PyAV and
``ffmpeg -threads 1`` onto the same grid, and the CPU cores one GPU needs to be fed at VGGSS.

    python benchmarks/bench_decode.py                          # media cached in /tmp/curate_bench_decode
    python benchmarks/bench_decode.py --heights 240 --kinds real --repeats 3

Sources (made once with the ffmpeg binary, cached in ``--media``; H.264 veryfast CRF 23, GOP
2 s, B-frames as x264 makes them, AAC 44.1 kHz):

* ``real``: real-looking footage: a textured still (a Mandelbrot render with grain) panned
  and drifted by a moving 1280x720 crop, temporal grain, downscaled to the height (what a
  small YouTube rendition of camera footage is), 30 fps, stereo AAC (two tones and noise);
* ``gen``: generated frames, ``device_check.make_video`` (moving gradients, per-pixel noise:
  a high bitrate; H.264 by PyAV's libx264, preset veryfast), 25 fps, a mono 440-Hz tone;
  remuxed by ffmpeg (interleaved, as a download is).

Each kind at each height as a 60-s file (10-s segments cut at 0, 10 and 40 s, decoded with
``offset=`` as the score stage does) and a whole 10-s file (the 60-s file's first 10 s, stream
copied: the same packets as the cut at 0). Decoders, one thread each:

* ``project``: ``decode_grid`` (what ``stages/score.py`` calls; since grid-3 its frames are
  scaled into 4:2:2 YUV and converted to RGB in a second pass, since grid-4 only the centre
  crop and with accurate rounding, within declared tolerances of the one-pass RGB the two
  references below make, ``tests/decoding/test_grid_convert.py``);
* ``pyav``: plain PyAV, one open: every frame decoded, the frame on screen at each grid
  instant converted to RGB at the grid's size and centre-cropped; the segment's audio
  decoded from a seek and resampled to 16 kHz (mono or stereo, as the grid);
* ``ffmpeg``: ``ffmpeg -threads 1 -filter_threads 1 -ss A -t 10 -i F`` with
  ``fps=12,scale=W:H:flags=bilinear,crop=224:224`` to raw RGB and ``-ar 16000`` to f32 (channels kept);
* ``video``: the video decode alone (PyAV, one thread, no conversion), for scale.

CPU time is the process's (``time.process_time``) or the child's (``RUSAGE_CHILDREN``),
divided by the source seconds decoded. Runs are interleaved (every decoder once per round,
``--repeats`` rounds) and min / median are printed with the machine's load average: on a
shared machine the median moves with the load, ratios within a round much less.

Cores per GPU: ``VGGSS_FLOP`` (the cascade's model work at VGGSS's shape, issue 28: 1.1M
windows x 270.5 GFLOP) takes ``FLOP / (TFLOP/s achieved)`` GPU-seconds; decoding
``VGGSS_SOURCE_SECONDS`` at the measured CPU-ms per source-second must fit in the same time.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import av  # noqa: E402
import numpy as np  # noqa: E402

from decoding.media import GRID_FPS, GRID_SIZE, SAMPLE_RATE, decode_grid  # noqa: E402

VGGSS_FLOP = 3.0e17
VGGSS_SOURCE_SECONDS = 1.05e6
TFLOPS = (400, 160)
SEGMENT = 10.0
#: where the 10-s segments start in a 60-s file: at 0 they show what the whole 10-s file shows
#: (the same generator), so the two compare the file's length alone; later cuts show other
#: content (compare them through ``project - video``, the cost beyond the video decode)
CUTS = (0.0, 10.0, 40.0)


# ---------------------------------------------------------------- sources

def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def texture(folder: Path) -> Path:
    """A 1920x1080 still with fractal detail and grain (panned over by ``real`` sources)."""
    p = folder / "texture.png"
    if not p.exists():
        _ffmpeg("-f", "lavfi", "-i", "mandelbrot=s=1920x1080:start_scale=0.3:end_scale=0.3",
                "-frames:v", "1", "-vf", "noise=alls=20", str(p))
    return p


def make_real(path: Path, height: int, seconds: float, folder: Path) -> None:
    pan = ("crop=1280:720:x='320+300*sin(t/5)':y='180+150*sin(t/7)'")
    video = (f"movie={texture(folder)},loop=loop=-1:size=1:start=0,setpts=N/30/TB,fps=30,"
             f"{pan},scale=-2:{height},noise=alls=4:allf=t")
    audio = ("aevalsrc=0.2*sin(2*PI*440*t)+0.05*(random(0)-0.5)|"
             "0.2*sin(2*PI*660*t+1)+0.05*(random(1)-0.5):s=44100")
    _ffmpeg("-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio, "-t", str(seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "60", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "128k", str(path))


def make_gen(path: Path, height: int, seconds: float) -> None:
    from device_check import make_video    # numpy-drawn frames encoded by PyAV
    raw = path.with_name(path.stem + ".raw.mp4")
    make_video(raw, height, seconds, preset="veryfast")
    # PyAV's muxer leaves audio and video far apart in the file (the demuxer then jumps back
    # and forth: ~1 ms more per 10 s of packets read than the same packets interleaved);
    # downloads come merged by ffmpeg, interleaved, as the stream-copied 10-s file is
    _ffmpeg("-i", str(raw), "-map", "0", "-c", "copy", str(path))
    raw.unlink()


def sources(folder: Path, kinds: list[str], heights: list[int]) -> list[tuple[str, Path, float]]:
    """(name, file, segment start) per case: 10-s segments of the 60-s file and the 10-s file
    (the 60-s file's first 10 s, stream-copied: the same packets, so the two rows differ by
    the file's length alone, not by what an encoder did with a shorter input)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for kind in kinds:
        for h in heights:
            # "-vfi": generated media encoded with preset veryfast and interleaved by ffmpeg
            # (older caches: "-vf" as PyAV muxed it, none: preset medium)
            p = folder / f"{kind}{h}_60s{'-vfi' if kind == 'gen' else ''}.mp4"
            if not p.exists():
                print(f"making {p.name}", flush=True)
                tmp = p.with_suffix(".part.mp4")
                make_real(tmp, h, 60, folder) if kind == "real" else make_gen(tmp, h, 60)
                tmp.rename(p)
            first = p.with_name(f"{p.stem}-first10s.mp4")
            if not first.exists():
                tmp = first.with_suffix(".part.mp4")
                _ffmpeg("-i", str(p), "-t", f"{SEGMENT:g}", "-map", "0", "-c", "copy", str(tmp))
                tmp.rename(first)
            out += [(f"{kind} {h}p, 10 s of 60 s @{a:g}", p, a) for a in CUTS]
            out.append((f"{kind} {h}p, whole 10-s file", first, 0.0))
    return out


# ---------------------------------------------------------------- decoders

def grid_size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        w, h = v.codec_context.width, v.codec_context.height
    s = GRID_SIZE / min(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def project(path: Path, a: float) -> None:
    decode_grid(path, 0.0, SEGMENT, offset=a)


def plain_pyav(path: Path, a: float) -> None:
    """The straightforward exact decode: one open, one thread, every frame decoded, the frame
    on screen at each grid instant converted (a new conversion per kept frame)."""
    nw, nh = grid_size(path)
    times = a + np.arange(int(SEGMENT * GRID_FPS)) / GRID_FPS
    out, last, k = [], None, 0
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        v.thread_count = 1
        c.seek(int(a / v.time_base), stream=v, backward=True)
        for f in c.decode(v):
            t = float(f.pts * v.time_base)
            while k < len(times) and last is not None and times[k] + 1e-3 < t:
                out.append(_crop(last.to_ndarray(width=nw, height=nh, format="rgb24")))
                k += 1
            if k >= len(times):
                break
            last = f
        s = c.streams.audio[0]
        r = av.AudioResampler(format="fltp", layout="mono" if s.channels == 1 else "stereo",
                              rate=SAMPLE_RATE)
        c.seek(max(int((a - 0.25) / s.time_base), 0), stream=s, backward=True)
        chunks = []
        for f in c.decode(s):
            if f.time is not None and f.time > a + SEGMENT + 0.25:
                break
            chunks += [x.to_ndarray() for x in r.resample(f)]
        np.concatenate(chunks, axis=1)


def _crop(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    t, l = (h - GRID_SIZE) // 2, (w - GRID_SIZE) // 2
    return np.ascontiguousarray(img[t:t + GRID_SIZE, l:l + GRID_SIZE])


def video_only(path: Path, a: float) -> None:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        v.thread_count = 1
        c.seek(int(a / v.time_base), stream=v, backward=True)
        for f in c.decode(v):
            if f.pts * v.time_base > a + SEGMENT:
                break


def ffmpeg_cmd(path: Path, a: float) -> list[str]:
    nw, nh = grid_size(path)
    return ["ffmpeg", "-v", "error", "-nostdin", "-threads", "1", "-filter_threads", "1",
            "-ss", f"{a:.3f}", "-t", f"{SEGMENT:g}", "-i", str(path),
            "-map", "0:v", "-vf", f"fps={GRID_FPS},scale={nw}:{nh}:flags=bilinear,crop={GRID_SIZE}:{GRID_SIZE}",
            "-threads", "1", "-pix_fmt", "rgb24", "-f", "rawvideo", "-y", os.devnull,
            "-map", "0:a", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-y", os.devnull]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_ms(name: str, path: Path, a: float) -> float:
    """CPU-ms per source-second of one decode of the segment at ``a``."""
    if name == "ffmpeg":
        t = _children_cpu()
        subprocess.run(ffmpeg_cmd(path, a), check=True)
        return 1000 * (_children_cpu() - t) / SEGMENT
    fn = {"project": project, "pyav": plain_pyav, "video": video_only}[name]
    t = time.process_time()
    fn(path, a)
    return 1000 * (time.process_time() - t) / SEGMENT


DECODERS = ("project", "pyav", "ffmpeg", "video")


# ---------------------------------------------------------------- report

def measure(cases, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Interleaved: every round runs every case with every decoder once, each round starting
    one case later, so that no case always runs in the same place (with one fixed order the
    cut at 0 s always came first, right after the previous source's files)."""
    got: dict[str, dict[str, list[float]]] = {c[0]: {d: [] for d in DECODERS} for c in cases}
    for name, p, a in cases:      # warm the file cache and the libraries
        project(p, a)
    for r in range(repeats):
        for name, p, a in cases[r % len(cases):] + cases[:r % len(cases)]:
            for d in DECODERS:
                got[name][d].append(cpu_ms(d, p, a))
    return got


def cores_per_gpu(ms_per_source_s: float, tflops: float) -> float:
    gpu_s = VGGSS_FLOP / (tflops * 1e12)
    return VGGSS_SOURCE_SECONDS * ms_per_source_s / 1000 / gpu_s


def report(got: dict[str, dict[str, list[float]]]) -> None:
    print(f"CPU-ms per source-second, min / median of {len(next(iter(got.values()))['project'])} "
          f"interleaved runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'source':38s} " + " ".join(f"{d:>13s}" for d in DECODERS)
          + "  project-video  project/ffmpeg  project/pyav  cores/GPU@" + "/".join(map(str, TFLOPS)))
    for name, row in got.items():
        cells = " ".join(f"{min(v):6.1f}/{statistics.median(v):6.1f}" for v in row.values())
        # ratios within one round, then the median over rounds
        rf = statistics.median(p / f for p, f in zip(row["project"], row["ffmpeg"]))
        rp = statistics.median(p / q for p, q in zip(row["project"], row["pyav"]))
        med = statistics.median(row["project"])
        cores = "/".join(f"{cores_per_gpu(med, t):.1f}" for t in TFLOPS)
        over = statistics.median(p - v for p, v in zip(row["project"], row["video"]))
        print(f"{name:38s} {cells}  {over:13.1f}  {rf:14.2f}  {rp:12.2f}  {cores}")
    print(f"cores per GPU: VGGSS {VGGSS_FLOP:.1e} FLOP, {VGGSS_SOURCE_SECONDS:.2e} source-seconds, "
          f"project median, at " + " and ".join(f"{t} TFLOP/s ({VGGSS_FLOP / t / 1e12:.0f} GPU-s)"
                                                for t in TFLOPS))
    cut_vs_whole(got)


def cut_vs_whole(got: dict[str, dict[str, list[float]]]) -> None:
    """The cut at 0 s of each 60-s file against its whole 10-s file (the same packets): the
    project's CPU per source-second, median of the per-round ratios."""
    for name, row in got.items():
        if not name.endswith(", whole 10-s file"):
            continue
        cut = got.get(name.replace("whole 10-s file", "10 s of 60 s @0"))
        if cut:
            r = statistics.median(c / w for c, w in zip(cut["project"], row["project"]))
            print(f"{name.split(',')[0]}: 10 s cut at 0 s of the 60-s file / the whole 10-s file "
                  f"(same packets), project, median of per-round ratios: {r:.3f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media", type=Path, default=Path("/tmp/curate_bench_decode"))
    ap.add_argument("--kinds", nargs="+", default=["real", "gen"], choices=["real", "gen"])
    ap.add_argument("--heights", nargs="+", type=int, default=[240, 360, 720])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    cases = sources(args.media, args.kinds, args.heights)
    report(measure(cases, args.repeats))


if __name__ == "__main__":
    main()
