"""Building and killing a real ``curate build`` (issue 10): the inputs, the command, a run
watched for its stage, kill points, the outcome of a finished build and its comparison with
a reference. Used by tests/e2e/test_kill_resume.py and ``benchmarks/kill_resume.py``,
``benchmarks/bench_build.py`` and ``benchmarks/cluster_two_nodes.py``."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CURATE_BIN = Path(sys.executable).parent / "curate"
N_SOURCES = 5
DURATION = 6.0
#: the demo recipe without its in-run sync training; random models do not gate
RECIPE = {"base": "demo", "stages": ["sources", "download", "split", "score", "select", "shard"],
          "select": {"per_class": 2, "test_per_class": 1}}
TEMP_PATTERNS = (".*.tmp", ".*.part")


def curate_cmd() -> list[str]:
    """The installed console script if present, else the module (same entry point)."""
    if CURATE_BIN.exists():
        return [str(CURATE_BIN)]
    return [sys.executable, "-m", "curate.cli"]


def write_inputs(corpus: Path, server, truth: dict, n: int | None = None) -> tuple[Path, Path]:
    """sources.csv (URLs on ``server``) and the recipe JSON, beside the corpus."""
    lines = ["id,url,start,end,label,split"]
    for v in truth["videos"][:n]:
        end = int(truth["duration"])
        lines.append(f"{v['id']},{server.url(v['id'] + '.mp4')},0,{end},{v['label']},{v['split']}")
    src = corpus / "sources.csv.loopback"
    src.write_text("\n".join(lines) + "\n")
    cfg = corpus / "recipe.json"
    cfg.write_text(json.dumps(RECIPE))
    return src, cfg


def build_env() -> dict[str, str]:
    """The environment of a build: a Ray of its own. Without an address, ``ray.init`` attaches
    to the latest cluster a ``ray start`` left on this machine (``/tmp/ray/ray_current_cluster``,
    e.g. another test's), and fails there when given ``num_cpus``; ``RAY_ADDRESS=local`` always
    starts a fresh local Ray, the one whose workers watch the build's driver."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_ADDRESS": "local"}


def build_args(out: Path, src: Path, cfg: Path, workers: int = 2) -> list[str]:
    return [*curate_cmd(), "build", "custom", "--config", str(cfg), "--sources", str(src),
            "--out", str(out), "--workers", str(workers), "--allow-random-weights"]


@dataclass
class RunResult:
    rc: int | None           # exit status; -9 when killed
    killed: bool
    seconds: float           # from start to exit or to the kill
    log: str
    stage: str = ""          # last "== stage" line seen when it ended
    after_kill: dict = field(default_factory=dict)   # snapshot right after the kill
    later: dict = field(default_factory=dict)        # snapshot 3 s after the kill


def file_snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``out`` (temp files included) with size and mtime."""
    snap = {}
    for p in out.rglob("*"):
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if not p.is_dir():
            snap[str(p.relative_to(out))] = (st.st_size, st.st_mtime_ns)
    return snap


def current_stage(log: str) -> str:
    stages = re.findall(r"^== (\S+)", log, flags=re.MULTILINE)
    return stages[-1] if stages else "(startup)"


def run_build(args: list[str], out: Path, log_path: Path,
              trigger: Callable[[Path, str], bool] | None = None, delay: float | None = None,
              timeout: float = 900, settle: float = 3.0) -> RunResult:
    """Run a build in its own session. With ``trigger`` (checked every 20 ms on the output
    folder and the log) or ``delay`` (seconds), SIGKILL its whole process group then, and
    snapshot the output right after the kill and ``settle`` seconds later."""
    env = build_env()
    with log_path.open("w") as logf:
        t0 = time.monotonic()
        p = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
                             start_new_session=True)
        killed = False
        try:
            while p.poll() is None:
                el = time.monotonic() - t0
                if el > timeout:
                    raise TimeoutError(f"build ran past {timeout} s")
                fire = delay is not None and el >= delay
                if not fire and trigger is not None:
                    fire = trigger(out, log_path.read_text(errors="replace"))
                if fire:
                    os.killpg(p.pid, signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.02)
        finally:
            if p.poll() is None and not killed:
                os.killpg(p.pid, signal.SIGKILL)
        seconds = time.monotonic() - t0
        p.wait()
    log = log_path.read_text(errors="replace")
    res = RunResult(p.returncode, killed, seconds, log, current_stage(log))
    if killed:
        res.after_kill = file_snapshot(out)
        time.sleep(settle)
        res.later = file_snapshot(out)
    return res


def temp_files(out: Path) -> list[str]:
    found = set()
    for pat in TEMP_PATTERNS:
        found |= {str(p.relative_to(out)) for p in out.rglob(pat)}
    return sorted(found)


def outcome(out: Path) -> dict:
    """What a finished build must reproduce: selected keys, each shard's members and the
    payload sha256 of every key (shards manifest) and of every member (tar index)."""
    import pyarrow.parquet as pq

    from manifests.schemas import read_rows
    selected = sorted(r["key"] for r in read_rows(out, "selected") if r["status"] == "ok")
    payload = {r["key"]: (r["shard"], r["sha256"]) for r in read_rows(out, "shards")}
    members: dict[str, list] = {}
    for idx in sorted((out / "shards").glob("*.parquet")):
        t = pq.read_table(idx).to_pylist()
        members[idx.stem] = sorted((r["key"], r["member"], r["sha256"]) for r in t)
    return {"selected": selected, "payload": payload, "members": members}


def compare(ref: dict, got: dict) -> list[str]:
    """Differences, as readable lines (empty when equal)."""
    diffs = []
    if ref["selected"] != got["selected"]:
        diffs.append(f"selected keys: {sorted(set(ref['selected']) ^ set(got['selected']))}")
    if set(ref["members"]) != set(got["members"]):
        diffs.append(f"shards: {sorted(ref['members'])} vs {sorted(got['members'])}")
    for shard in sorted(set(ref["members"]) & set(got["members"])):
        if ref["members"][shard] != got["members"][shard]:
            diffs.append(f"members of {shard} differ")
    bad = [k for k in set(ref["payload"]) | set(got["payload"])
           if ref["payload"].get(k) != got["payload"].get(k)]
    if bad:
        diffs.append(f"payload sha256 differs for {len(bad)} keys: {sorted(bad)[:5]}")
    return diffs


def verify_cli(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*curate_cmd(), "verify", str(out)], check=False, capture_output=True, text=True,
                          cwd=str(REPO), timeout=300, env=build_env())


def verify_manifests(out: Path) -> tuple[bool, str]:
    """The manifest-aware check (``shards.verify.verify_run``)."""
    from shards.verify import format_report, verify_run
    rep = verify_run(out)
    return bool(rep["ok"]), format_report(rep)


def _any(out: Path, pattern: str) -> bool:
    return next(iter(out.glob(pattern)), None) is not None


# ------------------------------------------------------------------ kill points (triggers)

def _progress(stage: str, log: str) -> bool:
    """The stage's progress bar shows at least one finished item."""
    return re.search(rf"{stage}:\s+\d+%\|[^\n\r]*\| [1-9]\d*/", log) is not None


# Each trigger fires at the first poll after its stage finished an item, so a fast machine
# still gets its kill (maybe a little later in the stage); the stage a kill hit is printed.

def in_download(out: Path, log: str) -> bool:
    """One source downloaded (media/raw/<id>.mp4), the others in flight or queued."""
    return _progress("download", log) or _any(out, "media/raw/[!.]*.mp4")


def in_split(out: Path, log: str) -> bool:
    """At least one source split, not every checkpoint part flushed."""
    return _progress("split", log)


def in_score(out: Path, log: str) -> bool:
    """The first source scored (or the first score checkpoint part written)."""
    return _progress("score", log) or _any(out, "work/score/part-*.jsonl")


def in_cut(out: Path, log: str) -> bool:
    """The first clip cut (media/clips/<key>.mp4), others being cut."""
    return _any(out, "media/clips/[!.]*.mp4")


def in_tar_writing(out: Path, log: str) -> bool:
    """The first file in shards/ (a tar temp, a tar or an index) exists."""
    return _any(out, "shards/*") or _any(out, "shards/.*")


def after_verify(out: Path, log: str) -> bool:
    """The build printed its verify summary; it is writing stats."""
    return re.search(r"^\d+ shards, \d+ ok", log, flags=re.MULTILINE) is not None


KILL_POINTS: list[tuple[str, Callable[[Path, str], bool]]] = [
    ("download", in_download), ("split", in_split), ("score", in_score), ("cut", in_cut),
    ("tar writing", in_tar_writing), ("after verify", after_verify)]
