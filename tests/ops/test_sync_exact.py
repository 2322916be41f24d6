"""Sync-exact media (issue 13): downloads keep the source's streams and clock, clips are cut
on frame instants with both streams at the same instant, and every clip's audio-video
offset is measured and verified.

Sources are generated flash/beep files (tests/avmedia.py: a white disc and a 40-ms beep
starting on the same frame instant, keyframes every 120 frames); onsets are measured on each
file's own clock as a player shows it. Many frame and sample rates at the op level
(download_source + cut_clip), a few end to end through `curate build custom` and
`curate reproduce` over loopback."""
import io
import json
import math
import subprocess
import sys
import tarfile
from fractions import Fraction
from pathlib import Path

import pytest

from curate.ops.cut import cut_clip
from curate.ops.fetch import DownloadOptions, download_source
from decoding.media import av_offset_ms, decode_grid, frame_instants
from testkit.avmedia import frame_times, make_flash_beep, onsets, pair_offsets_ms

TOL_MS = 1.0
SEG = (7, 12)        # integer seconds, mid-GOP and off the frame grid at 23.976/29.97/59.94
CLIP = (1.3, 3.7)    # fractional clip times inside the segment

# every listed frame rate, each with a sample rate (all four used), plus a variable-rate
# source and one whose audio starts later than its video
CASES = [
    ("24000/1001", 48000, False, 0.0),
    ("24", 22050, False, 0.0),
    ("25", 44100, False, 0.0),
    ("30000/1001", 48000, False, 0.0),
    ("30", 16000, False, 0.0),
    ("50", 44100, False, 0.0),
    ("60000/1001", 22050, False, 0.0),
    ("30000/1001", 22050, True, 0.0),      # VFR
    ("25", 16000, False, 0.37),            # audio starts 0.37 s after the video
]


def _id(case):
    fps, sr, vfr, delay = case
    return f"{fps.replace('/', '_')}fps-{sr}Hz" + ("-vfr" if vfr else "") + (f"-late{delay}" if delay else "")


def _offsets(src, start=None, end=None):
    f, b = onsets(src, start=start, end=end)
    assert f and len(f) == len(b), (f, b)
    return pair_offsets_ms(f, b)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("flash")
    out = {}
    for case in CASES:
        fps, sr, vfr, delay = case
        p = root / f"{_id(case)}.mp4"
        make_flash_beep(p, fps, sr, duration=14.0, vfr=vfr, audio_delay=delay)
        out[_id(case)] = p
    return out


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_download_and_cut_keep_sync(case, sources, tmp_path):
    fps, sr, vfr, _ = case
    src = sources[_id(case)]
    assert max(map(abs, _offsets(src))) <= TOL_MS           # the truth: the source is in sync
    sid = f"{_id(case).replace('.', 'p')}_{SEG[0]:06d}_{SEG[1]:06d}"
    row = download_source({"source_id": sid, "path": str(src), "start": SEG[0], "end": SEG[1]},
                          tmp_path, DownloadOptions())
    assert (row["status"], row["stream_copy"], row["error"]) == ("ok", True, None), row
    # a stream copy on the source's clock: the segment is at [7, 12) inside the file, and the
    # file begins on the keyframe before it (120 frames apart: mid-GOP at every rate)
    assert (row["seg_start"], row["seg_end"]) == SEG and abs(row["duration"] - 5.0) < 1e-9
    first_frame, _ = frame_instants(row["path"], 0.0, 1.0)
    assert first_frame < SEG[0] - 0.01
    raw = _offsets(row["path"], *SEG)
    assert len(raw) >= 6 and max(map(abs, raw)) <= TOL_MS, raw
    # the clip: [1.3, 3.7) of the segment on frame instants, both streams at that instant
    clip = cut_clip(row["path"], tmp_path / "clip.mp4", *CLIP, offset=row["seg_start"])
    grid = [float(t) - SEG[0] for t in frame_times(fps, 14 * 61, vfr)]
    period = 1 / float(Fraction(fps)) * (2 if vfr else 1)
    assert CLIP[0] - 1e-6 <= clip["cut_start"] < CLIP[0] + period
    assert min(abs(clip["cut_start"] - t) for t in grid) < 1e-6       # a frame instant
    assert CLIP[1] - 1e-6 <= clip["cut_end"] < CLIP[1] + period
    assert abs(clip["av_offset_ms"]) <= TOL_MS, clip
    got = _offsets(clip["path"])
    assert len(got) >= 2 and max(map(abs, got)) <= TOL_MS, got
    # the flashes sit where the source has them, relative to the frame the clip starts on
    f_clip, _ = onsets(clip["path"])
    f_src, _ = onsets(src, start=SEG[0] + clip["cut_start"], end=SEG[0] + clip["cut_end"])
    want = [t - SEG[0] - clip["cut_start"] for t in f_src]
    assert len(f_clip) == len(want) and all(abs(a - b) < 1e-4 for a, b in zip(f_clip, want)), (f_clip, want)


def test_decode_addresses_the_segment_by_its_times(sources, tmp_path):
    """The analysis grid of a stream copy equals the source's grid at the same segment times."""
    src = sources[_id(CASES[3])]
    row = download_source({"source_id": "g_000007_000012", "path": str(src), "start": 7, "end": 12},
                          tmp_path, DownloadOptions())
    g = decode_grid(row["path"], 0.0, row["duration"], offset=row["seg_start"])
    ref = decode_grid(src, 0.0, 5.0, offset=7.0)
    assert g.frames.shape == ref.frames.shape and g.start == 0.0
    assert abs(g.frames.astype(int) - ref.frames.astype(int)).mean() < 2.0
    lit = [i for i in range(len(g.frames)) if g.frames[i].mean() > 40]
    assert lit == [i for i in range(len(ref.frames)) if ref.frames[i].mean() > 40] and lit


def test_cached_download_keeps_segment_times_and_old_format_is_refetched(sources, tmp_path):
    src = sources[_id(CASES[0])]
    row = {"source_id": "c_000007_000012", "path": str(src), "start": 7, "end": 12}
    first = download_source(row, tmp_path, DownloadOptions())
    again = download_source(row, tmp_path, DownloadOptions())
    assert again["reason"] == "cached" and again["seg_start"] == first["seg_start"] == 7.0
    assert again["seg_end"] == first["seg_end"] and again["duration"] == first["duration"]
    # a stream copy is byte-stable: the same source and segment give the same bytes
    other = download_source(row, tmp_path / "again", DownloadOptions())
    assert Path(other["path"]).read_bytes() == Path(first["path"]).read_bytes()
    # a file of the old format (no sidecar: a re-encode re-timed to 0) is not reused
    (tmp_path / "c_000007_000012.json").unlink()
    third = download_source(row, tmp_path, DownloadOptions())
    assert third["reason"] == "ok" and third["seg_start"] == 7.0


def test_copy_failure_reencodes_on_a_frame_instant(sources, tmp_path, monkeypatch):
    """Where a stream copy cannot be written the segment is re-encoded, both streams cut at
    the same frame instant, and the row says so."""
    from curate.ops.fetch import errors, segment

    def no_copy(*a, **k):
        raise errors.Failure("corrupt", "ffmpeg: codec not supported in mp4 (simulated)")
    real = segment._ffmpeg
    monkeypatch.setattr(segment, "_ffmpeg", lambda args, opts: no_copy() if "copy" in args else real(args, opts))
    src = sources[_id(CASES[3])]
    row = download_source({"source_id": "r_000007_000012", "path": str(src), "start": 7, "end": 12},
                          tmp_path, DownloadOptions())
    assert row["status"] == "ok" and row["stream_copy"] is False
    assert row["error"].startswith("re-encoded (ffmpeg: codec not supported in mp4 (simulated))")
    assert row["seg_start"] == 0.0 and abs(row["duration"] - 5.0) < 0.05
    got = _offsets(row["path"], row["seg_start"], row["seg_end"])
    assert max(map(abs, got)) <= TOL_MS, got


def _shard_with(tmp_path, clip: Path, key: str) -> Path:
    from shards.writer import Sample, write_shards
    out = tmp_path / "run"
    write_shards(out, [Sample(key=key, mp4=clip, meta={"key": key}, class_index=0, text="beep")], "test",
                 max_count=10, max_bytes=1 << 30)
    return out / "shards"


def test_verify_catches_a_clip_with_a_20ms_offset(tmp_path):
    from shards.verify import verify_shards
    good = tmp_path / "good.mp4"
    make_flash_beep(good, "25", 44100, duration=3.0)
    assert abs(av_offset_ms(good)) <= TOL_MS
    assert verify_shards(_shard_with(tmp_path / "a", good, "cls-good_000000_000003_0_3"))["ok"]
    # the same streams, the video written 20 ms late
    bad = tmp_path / "bad.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-itsoffset", "0.020", "-i", str(good),
                    "-i", str(good), "-map", "0:v", "-map", "1:a", "-c", "copy", str(bad)], check=True)
    assert abs(av_offset_ms(bad) + 20.0) < 0.1
    report = verify_shards(_shard_with(tmp_path / "b", bad, "cls-bad_000000_000003_0_3"))
    assert not report["ok"]
    problems = [p for r in report["shards"].values() for p in r["problems"]]
    assert any("audio-video offset" in p and "cls-bad_000000_000003_0_3 (-20.00 ms)" in p
               for p in problems), problems


# ---------------------------------------------------------------- end to end

E2E = [("30000/1001", 48000, False, 0.0, "s2997"), ("25", 44100, False, 0.0, "s25"),
       ("30000/1001", 22050, True, 0.0, "svfr"), ("24", 16000, False, 0.3, "slate")]
E2E_SEG = (13, 23)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    for fps, sr, vfr, delay, ytid in E2E:
        make_flash_beep(root / f"{ytid}.mp4", fps, sr, duration=24.0, vfr=vfr, audio_delay=delay)
    return root


def _curate(*args):
    p = subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return p


def _check_run(out: Path, n_clips: int):
    from manifests.schemas import read_rows
    from shards.verify import verify_run
    downloads = [d for d in read_rows(out, "downloads") if d["status"] == "ok"]
    assert len(downloads) == len(E2E) and all(d["stream_copy"] for d in downloads)
    for d in downloads:                         # every event of every raw segment
        assert (d["seg_start"], d["seg_end"]) == E2E_SEG
        got = _offsets(d["path"], d["seg_start"], d["seg_end"])
        assert len(got) >= 12 and max(map(abs, got)) <= TOL_MS, (d["source_id"], got)
    selected = [s for s in read_rows(out, "selected") if s["status"] == "ok"]
    assert len(selected) == n_clips
    n = 0
    for tar in sorted((out / "shards").glob("*.tar")):   # every event of every shard clip
        with tarfile.open(tar) as t:
            members = {m.name: t.extractfile(m).read() for m in t.getmembers()}
        for name, data in members.items():
            if not name.endswith(".mp4"):
                continue
            meta = json.loads(members[name[:-4] + ".json"])
            got = _offsets(data)
            assert max(map(abs, got)) <= TOL_MS, (name, got)
            assert abs(meta["av_offset_ms"]) <= TOL_MS
            assert meta["clip_start"] - 1e-6 <= meta["cut_start"] < meta["clip_start"] + 0.067
            # the member is the clip's key: its name with "/" -> "-" and "." -> "p", whose
            # last two fields are the clip's times
            assert name[:-4] == meta["name"].replace("/", "-").replace(".", "p"), (name, meta["name"])
            cs, ce = meta["name"].rsplit("_", 2)[1:]
            assert float(cs) == pytest.approx(meta["clip_start"], abs=1e-6)
            assert float(ce) == pytest.approx(meta["clip_end"], abs=1e-6)
            n += 1
    assert n == n_clips
    for s in selected:
        assert abs(s["av_offset_ms"]) <= TOL_MS and s["cut_start"] >= s["start"] - 1e-6
    report = verify_run(out)
    assert report["ok"], report


def test_reproduce_list_is_sync_exact(served, tmp_path):
    from curate.demo.loopback import LoopbackServer
    lines = [f"beep/{ytid}_{E2E_SEG[0]:06d}_{E2E_SEG[1]:06d}_{cs}_{ce}"
             for *_, ytid in E2E for cs, ce in (("2.5", "6.5"), ("1.3", "5.3"))]
    lst = tmp_path / "test.txt"
    lst.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with LoopbackServer(served) as server:
        _curate("reproduce", lst, "--out", out, "--url-template", server.base_url + "{ytid}.mp4",
                "--executor", "local")
    _check_run(out, len(lines))
    # a selected row recorded with a 20-ms offset is named by verify too
    from manifests.schemas import read_rows, write_manifest
    from shards.verify import verify_run
    rows = read_rows(out, "selected")
    rows[0]["av_offset_ms"] = 20.0
    write_manifest(out, "selected", rows)
    report = verify_run(out)
    assert not report["ok"]
    assert any("audio-video offset" in p and f"{rows[0]['key']} (+20.00 ms)" in p
               for p in report["run_problems"]), report["run_problems"]


def test_build_custom_is_sync_exact(served, tmp_path):
    from curate.demo.loopback import LoopbackServer
    from manifests.schemas import read_rows
    cfg = tmp_path / "cfg.json"
    # fixed 2.3-s clips: cuts at 2.3, 4.6, 6.9 s of each segment (off every frame grid here)
    cfg.write_text(json.dumps({"base": "landscape", "download": {"min_width": 0, "min_height": 0,
                                                                  "max_height": 480},
                               "fixed_clip_length": 2.3, "classes": None,
                               "select": {"balanced_test": False}}))
    src = tmp_path / "sources.csv"
    with LoopbackServer(served) as server:
        rows = ["id,url,start,end,label,split"] + [
            f"{ytid},{server.url(ytid + '.mp4')},{E2E_SEG[0]},{E2E_SEG[1]},beep,train" for *_, ytid in E2E]
        src.write_text("\n".join(rows) + "\n")
        out = tmp_path / "out"
        _curate("build", "custom", "--config", cfg, "--sources", src, "--out", out, "--executor", "local")
    _check_run(out, 4 * len(E2E))
    clips = [c for c in read_rows(out, "clips") if c["status"] == "ok"]
    assert clips and all(abs(c["av_offset_ms"]) <= TOL_MS and c["cut_start"] is not None for c in clips)
    assert not math.isnan(clips[0]["cut_end"])
