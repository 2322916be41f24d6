"""Driver memory of the score stage at VGGSound scale: score items + fingerprints, assemble.

Builds (``bench_tables.build``) the manifests of a run at VGGSound scale (~105k downloaded
segments, ~1.1M windows), writes the split stage's checkpoint records (the windows of every
segment) and one score record per segment (the runner's ``{"key", "fp", "out"}`` format,
scores from the built windows table), then measures, each in a fresh process (peak RSS of
that process alone):

- items: what the score stage does before any Ray work: the current split windows
  (``base_windows``), one score item per segment and the fingerprint of every item;
- assemble: ``assemble_windows`` with every score record present (``write=False``).

``--old`` measures the same on the row-dict code of OLD_COMMIT (``git show`` into a temp
module: the working tree is not touched) and checks that both give the same fingerprints and
the same windows table.

    .venv/bin/python benchmarks/bench_score_memory.py [--windows 1100000] [--old] [--keep DIR]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PY = str(ROOT / ".venv" / "bin" / "python")
#: the last commit with row-dict score items and assemble (``--old``)
OLD_COMMIT = "7221dd9"
SCORED = ("status", "error")


def _load_pipeline(old: str | None):
    """The functions measured, under the names the old ``curate/pipeline.py`` gave them."""
    if not old:
        from types import SimpleNamespace
        from curate.config.models import gating
        from curate.config.run import resolve
        from curate.config.thresholds import thresholds
        from curate.stages.score import score_spec
        from curate.stagekit.window_table import base_windows, score_items
        # the old ``_score_spec(run, th, gate)``: today's spec reads them from the resolved run
        return SimpleNamespace(gating=gating, thresholds=thresholds,
                               _score_spec=lambda run, _th, _gate: score_spec(resolve(run)),
                               _base_windows=base_windows, _score_items=score_items)
    spec = importlib.util.spec_from_file_location("old_pipeline", old)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _groups(t: pa.Table) -> list[tuple[int, int]]:
    sid = t["source_id"].combine_chunks().dictionary_encode().indices.to_numpy()
    starts = np.concatenate([[0], np.flatnonzero(sid[1:] != sid[:-1]) + 1, [t.num_rows]])
    return list(zip(starts[:-1].tolist(), starts[1:].tolist()))


def _write_parts(ck, records) -> int:
    """Write ``records`` as checkpoint parts of 64; how many were written."""
    recs, n = [], 0
    for rec in records:
        recs.append(rec)
        if len(recs) == 64:
            ck.write_part(recs)
            n, recs = n + len(recs), []
    if recs:
        ck.write_part(recs)
        n += len(recs)
    return n


def _split_records(out: Path, run: dict, win):
    """The split stage's records: unscored, unlabelled windows per source."""
    from curate.stages.split import split_spec
    from curate.stagekit.window_table import split_current
    from manifests import schemas
    base_cols = [c for c in schemas.WINDOWS.names
                 if c not in (*schemas.ALL_SCORES, *schemas.NOTE_COLUMNS)]
    from curate.config.run import resolve
    split_fp = split_current(out, split_spec(resolve(run)).params)
    for a, b in _groups(win):          # the windows table is grouped by source
        block = win.slice(a, b - a)
        sid = block["source_id"][0].as_py()
        rows = block.select(base_cols).to_pylist()
        for r in rows:
            r["class_name"] = r["split"] = None
            r["status"], r["error"] = "ok", None
        yield {"key": sid, "fp": split_fp[sid], "out": {"windows": rows}}


def _score_records(out: Path, run: dict, win):
    """What a worker returns per segment (slim rows: id, shot, times, scores)."""
    from curate.config.run import resolve
    from curate.execution.checkpoints import item_fingerprint
    from curate.stages.score import score_spec
    from curate.stagekit.window_table import base_windows, iter_score_items
    from manifests import schemas
    spec = score_spec(resolve(run))
    scored_cols = ["window_id", "shot_id", "start", "end", *SCORED, *schemas.ALL_SCORES,
                   *schemas.NOTE_COLUMNS]
    by_sid = {sid: (a, b) for a, b in _groups(win) for sid in [win["source_id"][a].as_py()]}
    for it in iter_score_items(out, base_windows(out, run), None, ""):
        a, b = by_sid[it["key"]]
        rows = win.slice(a, b - a).select(scored_cols).to_pylist()
        yield {"key": it["key"], "fp": item_fingerprint(spec, it), "out": {"windows": rows}}


def write_checkpoints(out: Path) -> dict:
    """work/split and work/score records for every ok segment of the built run."""
    from curate.execution.checkpoints import Checkpoint
    from manifests import schemas

    run = json.loads((out / "run.json").read_text())
    win = schemas.read_manifest(out, "windows")
    return {"split_records": _write_parts(Checkpoint(out, "split"), _split_records(out, run, win)),
            "score_records": _write_parts(Checkpoint(out, "score"), _score_records(out, run, win))}


def measure_items(out: Path, old: str | None) -> dict:
    """The score stage's driver work before Ray: base windows, score items, fingerprints."""
    pl = _load_pipeline(old)
    from curate.execution.checkpoints import item_fingerprint
    run = json.loads((out / "run.json").read_text())
    t = time.perf_counter()
    gate, _ = pl.gating(run)
    spec = pl._score_spec(run, pl.thresholds(run), gate)
    if old:   # the old score stage: row dicts of every window
        windows = pl._base_windows(out, run).to_pylist()
        items = pl._score_items(out, windows, {w["window_id"]: None for w in windows}, "")
    else:
        items = pl._score_items(out, pl._base_windows(out, run), None, "")
    fps = {it["key"]: item_fingerprint(spec, it) for it in items}
    dt = time.perf_counter() - t
    res = {"seconds": dt, "peak_rss_mib": _peak_mib(), "items": len(items),
           "windows": sum(len(it["inputs"]["windows"]) for it in items)}
    del items
    res["fp_digest"] = _digest(fps)
    return res


def measure_assemble(out: Path, old: str | None) -> dict:
    pl = _load_pipeline(old)
    run = json.loads((out / "run.json").read_text())
    t = time.perf_counter()
    table = pl.assemble_windows(out, run, write=False)
    dt = time.perf_counter() - t
    res = {"seconds": dt, "peak_rss_mib": _peak_mib(), "rows": table.num_rows}
    import pyarrow.compute as pc
    # rows that took a score record (a score or a note of the first filter)
    res["scored_rows"] = int(pc.sum(pc.or_(pc.is_valid(table["pixel_diff"]),
                                           pc.is_valid(table["pixel_diff_note"]))).as_py() or 0)
    res["table_digest"] = _table_digest(table)   # after the peak RSS was taken
    return res


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _digest(obj) -> str:
    import hashlib
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _table_digest(t: pa.Table) -> str:
    """Digest of the table's content, column by column (no row dicts)."""
    import hashlib
    h = hashlib.sha256()
    for name in t.column_names:
        h.update(name.encode())
        col = t[name].combine_chunks().cast(pa.string()).fill_null("\0null")
        for a in range(0, len(col), 65536):
            h.update("\n".join(col.slice(a, 65536).to_pylist()).encode())
    return h.hexdigest()[:16]


def _child(args) -> None:
    t0 = time.perf_counter()
    fn = {"items": measure_items, "assemble": measure_assemble}[args.measure]
    res = fn(args.run, args.old_module)
    res["process_seconds"] = time.perf_counter() - t0
    print(json.dumps(res))


def run_child(measure: str, out: Path, old: Path | None) -> dict:
    cmd = [PY, __file__, "--measure", measure, "--run", str(out)]
    if old:
        cmd += ["--old-module", str(old)]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode:
        raise RuntimeError(f"{measure} failed: {p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=176_000)
    ap.add_argument("--segments", type=int, default=105_000)
    ap.add_argument("--windows", type=int, default=1_100_000)
    ap.add_argument("--old", action="store_true", help=f"also measure the row-dict code of {OLD_COMMIT}")
    ap.add_argument("--keep", type=Path, help="build the run here and keep it (reused when present)")
    ap.add_argument("--measure", choices=["items", "assemble"], help=argparse.SUPPRESS)
    ap.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--old-module", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        _child(args)
        return
    from bench_tables import build

    tmp = Path(tempfile.mkdtemp(prefix="bench_score_mem_")) if args.keep is None else args.keep
    out = tmp / "run"
    try:
        if not (out / "work" / "score").exists():
            t = time.perf_counter()
            info = build(out, args.sources, args.segments, args.windows)
            info.update(write_checkpoints(out))
            print(f"built {info} in {time.perf_counter() - t:.1f} s at {out}")
        old = None
        if args.old:
            old = tmp / "old_pipeline.py"
            old.write_text(subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:curate/pipeline.py"],
                                          capture_output=True, text=True, check=True).stdout)
        results = {}
        for measure in ("items", "assemble"):
            for label, mod in (("new", None), ("old", old)) if old else (("new", None),):
                r = run_child(measure, out, mod)
                results[(measure, label)] = r
                extra = (f"{r['items']} items, {r['windows']} windows" if measure == "items"
                         else f"{r['rows']} rows, {r['scored_rows']} scored")
                print(f"{measure:<9} {label}: {r['seconds']:6.1f} s  peak RSS {r['peak_rss_mib']:6.0f} MiB"
                      f"  ({extra}; process {r['process_seconds']:.1f} s)")
        if old:
            same_fp = results[("items", "new")]["fp_digest"] == results[("items", "old")]["fp_digest"]
            same_tb = results[("assemble", "new")]["table_digest"] == results[("assemble", "old")]["table_digest"]
            print(f"same item fingerprints as {OLD_COMMIT}: {same_fp}; same windows table: {same_tb}")
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
