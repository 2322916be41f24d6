"""Download stage before / after issue 13: CPU and throughput, and the audio-video offset.

1. CPU-ms per source-second and items/s of the download stage on loopback (real yt-dlp
   fetching a direct file from 127.0.0.1, then the segment written), at 360p and 720p:
   *before* = the format-1 download (the segment re-encoded with ``-ss start -i src -t dur``
   and the deterministic H.264/AAC settings, re-timed to start at 0), run through the same
   ``download_source`` with its cut swapped for that command; *after* = the stream copy
   (``curate.ops.fetch``). CPU = this process + its children (ffmpeg), user + system.
2. The offset table: flash/beep sources (testkit/avmedia.py) per frame rate, segment
   13-23 s, clip 2.5-6.5 s of it; beep onset minus flash onset (ms, mean and max |.| over
   every event) in the raw download and in the clip, before (format-1 download + the old
   clip command) and after (stream copy + frame-instant cut).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_sync_download.py [--items 4] [--skip-cpu]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.ops import fetch as dl
from curate.ops.fetch import segment
from decoding.media import probe
from curate.ops.cut import cut_clip
from curate.ops.encoding import CUT_QUALITY as QUALITY
from curate.ops.encoding import encode_args
from curate.demo.loopback import LoopbackServer
from testkit.avmedia import make_flash_beep, onsets, pair_offsets_ms  # noqa: E402

SEG = (13, 23)
CLIP = (2.5, 6.5)
RATES = [("24000/1001", 48000), ("24", 22050), ("25", 44100), ("30000/1001", 48000), ("30", 48000),
         ("50", 44100), ("60000/1001", 48000)]


def _ff(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, capture_output=True)


def _old_cut(src, start, end, out, opts):
    """The format-1 download cut: a re-encode re-timed to 0 (``-ss`` before ``-i``)."""
    args = ["-ss", f"{start:.3f}", "-i", str(src)] + (["-t", f"{end - start:.3f}"] if end else [])
    _ff([*args, *segment.reencode_args(opts), str(out)])
    dur = probe(src)["duration"]
    return dur, {"seg_start": 0.0, "seg_end": float(end - start), "stream_copy": False, "note": None}, \
        probe(out)


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _source(path: Path, size: str, seconds: int = 30) -> None:
    """A 30-s 29.97-fps H.264/AAC source with moving content, keyframes every 120 frames."""
    _ff(["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30000/1001", "-f", "lavfi", "-i",
         "sine=frequency=440:sample_rate=48000", "-t", str(seconds), "-c:v", "libx264", "-preset", "medium",
         "-g", "120", "-keyint_min", "120", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", str(path)])


def bench_cpu(tmp: Path, items: int) -> None:
    print(f"download stage, {items} sources per row, segment {SEG[0]}-{SEG[1]} s, loopback, serial")
    print(f"{'size':>9} {'path':>24} {'CPU-ms/source-s':>16} {'items/s':>8}")
    for size in ("640x360", "1280x720"):
        www = tmp / f"www{size}"
        www.mkdir()
        for i in range(items):
            _source(www / f"v{i}.mp4", size)
        with LoopbackServer(www) as server:
            for label, patch in (("before (re-encode)", True), ("after (stream copy)", False)):
                real = segment.cut
                if patch:
                    segment.cut = _old_cut
                try:
                    media = tmp / f"raw{size}{patch}"
                    c0, t0 = _cpu(), time.perf_counter()
                    for i in range(items):
                        row = {"source_id": f"v{i}_{SEG[0]:06d}_{SEG[1]:06d}", "url": server.url(f"v{i}.mp4"),
                               "start": SEG[0], "end": SEG[1]}
                        r = dl.download_source(row, media, dl.DownloadOptions(retries=0))
                        assert r["status"] == "ok", r
                    c1, t1 = _cpu(), time.perf_counter()
                finally:
                    segment.cut = real
                secs = items * (SEG[1] - SEG[0])
                print(f"{size:>9} {label:>24} {1000 * (c1 - c0) / secs:16.1f} {items / (t1 - t0):8.2f}")


def _old_clip(src: Path, dst: Path, start: float, end: float) -> None:
    """The clip command before issue 13: -ss before -i, constant output rate, size kept."""
    _ff(["-accurate_seek", "-ss", f"{start:.6f}", "-i", str(src), "-t", f"{end - start:.6f}",
         "-map", "0:v:0", "-map", "0:a:0?", *encode_args(QUALITY["crf"], QUALITY["preset"], QUALITY["audio_bitrate"]),
         "-movflags", "+faststart", "-f", "mp4", str(dst)])


def _stat(path, start=None, end=None) -> str:
    f, b = onsets(path, start=start, end=end)
    o = pair_offsets_ms(f, b)
    if not o:
        return f"{'no events':>16}"
    mean = sum(o) / len(o)
    return f"{mean:+7.2f} /{max(map(abs, o)):6.2f}"


def bench_offsets(tmp: Path) -> None:
    print(f"\nbeep - flash (ms, mean / max|.| over events); segment {SEG[0]}-{SEG[1]} s, "
          f"clip {CLIP[0]}-{CLIP[1]} s of it")
    print(f"{'fps':>11} {'Hz':>6} {'source':>16} {'raw before':>16} {'clip before':>16} "
          f"{'raw after':>16} {'clip after':>16}")
    for fps, sr in RATES:
        src = tmp / f"fb{fps.replace('/', '_')}.mp4"
        make_flash_beep(src, fps, sr, duration=24.0)
        sid = f"fb_{SEG[0]:06d}_{SEG[1]:06d}"
        old_raw = tmp / "old_raw.mp4"
        _old_cut(src, SEG[0], SEG[1], old_raw, dl.DownloadOptions())
        old_clip = tmp / "old_clip.mp4"
        _old_clip(old_raw, old_clip, *CLIP)
        media = tmp / f"new{fps.replace('/', '_')}"
        row = dl.download_source({"source_id": sid, "path": str(src), "start": SEG[0], "end": SEG[1]},
                                 media, dl.DownloadOptions())
        clip = cut_clip(row["path"], tmp / "new_clip.mp4", *CLIP, offset=row["seg_start"])
        print(f"{fps:>11} {sr:>6} {_stat(src):>16} {_stat(old_raw):>16} {_stat(old_clip):>16} "
              f"{_stat(row['path'], row['seg_start'], row['seg_end']):>16} {_stat(clip['path']):>16}"
              f"   av_offset_ms {clip['av_offset_ms']:+.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=4)
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-offsets", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_sync."))
    try:
        print(f"cores: {os.cpu_count()}, load: {os.getloadavg()[0]:.2f}")
        if not a.skip_cpu:
            bench_cpu(tmp, a.items)
        if not a.skip_offsets:
            bench_offsets(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
