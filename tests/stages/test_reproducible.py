"""Byte-reproducible re-encodes (issue 10 item 1): the same input and options give the same
bytes, also while other processes load every CPU (x264's threads made 2 of 24 runs differ)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from curate.ops import fetch as dl
from curate.ops.fetch import segment
from curate.ops.cut import cut_clip, ffmpeg_command
from curate.ops.encoding import ENCODER_SETTINGS, encoder_settings
from shards.writer import Sample, write_shards


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Moving, noisy content (x264 makes real decisions) with audio and a creation_time tag."""
    p = tmp_path_factory.mktemp("src") / "src.mp4"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=480x270:rate=25:duration=4,noise=alls=20:allf=t",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=4:sample_rate=44100",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest",
         "-metadata", "creation_time=2020-01-01T00:00:00Z", str(p)],
        check=True, capture_output=True)
    return p


@contextmanager
def cpu_load(n: int | None = None):
    """Busy processes on every core while the block runs."""
    n = n or os.cpu_count() or 2
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_encode_args_are_single_threaded_and_bitexact():
    args = segment.reencode_args(dl.DownloadOptions())
    assert args[args.index("-threads") + 1] == "1"
    assert "lookahead-threads=1" in args[args.index("-x264-params") + 1]
    assert "sliced-threads=0" in args[args.index("-x264-params") + 1]
    for flag in ("-fflags", "-flags:v", "-flags:a"):
        assert args[args.index(flag) + 1] == "+bitexact"
    assert args[args.index("-map_metadata") + 1] == "-1"
    cmd = ffmpeg_command(Path("a.mp4"), Path("b.mp4"), 0.0, 1.0, (320, 180))
    assert cmd[cmd.index("-threads") + 1] == "1"
    assert cmd[cmd.index("-x264-params") + 1] == ENCODER_SETTINGS["x264_params"]


def test_encoder_settings_for_run_json():
    s = encoder_settings(dl.DownloadOptions(crf=20))
    assert s["threads"] == 1 and s["bitexact"] is True
    assert s["download"] == {"crf": 20, "preset": "veryfast", "audio_bitrate": "192k"}
    assert s["cut"]["crf"] == 18
    assert s["ffmpeg"] and s["ffmpeg"].startswith("ffmpeg version")


def test_download_cut_is_byte_identical_under_load(source, tmp_path):
    opts = dl.DownloadOptions()
    outs = []
    with cpu_load():
        for i in range(3):
            out = tmp_path / f"seg{i}.mp4"
            segment.cut(source, 0.52, 3.4, out, opts)       # not the whole file: re-encode
            outs.append(_sha(out))
    assert len(set(outs)) == 1, outs
    # no creation time or encoder string carried over from the source
    data = (tmp_path / "seg0.mp4").read_bytes()
    assert b"Lavf" not in data and b"2020-01-01" not in data


def test_clip_cut_is_byte_identical_under_load(source, tmp_path):
    outs = []
    with cpu_load():
        for i in range(3):
            info = cut_clip(source, tmp_path / f"clip{i}.mp4", 0.4, 3.0, max_short_side=240)
            outs.append(_sha(info["path"]))
    assert len(set(outs)) == 1, outs


def test_shards_are_byte_identical(source, tmp_path):
    clip = tmp_path / "c.mp4"
    cut_clip(source, clip, 0.0, 2.0, max_short_side=120)

    def build(out: Path) -> dict[str, str]:
        samples = [Sample(key=f"cls-vid{i:02d}_000000_000010_0p0_2p0", mp4=clip,
                          meta={"i": i, "class_name": "cls"}, class_index=0, text="cls",
                          class_name="cls", duration=2.0) for i in range(5)]
        write_shards(out, samples, "train", max_count=2)
        return {p.name: _sha(p) for p in sorted((out / "shards").iterdir())}

    a, b = build(tmp_path / "a"), build(tmp_path / "b")
    assert len(a) == 9 and a == b


def test_run_json_records_the_encoder_settings_and_empty_splits_are_rejected(tmp_path):
    import json

    from curate.config.run_state import new_run
    from curate.build import stage_value
    from curate.config.recipes import get_recipe
    from curate.execution.local import LocalExecutor

    recipe = get_recipe("demo")
    run = new_run(tmp_path, recipe, {})
    csv = tmp_path / "s.csv"
    csv.write_text("id,url,start,end,label,split\n"
                   "aaa,http://x/a.mp4,0,10,dog,train\n"
                   "bbb,http://x/b.mp4,0,10,dog,\n")
    run["recipe"]["select"].update(test_per_class=None, balanced_test=False)
    rows = stage_value("sources", tmp_path, run, sources=csv, limit=0)
    assert [r["status"] for r in rows] == ["skipped", "rejected"]
    assert rows[1]["error"].startswith("empty split:")
    # the download stage (nothing to fetch here) has the build record its encoder settings
    assert "encoder" not in json.loads((tmp_path / "run.json").read_text())
    assert stage_value("download", tmp_path, run, LocalExecutor()) == []
    enc = json.loads((tmp_path / "run.json").read_text())["encoder"]
    assert enc["threads"] == 1 and enc["bitexact"] is True
    assert enc["download"]["crf"] == recipe["download"].get("crf", enc["download"]["crf"])
