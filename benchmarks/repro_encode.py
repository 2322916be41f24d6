"""How often does the same re-encode give the same bytes under CPU load? (issue 10 item 1)

Runs the download stage's cut N times with the deterministic settings (curate/ops/encoding.py)
and N times with the old multi-threaded x264 command, while busy processes load every core,
and prints how many runs matched the first one's bytes.

    .venv/bin/python benchmarks/repro_encode.py [--runs 24]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.ops import fetch as dl
from curate.ops.fetch import segment

OLD = ["-map", "0:v:0", "-map", "0:a:0?", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
       "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart"]


def _ff(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=24)
    ap.add_argument("--size", default="640x360")
    a = ap.parse_args()
    # a timeout's SIGTERM must still stop the busy processes (finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="repro_encode."))
    src = tmp / "src.mp4"
    _ff(["-f", "lavfi", "-i", f"testsrc2=size={a.size}:rate=30:duration=4,noise=alls=25:allf=t",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=4", "-c:v", "libx264", "-preset",
         "ultrafast", "-c:a", "aac", "-shortest", str(src)])
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        for label, args in (("old (x264 threads auto)", OLD),
                            ("new (curate/ops/encoding.py)", segment.reencode_args(dl.DownloadOptions()))):
            hashes = []
            for i in range(a.runs):
                out = tmp / f"o{i}.mp4"
                _ff(["-ss", "0.500", "-i", str(src), "-t", "3.000", *args, str(out)])
                hashes.append(hashlib.sha256(out.read_bytes()).hexdigest())
                out.unlink()
            same = sum(h == hashes[0] for h in hashes)
            print(f"{label}: {same} of {a.runs} runs identical to the first "
                  f"({len(set(hashes))} distinct outputs)", flush=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    main()
