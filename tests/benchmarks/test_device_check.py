"""benchmarks/device_check.py --smoke: the GPU readiness check runs its every section on the
CPU with the small models and writes one JSON report with measured figures (issue 16)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_device_check_smoke_writes_a_complete_report(tmp_path):
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--smoke",
                        "--budget-s", "900", "--out", str(out), "--wheels", str(tmp_path / "none")],
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["mode"] == "smoke" and r["environment"]["device"] == "cpu"
    # the figures are taken under the scoring workers' torch settings (deterministic_torch)
    assert r["environment"]["torch_settings"] == {"deterministic": True, "cudnn_benchmark": False,
                                                  "cudnn_deterministic": True}
    assert r["failed_sections"] == []
    assert r["bundle"]["missing_before"] == []           # this machine has every package
    for name in ("imagebind.image", "imagebind.audio", "imagebind.text", "clip.image",
                 "sync.full", "sync.full channels-last"):
        runs = r["models"][name]["runs"]
        assert {x["precision"] for x in runs} == {"fp32", "tf32", "bf16"}, name
        assert all(x["inputs_per_s"] > 0 and x["tflops"] > 0 for x in runs), (name, runs)
        assert r["models"][name]["gflop_per_input"] > 0
    e2e = r["score_segments"]
    assert e2e["windows"] > 0 and e2e["windows_per_s"] > 0 and e2e["precision"]["sync"] == "fp32"
    acc = r["accuracy"]
    assert acc["compared"] == "cpu bf16 vs cpu fp32" and acc["within_tolerance"] is True
    d = acc["max_abs_diff"]
    assert d["pixel_diff"] == 0.0 and d["amplitude"] == 0.0      # no model: no precision
    assert d["imagebind_ia"] > 0 and d["clip_diff"] > 0          # bf16 really ran
    casc = r["cascade"]
    assert 0 < casc["ratio"] < 1 and casc["gflop_per_window_no_cascade"] > 600
    proj = r["projection"]
    assert proj["projected_gpu_hours_cascade"] < proj["projected_gpu_hours_no_cascade"]
    if importlib.util.find_spec("av") is not None:
        dec = r["decode"]["360p"]
        assert dec["one_process_source_s_per_s"] > 0 and dec["all_cores_source_s_per_s"] > 0
        assert "cascade" in proj["projected_decode_cores_per_gpu_360p"]
    assert r["ray"] == {"skipped": "smoke run (pass --ray)"}
    # the NVDEC decode path runs only where CUDA and PyNvVideoCodec are: here it says why not
    assert r["gpu_decode"] == {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}


def test_a_section_that_raises_is_reported_and_the_check_exits_non_zero(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import device_check

    def run(args):
        rep = device_check.Report(args)
        rep.section("fine", lambda: {"x": 1})
        rep.section("broken", lambda: 1 / 0)
        return rep.data
    monkeypatch.setattr(device_check, "run", run)
    out = tmp_path / "r.json"
    try:
        device_check.main(["--smoke", "--out", str(out)])
    except SystemExit as e:
        assert e.code == 1
    else:
        raise AssertionError("a failed section must fail the check")
    r = json.loads(out.read_text())
    assert r["fine"] == {"x": 1} and r["broken"]["error"].startswith("ZeroDivisionError")
    assert r["failed_sections"] == ["broken"]


def test_the_gpu_sampler_reads_utilisation_and_memory(tmp_path, monkeypatch):
    """The one nvidia-smi sampler (device_check and bench_gpu_scoring), against a stand-in
    nvidia-smi on PATH that answers as the real one does (``57, 2048``)."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '57, 2048'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import time
    from device_check import GpuMonitor

    with GpuMonitor("cuda", period=0.01) as mon:
        deadline = time.monotonic() + 20
        while len(mon.samples) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert mon.samples[0] == (57.0, 2048.0)
    assert mon.busy() == 0.57
    assert mon.summary() == "GPU utilisation mean 57%, memory peak 2.0 GiB"
    with GpuMonitor("cpu") as off:          # never started off a GPU
        pass
    assert off.samples == [] and off.busy() is None
    assert off.summary() == "no nvidia-smi samples (no GPU)"
