"""A worker whose driver is gone writes nothing more into the output: the worker's write
guard (``curate.execution.ray.guard.write_guard``) ends it before a temp file is made or
renamed, and ffmpeg writes clips and downloads in scratch space outside the output."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from curate.ops import cut as cut_mod
from curate.ops.cut import cut_clip
from curate.ops.fetch import DownloadOptions, download_source
from testkit.avmedia import make_av

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from curate.execution.ray import write_guard
    from manifests.atomic import set_write_guard, write_text
    set_write_guard(write_guard(int(sys.argv[1])))
    write_text(Path(sys.argv[2]) / "result.json", "{}")
    print("wrote")
""")


def _run_worker(driver_pid: int, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", SCRIPT, str(driver_pid), str(out)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=str(REPO))


def test_a_worker_whose_driver_is_gone_writes_nothing(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    out = tmp_path / "out"
    out.mkdir()
    res = _run_worker(gone.pid, out)
    assert res.returncode == 1 and "wrote" not in res.stdout, res.stdout + res.stderr
    assert list(out.iterdir()) == []          # not even a temp file


def test_a_worker_whose_driver_runs_writes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    res = _run_worker(os.getpid(), out)
    assert res.returncode == 0 and "wrote" in res.stdout, res.stderr
    assert [p.name for p in out.iterdir()] == ["result.json"]


def test_ffmpeg_writes_clips_and_downloads_outside_the_output(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_SCRATCH", str(tmp_path / "scratch"))
    src = make_av(tmp_path / "src.mp4", 4.0, 12)
    out = tmp_path / "out"
    written = []
    real = cut_mod.run_ffmpeg

    def spy(cmd, timeout):
        written.append(Path(cmd[-1]))
        return real(cmd, timeout)
    monkeypatch.setattr(cut_mod, "run_ffmpeg", spy)
    clip = cut_clip(src, out / "media" / "clips" / "a.mp4", 0.5, 2.5)
    assert Path(clip["path"]).is_file() and written
    assert all(out not in p.parents for p in written), written
    assert all(tmp_path / "scratch" in p.parents for p in written), written

    row = download_source({"source_id": "s", "path": str(src), "start": 1, "end": 3},
                          out / "media" / "raw", DownloadOptions())
    assert row["status"] == "ok", row
    names = sorted(p.name for p in (out / "media" / "raw").iterdir())
    assert names == ["s.json", "s.mp4"], names           # no work folder in the output
