"""Figure for issue 9 item 7: pixel_diff of the windows after a cut at 2.533 s in a 30-fps
video (synth hard_cuts scenes), with the old nearest-grid-frame rule and with the current
``filters.sampling`` rule (first sample at or after the window start).

    .venv/bin/python benchmarks/cut_sampling_figure.py
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.ops.scoring import Scorers, score_segment
from curate.ops.shots import shot_rows
from curate.demo.synth import VideoSpec, render
from curate.ops.windows import make_windows
from decoding.media import decode_grid  # noqa: E402
from filters import pixel_diff, sampling  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cut.mp4"
        render(VideoSpec("cut", "x", "hard_cuts", "train", 7, 10.0, fps=30,
                         cuts=[76 / 30, 211 / 30]), path)
        shots = shot_rows("v_000000_000010", path)
        print("shots:", [(round(r["start"], 4), round(r["end"], 4)) for r in shots])
        windows = make_windows(shots, "c", "train")
        grid = decode_grid(path)
        rows = score_segment(grid, windows, Scorers(), None, "c", gate=set())
        print("window   nearest-grid-frame rule   now")
        for w, r in zip(windows, rows):
            old = [round(w["start"] * 12) + o for o in sampling.UNIFORM10_OFFSETS]
            print(f"{w['start']:6.3f}   {pixel_diff.score(grid.frames[old]):.4f}"
                  f"                    {r['pixel_diff']:.4f}")


if __name__ == "__main__":
    main()
