"""`curate select` and `curate stats --json` on a VGGSound-scale run: seconds and peak RSS.

Builds, in a temp dir, the manifests of a finished-up-to-scoring avsync15 run at VGGSound
scale (176k sources, ~105k downloaded segments, ~1.1M windows with every score and note
column of manifests/schemas.py, cascade-skipped notes, failed rows and failed downloads with
realistic error texts), then runs each command as a subprocess of a fresh wrapper whose
``RUSAGE_CHILDREN`` peak RSS is the command's own. Targets (issue 8): each under 10 s and
1.5 GB peak RSS on the 2-core machine.

    .venv/bin/python benchmarks/bench_tables.py [--windows 1100000] [--old] [--keep DIR]

``--old`` also times the row-dict stats (``curate/stats.py`` as of OLD_COMMIT) for comparison;
``--cli-select`` times ``curate select`` itself.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from manifests.schemas import write_manifest  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
#: the last commit with the row-dict stats (``--old`` compares with it)
OLD_COMMIT = "3729022"
CURATE = str(ROOT / ".venv" / "bin" / "curate")

DOWNLOAD_ERRORS = [   # (reason, error text) of failed downloads, as download.py records them
    ("unavailable", "ERROR: [youtube] {y}: Video unavailable"),
    ("unavailable", "ERROR: [youtube] {y}: Private video. Sign in if you've been granted access"),
    ("http_error", "HTTP Error 404: Not Found"),
    ("http_error", "HTTP Error 403: Forbidden"),
    ("timeout", "download: timed out after 30 s"),
    ("corrupt", "/out/media/raw/{s}.mp4: Invalid data found when processing input"),
    ("error", "download: too short: 4.0 s of 10 s"),
]


def _ids(rng: np.random.Generator, n: int) -> list[str]:
    alphabet = np.array(list(string.ascii_letters + string.digits + "-_"))
    chars = alphabet[rng.integers(0, len(alphabet), size=(n, 11))]
    return ["".join(r) for r in chars]


def _source_status(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Status and error of ``n`` source rows: 98.5% ok, 1% rejected, 0.5% skipped."""
    u = rng.random(n)
    status = np.where(u < 0.985, "ok", np.where(u < 0.995, "rejected", "skipped"))
    err = np.where(status == "rejected", "bad row: end <= start", None)
    return status, np.where(status == "skipped", "duplicate segment", err)


def build(out: Path, n_sources: int = 176_000, n_segments: int = 105_000,
          n_windows: int = 1_100_000, seed: int = 0) -> dict:
    """Write sources/downloads/shots/windows manifests and run.json under ``out``."""
    from curate.config.recipes import get_recipe
    from manifests.classes import recipe_folders

    rng = np.random.default_rng(seed)
    classes = np.array(recipe_folders("avsync15"))
    ytids = _ids(rng, n_sources)
    starts = rng.integers(0, 300, n_sources) * 1
    src_ids = [f"{y}_{s:06d}_{s + 10:06d}" for y, s in zip(ytids, starts.tolist())]
    cls = classes[rng.integers(0, len(classes), n_sources)]
    split = np.where(rng.random(n_sources) < 0.9, "train", "test")
    src_status, src_err = _source_status(rng, n_sources)
    write_manifest(out, "sources", pa.table({
        "source_id": src_ids, "ytid": ytids, "start": starts.astype(float), "end": starts + 10.0,
        "label": cls, "class_name": cls, "split": split,
        "url": [f"https://www.youtube.com/watch?v={y}" for y in ytids], "path": pa.nulls(n_sources, pa.string()),
        "status": src_status, "error": src_err}))
    # downloads: every accepted source has a row; n_segments of them ok
    ok_idx = np.nonzero(src_status == "ok")[0]
    ok_dl = np.sort(rng.choice(ok_idx, size=min(n_segments, len(ok_idx)), replace=False))
    failed = np.setdiff1d(ok_idx, ok_dl)
    err_pick = rng.integers(0, len(DOWNLOAD_ERRORS), len(failed))
    dl_ids = np.concatenate([ok_dl, failed])
    n_dl = len(dl_ids)
    reasons = ["ok"] * len(ok_dl) + [DOWNLOAD_ERRORS[k][0] for k in err_pick.tolist()]
    errors = [None] * len(ok_dl) + [DOWNLOAD_ERRORS[k][1].format(y=ytids[i], s=src_ids[i])
                                     for k, i in zip(err_pick.tolist(), failed.tolist())]
    w_h = np.array([[640, 360], [480, 360], [854, 480], [320, 240]])[rng.integers(0, 4, n_dl)]
    okm = np.arange(n_dl) < len(ok_dl)
    write_manifest(out, "downloads", pa.table({
        "source_id": [src_ids[i] for i in dl_ids.tolist()],
        "path": [f"/out/media/raw/{src_ids[i]}.mp4" if k else None for i, k in zip(dl_ids.tolist(), okm.tolist())],
        "status": np.where(okm, "ok", "failed"), "reason": reasons, "error": errors,
        "duration": pa.array(np.where(okm, 10.0, np.nan), mask=~okm),
        "width": pa.array(w_h[:, 0], mask=~okm), "height": pa.array(w_h[:, 1], mask=~okm),
        "fps": pa.array(np.full(n_dl, 25.0), mask=~okm), "has_audio": pa.array(okm, mask=~okm),
        "sample_rate": pa.array(np.full(n_dl, 44100), mask=~okm),
        "audio_channels": pa.array(np.full(n_dl, 2), mask=~okm),
        # the segment on the file's clock (a stream copy from the keyframe before it)
        "seg_start": pa.array(np.full(n_dl, 0.5), mask=~okm), "seg_end": pa.array(np.full(n_dl, 10.5), mask=~okm),
        "stream_copy": pa.array(okm, mask=~okm), "rendition": pa.array(np.full(n_dl, "full"), mask=~okm)}))
    windows = _shots_and_windows(out, rng, ok_dl, src_ids, cls, split, n_windows)
    recipe = get_recipe("avsync15")
    (out / "run.json").write_text(json.dumps({"recipe": recipe, "options": {
        "workers": 64, "clip_checkpoint": "open_clip.bin", "imagebind_checkpoint": "imagebind_huge.pth",
        "sync_checkpoint": "sync.pt"}}))
    return {"sources": n_sources, "downloads": n_dl, "segments": len(ok_dl), "windows": windows}


def _shots_and_windows(out: Path, rng, seg: np.ndarray, src_ids, cls, split, n_windows: int) -> int:
    """Shots with 0-2 cuts on a 0.5-s grid per segment; 3-s windows at 0.5-s stride inside."""
    n_seg = len(seg)
    n_cuts = rng.choice([0, 1, 2], size=n_seg, p=[0.45, 0.35, 0.2])
    sh_seg = np.repeat(np.arange(n_seg), n_cuts + 1)
    sh_k = np.arange(len(sh_seg)) - np.repeat(np.cumsum(n_cuts + 1) - (n_cuts + 1), n_cuts + 1)
    cuts = np.sort(rng.integers(2, 19, size=(n_seg, 2)) * 0.5, axis=1)
    bounds = np.zeros((n_seg, 4))
    bounds[:, 1:3] = cuts
    bounds[:, 3] = 10.0
    sh_start = np.where(sh_k == 0, 0.0, bounds[sh_seg, np.minimum(sh_k, 2)])
    last = sh_k == n_cuts[sh_seg]
    sh_end = np.where(last, 10.0, bounds[sh_seg, np.minimum(sh_k + 1, 2)])
    sh_end = np.maximum(sh_end, sh_start)
    sids = np.array(src_ids, dtype=object)[seg][sh_seg]
    shot_ids = [f"{s}_shot{k:03d}" for s, k in zip(sids.tolist(), sh_k.tolist())]
    write_manifest(out, "shots", pa.table({
        "shot_id": shot_ids, "source_id": sids.tolist(), "shot_index": sh_k,
        "start": sh_start, "end": sh_end, "status": np.full(len(sh_k), "ok"),
        "error": pa.nulls(len(sh_k), pa.string())}))
    n_w = np.maximum(np.floor((sh_end - sh_start - 3.0) / 0.5 + 1e-9).astype(int) + 1, 0)
    n_w[sh_end - sh_start < 3.0] = 0
    # scale to the wanted window count by trimming / repeating shots' windows is not needed:
    # report what the geometry gives (about 10.5 windows per segment)
    w_shot = np.repeat(np.arange(len(sh_k)), n_w)
    w_j = np.arange(len(w_shot)) - np.repeat(np.cumsum(n_w) - n_w, n_w)
    w_start = sh_start[w_shot] + 0.5 * w_j
    n = len(w_shot)
    if n > n_windows:                     # keep the first n_windows (whole table order kept)
        w_shot, w_start, n = w_shot[:n_windows], w_start[:n_windows], n_windows
    w_seg = sh_seg[w_shot]
    w_src = pa.array(sids[w_shot].tolist())
    ms = pc.utf8_lpad(pc.cast(pa.array(np.round(w_start * 1000).astype(np.int64)), pa.string()), 6, "0")
    window_id = pc.binary_join_element_wise(w_src, ms, "_")
    scores, notes, status, error = _scores(rng, n, w_seg)
    tbl = pa.table({
        "window_id": window_id, "source_id": w_src, "shot_id": pa.array(shot_ids).take(pa.array(w_shot)),
        "class_name": pa.array(cls[seg][w_seg]), "split": pa.array(split[seg][w_seg]),
        "start": w_start, "end": w_start + 3.0, "status": status, "error": error,
        **scores, **notes})
    write_manifest(out, "windows", tbl)
    return n


def _scores(rng, n: int, seg: np.ndarray):
    """Score columns with a per-segment effect (kept windows cluster, so they merge), the
    cascade's skipped notes, and failed rows; default thresholds keep ~9% of windows."""
    def seg_effect(scale):
        return rng.normal(0, scale, seg.max() + 1)[seg]
    pix = np.exp(rng.normal(np.log(0.05), 0.5, n) + seg_effect(0.6))
    amp = np.abs(rng.normal(0.2, 0.15, n) + seg_effect(0.05))
    clip = rng.normal(0.38, 0.17, n) + seg_effect(0.08)
    ia = rng.normal(0.18, 0.08, n) + seg_effect(0.05)
    it = rng.normal(0.24, 0.06, n) + seg_effect(0.04)
    a2v = np.clip(rng.normal(0.36, 0.06, n) + seg_effect(0.05), 0, 1)
    v2a = np.clip(a2v + rng.normal(0, 0.02, n), 0, 1)
    vals = {"pixel_diff": pix, "amplitude": amp, "clip_diff": clip, "imagebind_ia": ia,
            "imagebind_it": it, "sync_a2v": a2v, "sync_v2a": v2a}
    from filters import registry
    th = registry.default_thresholds()
    alive = np.ones(n, dtype=bool)
    u = rng.random(n)
    failed = u < 0.004
    null = {c: failed.copy() for c in vals}
    notes = {f"{f}_note": np.full(n, None, dtype=object) for f in registry.ORDER}
    for f in registry.ORDER:                 # the cascade: later filters skipped, with a note
        skip = ~alive & ~failed
        for c in registry.columns(f):
            null[c] |= skip
        notes[f"{f}_note"][skip] = np.array(
            [registry.SKIP_REJECTED + g for g in registry.ORDER], dtype=object)[_first_fail(f, vals, th, skip)]
        ok = np.ones(n, dtype=bool)
        for col, key, kind in registry.BOUNDS[f]:
            b = th[f].get(key)
            ok &= vals[col] >= b if kind == "min" else vals[col] <= b
        alive &= ok
    err_note = (u > 0.004) & (u < 0.006)     # a model error on one filter
    null["sync_a2v"] |= err_note
    null["sync_v2a"] |= err_note
    notes["sync_note"][err_note & (notes["sync_note"] == None)] = "error: RuntimeError: CUDA out of memory"  # noqa: E711
    scores = {c: pa.array(v, mask=null[c]) for c, v in vals.items()}
    status = np.where(failed, "failed", "ok")
    err_kind = rng.integers(0, 3, n)
    err_text = np.array(["score: decode: /out/media/raw/x.mp4: moov atom not found",
                         "score: RuntimeError: shape mismatch", "score: timeout after 600 s"],
                        dtype=object)[err_kind]
    error = np.where(failed, err_text, None)
    for f in registry.ORDER:
        notes[f"{f}_note"] = np.where(failed, "error: not scored", notes[f"{f}_note"])
    return scores, {k: pa.array(v.tolist(), type=pa.string()) for k, v in notes.items()}, \
        pa.array(status.tolist()), pa.array(error.tolist(), type=pa.string())


def _first_fail(f, vals, th, skip):
    """Index in ORDER of the first filter before ``f`` the skipped windows failed (for notes)."""
    from filters import registry
    idx = np.zeros(len(skip), dtype=np.int64)
    done = np.zeros(len(skip), dtype=bool)
    for i, g in enumerate(registry.ORDER[:registry.ORDER.index(f)]):
        ok = np.ones(len(skip), dtype=bool)
        for col, key, kind in registry.BOUNDS[g]:
            b = th[g].get(key)
            ok &= vals[col] >= b if kind == "min" else vals[col] <= b
        hit = ~ok & ~done
        idx[hit] = i
        done |= hit
    return idx[skip]


WRAP = ("import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
        "dt = time.perf_counter() - t\n"
        "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(f'{p.returncode} {dt:.2f} {ru.ru_maxrss / 1024:.0f} {ru.ru_utime + ru.ru_stime:.2f}')\n"
        "sys.stderr.write(p.stderr[-2000:] if p.returncode else '')\n")


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB, CPU seconds user+sys) of ``cmd``, run by a fresh wrapper
    (its only child). CPU seconds say what the command costs when the machine is shared."""
    p = subprocess.run([PY, "-c", WRAP, *cmd], capture_output=True, text=True, check=True)
    rc, dt, rss, cpu = p.stdout.split()
    if rc != "0":
        raise RuntimeError(f"{cmd} failed: {p.stderr}")
    return float(dt), float(rss), float(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=176_000)
    ap.add_argument("--segments", type=int, default=105_000)
    ap.add_argument("--windows", type=int, default=1_100_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--old", action="store_true", help="also time the row-dict stats (as of "
                    "OLD_COMMIT; the row-dict select is only the tests' oracle now)")
    ap.add_argument("--html", action="store_true", help="also time the HTML report")
    ap.add_argument("--cli-select", action="store_true", help="also time `curate select` (the CLI)")
    ap.add_argument("--keep", type=Path, help="build the run here and keep it")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_tables_")) if args.keep is None else args.keep
    out = tmp / "run"
    try:
        if not (out / "manifests" / "windows.parquet").exists():
            t = time.perf_counter()
            info = build(out, args.sources, args.segments, args.windows)
            print(f"built {info} in {time.perf_counter() - t:.1f} s at {out}")
        sizes = {p.name: p.stat().st_size for p in (out / "manifests").glob("*.parquet")}
        print("manifest MiB: " + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sorted(sizes.items())))
        new_select = [PY, "-c", "import sys; from curate.build import stage_value; "
                      "from curate.config.run_state import load_run; "
                      "s = stage_value('select', sys.argv[1], load_run(sys.argv[1])); "
                      "print(s['funnel']['kept'], s['balance']['selected'])", str(out)]
        runs = [("select (the select stage)", new_select),
                ("curate stats --json", [CURATE, "stats", str(out), "--json"])]
        if args.html:
            runs.append(("curate stats --html", [CURATE, "stats", str(out), "--html", str(tmp / "report.html")]))
        if args.cli_select:
            runs.insert(1, ("curate select (CLI)", [CURATE, "select", str(out)]))
        if args.old:
            old_stats = tmp / "old_stats.py"
            old_stats.write_text(subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:curate/stats.py"],
                                                capture_output=True, text=True, check=True).stdout)
            runs.append(("old stats (row dicts)", [PY, "-c", "import sys, json, importlib.util; "
                         "sp = importlib.util.spec_from_file_location('old_stats', sys.argv[2]); "
                         "m = importlib.util.module_from_spec(sp); sp.loader.exec_module(m); "
                         "json.dumps(m.collect(sys.argv[1]), default=str)", str(out), str(old_stats)]))
        for name, cmd in runs:
            for _ in range(args.repeat):
                dt, rss, cpu = measure(cmd)
                print(f"{name:<26} {dt:6.2f} s  peak RSS {rss:7.0f} MiB  CPU {cpu:6.2f} s  "
                      f"(load average {os.getloadavg()[0]:.1f})")
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
