"""The GPU readiness check: one command, one JSON report, sized for the bare lent GPU machine.

    bash scripts/device_bundle.sh                                     # here: the wheels into .whl/
    python3 benchmarks/device_check.py --out $OUT/device_check.json   # there (device run, carry .whl)
    python benchmarks/device_check.py --smoke --out /tmp/dc.json      # CPU, small models (a test runs it)

On the lent machine, as one device ``run`` with ``carry: [".whl"]`` and ``timeout_s`` 560:
``PYTHONUNBUFFERED=1 python3 benchmarks/device_check.py --out $OUT/device_check.json 2>&1 | tee $OUT/log``.

What it measures (every figure in the report is measured by this run unless its key says
``projected``):

* ``models``: per model (ImageBind-huge image / audio / text, CLIP ViT-B/32, the full sync
  classifier, the latter also channels-last) inputs/s at a few batch sizes in fp32 (TF32
  off), TF32 and bf16 autocast (``filters.precision``), peak GPU memory and achieved TFLOP/s
  (FLOPs per input counted with ``FlopCounterMode`` on the loaded model).
* ``score_segments``: ``curate.ops.scoring.score_segments`` end to end on synthetic 224x224
  10-s grids (windows from VGGSS-shaped shots, ``bench_flops.vggss_corpus``), four segments a
  call as the scoring actor does, no gating (every model on every window: the upper bound),
  at the scorers' default precision (bf16 on CUDA): windows/s and the GPU busy fraction
  (nvidia-smi utilisation sampled every 0.2 s); again at 16 segments a call
  (``score_segments_16``: ``engine.score_batch_size`` 16 fills larger batches).
* ``accuracy``: the largest |score(device, default precision) - score(CPU, fp32)| per score
  column on the same windows (and device fp32 against CPU fp32), next to
  ``filters.precision.BF16_TOLERANCE``. With ``--smoke``: CPU bf16 against CPU fp32.
* ``decode``: ``decoding.media.decode_grid`` source-seconds/s on one core and on all cores
  (one process per core) on generated 360p and 720p H.264 10-s files (needs PyAV).
* ``gpu_decode``: ``decoding.gpu.decode_grid_gpu`` (NVDEC through PyNvVideoCodec, a wheel in
  the bundle) on the same files: source-seconds/s on the GPU, the CPU-ms per source-second it
  still takes (demux, audio), GPU memory (torch's peak and nvidia-smi's), pixels against the
  CPU path, and decode cores per GPU at VGGSS (``bench_decode.cores_per_gpu``, 400 and 160
  TFLOP/s) with and without it. Skipped with the reason where it cannot run (no CUDA, no
  PyNvVideoCodec: every CPU machine, ``--smoke`` included).
* ``projection``: VGGSS GPU-hours (1.10M windows) at the measured windows/s, with and without
  the cascade (FLOP ratio at the stated pass rates of ``bench_flops``), and the CPU cores per
  GPU that decoding needs to keep up.
* ``ray``: the Ray actor-pool path (``curate.execution.checkpoints.run_stage`` on the engine) when ``ray``
  imports (not on the lent machine: its wheel is too big to travel); with ``--smoke`` only
  with ``--ray``.

Weights: random, of the real sizes, written to the files users pass (``imagebind_huge``
state dict, an open_clip ViT-B-32 checkpoint, our sync checkpoint) and loaded through the
real loaders (``curate.config.models.build_scorers``). ``--smoke`` uses the small models instead
(tiny ImageBind / CLIP, the tiny sync classifier) through the same loaders.

Packages the lent machine lacks (open_clip and its small dependencies, PyAV) travel as
wheels in ``.whl/`` (``scripts/device_bundle.sh``); when one is missing here they are
installed from there (``pip --no-index``) into a temporary folder first. A section whose
package is still missing is reported as skipped with the reason; nothing here needs Ray.
A time budget (``--budget-s``) guards the whole run: a measurement that would start past it
is recorded as skipped, and the report is rewritten after every section.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

log = logging.getLogger("device_check")

#: modules the lent machine's image lacks -> the wheel that brings each (scripts/device_bundle.sh)
BUNDLE_MODULES = {"open_clip": "open_clip_torch", "ftfy": "ftfy", "wcwidth": "wcwidth", "av": "av"}
#: needed only where a GPU is (the NVDEC decode of ``gpu_decode``); its wheel is cp312 only
GPU_BUNDLE_MODULES = {"PyNvVideoCodec": "pynvvideocodec"}


def _bundle_modules() -> dict[str, str]:
    import torch
    return {**BUNDLE_MODULES, **(GPU_BUNDLE_MODULES if torch.cuda.is_available() else {})}


# ---------------------------------------------------------------- bundle and environment

def install_bundle(wheels: Path, target: Path) -> dict[str, Any]:
    """Install the travelling wheels when a module they provide is missing."""
    missing = [m for m in _bundle_modules() if importlib.util.find_spec(m) is None]
    out: dict[str, Any] = {"missing_before": missing, "wheels_dir": str(wheels)}
    if not missing:
        return out
    files = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    out["wheels"] = [f.name for f in files]
    if not files:
        out["error"] = f"no wheels in {wheels} (run scripts/device_bundle.sh where pip can download)"
        return out
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                          "--no-compile", "--no-cache-dir", "--target", str(target), *map(str, files)],
                         capture_output=True, text=True)
    out["install_s"] = round(time.perf_counter() - t, 1)
    if res.returncode != 0:
        out["error"] = res.stderr[-2000:]
        return out
    sys.path.insert(0, str(target))
    # decode worker processes (spawned) find the wheels too
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), str(ROOT), os.environ.get("PYTHONPATH", "")])
    importlib.invalidate_caches()
    out["missing_after"] = [m for m in _bundle_modules() if importlib.util.find_spec(m) is None]
    return out


def environment(device: str) -> dict[str, Any]:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "device": device, "cpu_count": os.cpu_count(),
           "load_average": os.getloadavg()[0]}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1))
    from filters.torch_compat import import_open_clip, import_torchvision

    loaders = {"torchvision": import_torchvision, "open_clip": import_open_clip}
    for m in ("torchvision", "open_clip", "av", "ray", "timm"):
        try:
            mod = loaders[m]() if m in loaders else importlib.import_module(m)
            env[m] = getattr(mod, "__version__", "present")
        except Exception as e:  # noqa: BLE001 - absent or broken: say which
            env[m] = f"missing ({type(e).__name__}: {str(e)[:120]})"
    env["torch_threads"] = torch.get_num_threads()
    # what the figures were taken under: the scoring workers' settings (deterministic_torch)
    env["torch_settings"] = {"deterministic": torch.are_deterministic_algorithms_enabled(),
                             "cudnn_benchmark": torch.backends.cudnn.benchmark,
                             "cudnn_deterministic": torch.backends.cudnn.deterministic}
    return env


class Deadline:
    """The run's time budget; sections ask whether a measurement may start."""

    def __init__(self, seconds: float) -> None:
        self.t0, self.seconds = time.monotonic(), seconds

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.t0)

    def ok(self, need: float = 0.0) -> bool:
        return self.left() > need


# ---------------------------------------------------------------- weights through the real loaders

def write_weights(folder: Path, smoke: bool, device: str) -> dict[str, str]:
    """Random weights of the real sizes (smoke: the small models) in the files users pass."""
    import torch
    from filters.imagebind_model import ImageBind, ImageBindConfig
    from filters.torch_compat import import_open_clip
    from sync_classifier.model import SyncClassifier, SyncConfig, save_checkpoint, tiny_config

    torch.manual_seed(0)
    paths = {"imagebind": folder / "imagebind_random.pth", "clip": folder / "clip_random.pt",
             "sync": folder / "sync_random.pt"}
    init = device if device == "cuda" else "cpu"   # 1.2 B parameters initialise faster there
    with torch.device(init):
        ib = ImageBind(ImageBindConfig.tiny() if smoke else None)
    torch.save({k: v.cpu() for k, v in ib.state_dict().items()}, paths["imagebind"])
    del ib
    if smoke:
        from filters.clip_model import _tiny_clip
        clip = _tiny_clip(import_open_clip())
        torch.save(clip.state_dict(), paths["clip"])
    else:
        clip = import_open_clip().create_model("ViT-B-32", pretrained=None)
        torch.save({"state_dict": clip.state_dict()}, paths["clip"])
    save_checkpoint(paths["sync"], SyncClassifier(tiny_config() if smoke else SyncConfig()))
    return {k: str(v) for k, v in paths.items()}


def load_scorers(paths: dict[str, str], smoke: bool, device: str):
    """``curate.ops.scoring.Scorers`` from the weight files (default precision for ``device``)."""
    from curate.ops.scoring import Scorers

    if not smoke:   # exactly what a run does with --imagebind/--clip/--sync-checkpoint
        from curate.config.models import build_scorers
        models = {f: {"model": m, "weights": paths[m], "random": False}
                  for f, m in (("clip_diff", "clip"), ("imagebind", "imagebind"), ("sync", "sync"))}
        return build_scorers(models, {"clip_model": "ViT-B-32", "clip_pretrained": "openai"}, device)
    from filters.clip_model import ClipScorer
    from filters.imagebind_scorer import ImageBindScorer
    from filters.imagebind_model import ImageBindConfig
    from filters.sync import SyncScorer
    return Scorers(clip=ClipScorer.from_checkpoint(paths["clip"], model="tiny", device=device),
                   imagebind=ImageBindScorer.from_checkpoint(paths["imagebind"], device=device,
                                                             config=ImageBindConfig.tiny()),
                   sync=SyncScorer.from_checkpoint(paths["sync"], device=device))


# ---------------------------------------------------------------- per-model throughput

def _sync(device: str) -> None:
    import torch
    if device == "cuda":
        torch.cuda.synchronize()


def _gflops(fn: Callable, x) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        fn(*x) if isinstance(x, tuple) else fn(x)
    return fc.get_total_flops() / 1e9


def _inputs(kind: str, n: int, device: str, frame: int):
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    if kind == "image":
        return torch.randn(n, 3, 224, 224, generator=g).to(device)
    if kind == "audio":
        return torch.randn(n, 1, 128, 204, generator=g).to(device)
    if kind == "text":
        t = torch.randint(1, 49000, (n, 77), generator=g)
        t[:, -1] = 49407   # an end token (the highest id) where the text pools
        return t.to(device)
    if kind == "pair":
        return (torch.randn(n, 1, 128, 204, generator=g).to(device),
                torch.randn(n, 3, 12, frame, frame, generator=g).to(device))
    raise ValueError(kind)


def model_table(sc, smoke: bool) -> list[tuple[str, str, Callable, list[int]]]:
    """(name, input kind, forward, batch sizes) of every model the filters use."""
    ib, clip, sync = sc.imagebind.model, sc.clip.model, sc.sync.model
    small = [2]
    return [
        ("imagebind.image", "image", ib.embed_vision, small if smoke else [32, 128]),
        ("imagebind.audio", "audio", ib.embed_audio, small if smoke else [64, 256]),
        ("imagebind.text", "text", ib.embed_text, small if smoke else [64, 256]),
        ("clip.image", "image", clip.encode_image, small if smoke else [64, 256, 1024]),
        ("sync.full", "pair", lambda mel, vid: sync(mel, vid), small if smoke else [16, 64]),
    ]


def _channels_last(model, on: bool) -> None:
    import torch
    for p in model.parameters():
        if p.dim() in (4, 5):
            fmt = (torch.channels_last if p.dim() == 4 else torch.channels_last_3d) if on \
                else torch.contiguous_format
            p.data = p.data.contiguous(memory_format=fmt)


def time_forward(fn: Callable, x, device: str, min_s: float, max_reps: int = 50) -> tuple[float, int]:
    """Seconds per call after one warm-up call, at least 2 calls and ``min_s`` seconds."""
    import torch

    call = (lambda: fn(*x)) if isinstance(x, tuple) else (lambda: fn(x))
    with torch.inference_mode():
        call()
        _sync(device)
        reps, t0 = 0, time.perf_counter()
        while reps < 2 or (time.perf_counter() - t0 < min_s and reps < max_reps):
            call()
            _sync(device)
            reps += 1
    return (time.perf_counter() - t0) / reps, reps


def bench_models(sc, device: str, smoke: bool, deadline: Deadline, section_s: float) -> dict:
    import torch
    from filters import precision

    # production settings (``deterministic_torch``, set in ``run``): no cuDNN autotuning
    out: dict[str, Any] = {}
    stop = min(deadline.left(), section_s)
    t_section = time.monotonic()
    frame = sc.sync.frame_size or 224
    sync_model = sc.sync.model
    _channels_last(sync_model, False)
    table = model_table(sc, smoke)
    table.append(("sync.full channels-last", "pair", table[-1][2], table[-1][3]))
    for name, kind, fn, batches in table:
        if name.endswith("channels-last"):
            _channels_last(sync_model, True)
        one = _inputs(kind, 1, device, frame)
        with precision.compute("fp32", device):
            gf = _gflops(fn, one)
        res: dict[str, Any] = {"gflop_per_input": round(gf, 3), "runs": []}
        for prec in ("fp32", "tf32", "bf16"):
            for b in batches:
                row: dict[str, Any] = {"precision": prec, "batch": b}
                if time.monotonic() - t_section > stop or not deadline.ok(30):
                    row["skipped"] = "time budget"
                    res["runs"].append(row)
                    continue
                try:
                    x = _inputs(kind, b, device, frame)
                    if device == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                    with precision.compute(prec, device):
                        dt, reps = time_forward(fn, x, device, 0.05 if smoke else 1.0)
                    row.update(inputs_per_s=round(b / dt, 2), ms_per_call=round(1000 * dt, 2), reps=reps,
                               tflops=float(f"{b * gf / dt / 1000:.4g}"))
                    if device == "cuda":
                        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
                    del x
                except Exception as e:  # noqa: BLE001 - e.g. out of memory at a batch size
                    row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                    if device == "cuda":
                        torch.cuda.empty_cache()
                res["runs"].append(row)
        out[name] = res
        log.info("%s: %s", name, [(r["precision"], r["batch"], r.get("inputs_per_s")) for r in res["runs"]])
    _channels_last(sync_model, sc.sync.channels_last)   # back to what the scorer chose
    return out


# ---------------------------------------------------------------- score_segments end to end

def synthetic_grid(seed: int, size: int = 224, seconds: float = 10.0):
    """A 10-s 224x224 grid: a moving gradient with noise, a tone with noise."""
    import numpy as np
    from decoding.media import Grid

    rng = np.random.default_rng(seed)
    n = int(seconds * 12)
    yy, xx = np.mgrid[0:size, 0:size]
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        base = (xx + 3 * i + 7 * seed) % 256
        frames[i] = np.clip(base[..., None] + rng.integers(-20, 20, (size, size, 3)), 0, 255)
    t = np.arange(int(seconds * 16000)) / 16000
    audio = 0.3 * np.sin(2 * np.pi * (220 + 20 * seed) * t) + 0.05 * rng.standard_normal(len(t))
    return Grid(frames=frames, audio_channels=audio[None].astype(np.float32), start=0.0)


def segment_jobs(n: int, seed: int = 0) -> list:
    import bench_flops as bf
    from curate.ops.scoring import SegmentJob

    segs, _ = bf.vggss_corpus(n, bf.VGGSS_WINDOWS / bf.VGGSS_SHOTS, seed)
    return [SegmentJob(synthetic_grid(i), ws, "dog barking") for i, ws in enumerate(segs)]


class GpuMonitor:
    """nvidia-smi sampled every ``period`` s while the block runs: utilisation (the share of
    time a kernel was running) and memory used. Also ``bench_gpu_scoring``'s sampler."""

    def __init__(self, device: str = "cuda", period: float = 0.2) -> None:
        self.samples: list[tuple[float, float]] = []      # (utilisation %, MiB used)
        self.period = period
        self._stop = threading.Event()
        self._on = device == "cuda" and shutil.which("nvidia-smi") is not None
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip():
                u, m = r.stdout.strip().splitlines()[0].split(",")
                self.samples.append((float(u), float(m)))
            self._stop.wait(self.period)

    def __enter__(self) -> "GpuMonitor":
        if self._on:
            self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._t.is_alive():
            self._t.join()

    def busy(self) -> float | None:
        """Mean utilisation as a fraction, or None without samples."""
        return round(sum(u for u, _ in self.samples) / len(self.samples) / 100, 3) if self.samples else None

    def summary(self) -> str:
        if not self.samples:
            return "no nvidia-smi samples (no GPU)"
        return (f"GPU utilisation mean {100 * self.busy():.0f}%, "
                f"memory peak {max(m for _, m in self.samples) / 1024:.1f} GiB")


def bench_score_segments(sc, device: str, jobs: list, rows: list, batch: int = 4) -> dict:
    """Windows/s of ``score_segments`` over ``jobs``; their rows are appended to ``rows``."""
    import torch
    from curate.ops.scoring import score_segments

    n_segments, n_win = len(jobs), sum(len(j.windows) for j in jobs)
    if device == "cuda":   # warm-up: cuDNN autotuning, allocator, tokenizer
        score_segments(jobs[:1], sc, None, cascade=False)
        _sync(device)
        torch.cuda.reset_peak_memory_stats()
    with GpuMonitor(device) as mon:
        t = time.perf_counter()
        for i in range(0, len(jobs), batch):
            rows += score_segments(jobs[i:i + batch], sc, None, cascade=False)   # (rows are copies)
        _sync(device)
        dt = time.perf_counter() - t
    out = {"segments": n_segments, "windows": n_win, "segments_per_call": batch,
           "precision": {"clip": sc.clip.precision, "imagebind": sc.imagebind.precision,
                         "sync": sc.sync.precision},
           "scorer_batch": {"clip": sc.clip.batch_size, "imagebind": sc.imagebind.batch_size,
                            "sync": sc.sync.batch_size},
           "gating": "none (every model on every window)", "seconds": round(dt, 2),
           "windows_per_s": round(n_win / dt, 2), "gpu_busy_fraction": mon.busy()}
    if device == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    return out


# ---------------------------------------------------------------- accuracy against CPU fp32

def _rows(sc, jobs) -> list[dict]:
    from curate.ops.scoring import score_segments
    return [r for rs in score_segments(jobs, sc, None, cascade=False) for r in rs]


def max_diffs(a: list[dict], b: list[dict]) -> dict[str, float | None]:
    from manifests.schemas import ALL_SCORES

    out: dict[str, float | None] = {}
    for c in ALL_SCORES:
        d = [abs(x[c] - y[c]) for x, y in zip(a, b) if x[c] is not None and y[c] is not None]
        out[c] = float(max(d)) if d else None
    return out


def bench_accuracy(sc, paths: dict[str, str], smoke: bool, device: str, jobs: list,
                   scored: list[list[dict]]) -> dict:
    """``scored``: the rows ``bench_score_segments`` gave for ``jobs`` (default precision)."""
    from filters import precision

    if device == "cuda":
        cpu = load_scorers(paths, smoke, "cpu")
        ref = _rows(cpu, jobs)                        # CPU fp32 (the default there)
        del cpu
        dev = [r for rs in scored for r in rs]        # the device's default: bf16
        what = f"{device} {sc.imagebind.precision} vs cpu fp32"
    else:                                             # smoke: bf16 autocast on the CPU
        ref = [r for rs in scored for r in rs]
        _set_precision(sc, "bf16")
        dev = _rows(sc, jobs)
        _set_precision(sc, "fp32")
        what = "cpu bf16 vs cpu fp32"
    out: dict[str, Any] = {"windows": len(ref), "compared": what, "max_abs_diff": max_diffs(dev, ref),
                           "tolerance": precision.BF16_TOLERANCE}
    # a column without a declared tolerance must not move: arithmetic filters, and models
    # that run in fp32 on the CPU whatever the precision (Silero VAD)
    out["within_tolerance"] = all(v is None or v <= precision.BF16_TOLERANCE.get(c, 0.0) + 1e-12
                                  for c, v in out["max_abs_diff"].items())
    if device == "cuda":
        _set_precision(sc, "fp32")
        out["max_abs_diff_fp32_vs_cpu_fp32"] = max_diffs(_rows(sc, jobs), ref)
        _set_precision(sc, "auto")
    return out


def _set_precision(sc, name: str) -> None:
    from filters import precision
    for s in (sc.clip, sc.imagebind, sc.sync):
        s.precision = precision.resolve(name, s.device)


# ---------------------------------------------------------------- CPU decode

def make_video(path: Path, height: int, seconds: float = 10.0, fps: int = 25,
               preset: str | None = None) -> str:
    """An H.264 (else MPEG-4) + AAC file written with PyAV (no ffmpeg binary needed).
    ``preset``: libx264's (its default, medium, when None; bench_decode passes veryfast,
    which encodes a 60-s 720p file several times faster)."""
    import av
    import numpy as np

    width = height * 16 // 9 // 2 * 2
    rng = np.random.default_rng(height)
    with av.open(str(path), "w") as c:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        v = c.add_stream(codec, rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        if preset and codec == "libx264":
            v.options = {"preset": preset}
        a = c.add_stream("aac", rate=44100)
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(int(seconds * fps)):
            img = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256], -1)
            img = np.clip(img + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        t = np.arange(int(seconds * 44100)) / 44100
        sig = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for k in range(0, len(sig), 1024):
            f = av.AudioFrame.from_ndarray(sig[None, k:k + 1024], format="fltp", layout="mono")
            f.sample_rate = 44100
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    return codec


def _decode_seconds(path: str) -> float:
    from decoding.media import decode_grid
    g = decode_grid(path)
    return g.duration


def bench_decode(folder: Path, smoke: bool, deadline: Deadline) -> dict:
    import multiprocessing as mp

    out: dict[str, Any] = {}
    seconds = 2.0 if smoke else 10.0
    cores = os.cpu_count() or 1
    for h in (360,) if smoke else (360, 720):
        if not deadline.ok(40):
            out[f"{h}p"] = {"skipped": "time budget"}
            continue
        p = folder / f"decode_{h}p.mp4"
        codec = make_video(p, h, seconds)
        t = time.perf_counter()
        src = _decode_seconds(str(p))
        one = src / (time.perf_counter() - t)
        n = cores * (1 if smoke else 2)   # two files per process, each decoded whole
        ctx = mp.get_context("spawn")   # fresh processes: no torch threads inherited
        with ctx.Pool(cores) as pool:
            pool.map(_decode_seconds, [str(p)] * cores)          # warm the workers
            t = time.perf_counter()
            total = sum(pool.map(_decode_seconds, [str(p)] * n))
            allc = total / (time.perf_counter() - t)
        out[f"{h}p"] = {"codec": codec, "source_seconds": seconds,
                        "one_process_source_s_per_s": round(one, 2),
                        "all_cores_source_s_per_s": round(allc, 2), "processes": cores,
                        "per_core_source_s_per_s": round(allc / cores, 2),
                        "cpu_ms_per_source_second": round(1000 * cores / allc, 1)}
    return out


# ---------------------------------------------------------------- GPU decode (NVDEC)

def _gpu_decode_once(path: str) -> tuple[float, float]:
    """(source seconds, CPU seconds) of one ``decode_grid_gpu`` (frames left on the GPU)."""
    import torch

    from decoding.gpu import decode_grid_gpu
    t = time.process_time()
    g = decode_grid_gpu(path, to_cpu=False)
    torch.cuda.synchronize()
    return g.duration, time.process_time() - t


def bench_gpu_decode(folder: Path, smoke: bool, deadline: Deadline, cpu: dict) -> dict:
    """``decoding.gpu.decode_grid_gpu`` on the ``decode`` section's files: source-seconds per
    second on one GPU (one process), the CPU it still takes (demux, audio), GPU memory, the
    pixels against the CPU path, and decode cores per GPU at VGGSS with and without it."""
    from decoding.gpu import unavailable
    reason = unavailable()
    if reason:
        return {"skipped": reason}
    import numpy as np
    import torch

    from bench_decode import TFLOPS, cores_per_gpu
    from decoding.media import decode_grid
    out: dict[str, Any] = {}
    for h in (360,) if smoke else (360, 720):
        p = folder / f"decode_{h}p.mp4"
        if not deadline.ok(30) or not p.exists():
            out[f"{h}p"] = {"skipped": "time budget" if p.exists() else "no file from the decode section"}
            continue
        _gpu_decode_once(str(p))                         # warm: decoder session, kernels
        torch.cuda.reset_peak_memory_stats()
        src = cpu_s = 0.0
        with GpuMonitor() as mon:
            t = time.perf_counter()
            for _ in range(2 if smoke else 8):
                s_, c_ = _gpu_decode_once(str(p))
                src, cpu_s = src + s_, cpu_s + c_
            wall = time.perf_counter() - t
        diff = np.abs(decode_grid(str(p)).frames.astype(np.int16)
                      - decode_grid_gpu_frames(str(p)).astype(np.int16))
        ms = 1000 * cpu_s / src
        row = {"source_s_per_s": round(src / wall, 1), "cpu_ms_per_source_second": round(ms, 2),
               "torch_peak_mib": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1),
               "gpu": mon.summary(), "pixels_vs_cpu_mean_abs": round(float(diff.mean()), 3),
               "pixels_vs_cpu_max_abs": int(diff.max())}
        cpu_ms = (cpu.get(f"{h}p") or {}).get("cpu_ms_per_source_second")
        for tf in TFLOPS:
            row[f"vggss_cores_per_gpu_{tf}tflops_gpu_decode"] = round(cores_per_gpu(ms, tf), 1)
            if cpu_ms:
                row[f"vggss_cores_per_gpu_{tf}tflops_cpu_decode"] = round(cores_per_gpu(cpu_ms, tf), 1)
        out[f"{h}p"] = row
    return out


def decode_grid_gpu_frames(path: str) -> np.ndarray:
    from decoding.gpu import decode_grid_gpu
    return decode_grid_gpu(path).frames


# ---------------------------------------------------------------- projection

def cascade_ratio(n_segments: int = 400) -> dict[str, Any]:
    """GFLOP per window with the cascade (default order, stated pass rates) over without."""
    import bench_flops as bf

    cost = bf.all_costs()
    segs, _ = bf.vggss_corpus(n_segments, bf.VGGSS_WINDOWS / bf.VGGSS_SHOTS)
    n = sum(map(len, segs))
    reuse, _ = bf.weighted(bf.count(segs, "reuse")[0], cost)
    with bf.stated_pass_rates(bf.DEFAULT_PASS, 0.5, 0):
        casc, _ = bf.weighted(bf.count(segs, "cascade")[0], cost)
    return {"stated_pass_rates": bf.DEFAULT_PASS, "correlation": 0.5, "segments": n_segments,
            "gflop_per_window_no_cascade": round(reuse / n, 1),
            "gflop_per_window_cascade": round(casc / n, 1), "ratio": round(casc / reuse, 4),
            "windows_per_source_second": round(n / (10.0 * n_segments), 4)}


def projection(report: dict) -> dict[str, Any]:
    e2e, dec, casc = report.get("score_segments", {}), report.get("decode", {}), report.get("cascade")
    wps = e2e.get("windows_per_s")
    if not wps or not casc or "ratio" not in casc:
        return {"skipped": "needs score_segments and the cascade ratio"}
    from bench_flops import VGGSS_WINDOWS
    hours = VGGSS_WINDOWS / wps / 3600
    cascade_wps = wps / casc["ratio"]      # assumes GPU time proportional to model FLOPs
    env = report.get("environment", {})
    out: dict[str, Any] = {
        "measured_on": f"{env.get('gpu', env.get('device'))}, "
                       f"{'small models (smoke: not a GPU figure)' if report.get('mode') == 'smoke' else 'real-size models'}",
        "vggss_windows": VGGSS_WINDOWS,
        "projected_gpu_hours_no_cascade": round(hours, 2),
        "projected_gpu_hours_cascade": round(hours * casc["ratio"], 2),
        "assumption": "cascade time = measured no-cascade time x its FLOP ratio (bench_flops, stated pass rates)",
    }
    wpss = casc["windows_per_source_second"]
    for res, d in dec.items():
        per_core = d.get("per_core_source_s_per_s") if isinstance(d, dict) else None
        if per_core:
            out[f"projected_decode_cores_per_gpu_{res}"] = {
                "no_cascade": round(wps / wpss / per_core, 1),
                "cascade": round(cascade_wps / wpss / per_core, 1)}
    return out


# ---------------------------------------------------------------- Ray actor pools (when present)

def _ray_grid_factory():
    def prep(item):
        return synthetic_grid(item["seed"])
    return prep


def _ray_score_factory(paths, smoke):
    import torch
    sc = load_scorers(paths, smoke, "cuda" if torch.cuda.is_available() else "cpu")

    def batch(items, grids):
        from curate.ops.scoring import SegmentJob, score_segments
        jobs = [SegmentJob(g, it["windows"], "dog barking") for it, g in zip(items, grids)]
        return [{"windows": rs} for rs in score_segments(jobs, sc, None, cascade=False)]

    def fn(item, grid):
        return batch([item], [grid])[0]
    fn.batch = batch
    return fn


def _ray_error(item, error):
    return {"windows": [{**w, "status": "failed", "error": error} for w in item["windows"]]}


def bench_ray(paths: dict[str, str], smoke: bool, folder: Path, n_segments: int) -> dict:
    import functools

    import ray.cloudpickle
    import bench_flops as bf
    from curate.execution.ray import RayExecutor
    from curate.execution.spec import StageSpec
    from curate.execution.checkpoints import run_stage
    from manifests import schemas

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    segs, _ = bf.vggss_corpus(n_segments, bf.VGGSS_WINDOWS / bf.VGGSS_SHOTS, 2)
    items = [{"key": f"seg{i:04d}", "seed": i, "windows": ws} for i, ws in enumerate(segs)]
    spec = StageSpec("score", functools.partial(_ray_score_factory, paths, smoke), _ray_error,
                     stateful=True, prepare=_ray_grid_factory, batch_size=4,
                     num_gpus=0.5 if not smoke else 0)
    ex = RayExecutor(workers=2)
    try:
        t = time.perf_counter()
        res = run_stage(folder / "ray", spec, items, ex, schemas={"windows": schemas.WINDOWS}, progress=False)
        dt = time.perf_counter() - t
    finally:
        ex.shutdown()
    n = res.table("windows").num_rows
    return {"segments": n_segments, "windows": n, "seconds_with_model_loads": round(dt, 2),
            "windows_per_s": round(n / dt, 2), "actors": 2}


# ---------------------------------------------------------------- main

class Report:
    """The report dict, rewritten after every section; a section that raises is recorded
    with its error (the others still run) and named in ``failed``."""

    def __init__(self, args) -> None:
        self.data: dict[str, Any] = {"mode": "smoke" if args.smoke else "full", "budget_s": args.budget_s}
        self.deadline, self.out, self.failed = Deadline(args.budget_s), Path(args.out), []

    def save(self) -> None:
        from manifests.atomic import write_json
        self.data["elapsed_s"] = round(time.monotonic() - self.deadline.t0, 1)
        self.data["failed_sections"] = self.failed
        write_json(self.out, self.data, indent=1)

    def section(self, name: str, fn: Callable[[], Any], need: float = 10.0) -> Any:
        if not self.deadline.ok(need):
            self.data[name] = {"skipped": "time budget"}
        else:
            t = time.perf_counter()
            try:
                self.data[name] = fn()
            except ImportError as e:
                self.data[name] = {"skipped": f"missing package: {e}"}
            except Exception as e:  # noqa: BLE001 - one broken section must not lose the others
                log.exception("%s failed", name)
                self.data[name] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
                self.failed.append(name)
            log.info("%s: %.1f s", name, time.perf_counter() - t)
            self.data.setdefault("section_s", {})[name] = round(time.perf_counter() - t, 1)
        self.save()
        return self.data[name]


def _setup(args, rep: Report, tmp: Path) -> str:
    """Bundle, torch settings and environment; returns the device."""
    rep.data["bundle"] = install_bundle(Path(args.wheels), tmp / "site")
    import torch

    from curate.ops.scoring import deterministic_torch
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    if args.smoke:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    deterministic_torch()      # the settings every scoring worker runs under
    rep.data["environment"] = environment(device)
    rep.save()
    return device


def _model_sections(args, rep: Report, paths: dict, device: str) -> None:
    """Load the scorers, then the model, end-to-end and accuracy sections."""
    held: dict[str, Any] = {}

    def load() -> dict:
        t = time.perf_counter()
        held["sc"] = load_scorers(paths, args.smoke, device)
        return {"files": paths, "load_s": round(time.perf_counter() - t, 1),
                "sizes_mib": {k: round(os.path.getsize(v) / 2 ** 20, 1) for k, v in paths.items()}}
    rep.section("weights", load, 30)
    sc = held.pop("sc", None)
    if sc is None:
        return
    rep.section("models", lambda: bench_models(sc, device, args.smoke, rep.deadline,
                                               0.45 * args.budget_s), 30)
    jobs, scored = segment_jobs(args.segments), []
    rep.section("score_segments", lambda: bench_score_segments(sc, device, jobs, scored), 40)
    if not args.smoke:   # a scoring actor's call of 16 segments (engine.score_batch_size)
        rep.section("score_segments_16", lambda: bench_score_segments(sc, device, jobs, [], 16), 60)
    k = 1 if args.smoke else 2
    if len(scored) >= k:
        rep.section("accuracy", lambda: bench_accuracy(sc, paths, args.smoke, device, jobs[:k],
                                                       scored[:k]), 40)


def run(args) -> dict:
    rep = Report(args)
    tmp = Path(tempfile.mkdtemp(prefix="curate-device-check-"))
    try:
        device = _setup(args, rep, tmp)
        paths = rep.section("weights", lambda: write_weights(tmp, args.smoke, device), 30)
        if isinstance(paths, dict) and "imagebind" in paths:
            _model_sections(args, rep, paths, device)
        rep.section("decode", lambda: bench_decode(tmp, args.smoke, rep.deadline), 30)
        rep.section("gpu_decode", lambda: bench_gpu_decode(tmp, args.smoke, rep.deadline,
                                                           rep.data.get("decode") or {}), 30)
        rep.section("cascade", lambda: cascade_ratio(40 if args.smoke else 400), 10)
        rep.data["projection"] = projection(rep.data)
        want_ray = args.ray or not args.smoke
        if want_ray and importlib.util.find_spec("ray") is not None and isinstance(paths, dict):
            rep.section("ray", lambda: bench_ray(paths, args.smoke, tmp, 4 if args.smoke else 16), 60)
        else:
            rep.data["ray"] = {"skipped": "ray is not installed" if want_ray else "smoke run (pass --ray)"}
        rep.save()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rep.data


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, small models (minutes)")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "device_check.json"))
    ap.add_argument("--budget-s", type=float, default=None,
                    help="time budget (default 420 s; smoke 240 s)")
    ap.add_argument("--segments", type=int, default=None, help="segments scored end to end")
    ap.add_argument("--wheels", default=str(ROOT / ".whl"), help="folder of travelling wheels")
    ap.add_argument("--ray", action="store_true", help="measure the Ray path in a smoke run too")
    args = ap.parse_args(argv)
    args.budget_s = args.budget_s or (240.0 if args.smoke else 420.0)
    args.segments = args.segments or (1 if args.smoke else 32)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("filters.imagebind_scorer").setLevel(logging.ERROR)
    report = run(args)
    print(json.dumps({k: report.get(k) for k in ("mode", "elapsed_s", "score_segments", "accuracy",
                                                  "projection")}, indent=1, default=str))
    print(f"report: {args.out}")
    if report.get("failed_sections"):     # a section that raised fails the check
        print(f"failed sections: {report['failed_sections']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
