"""A real two-node Ray cluster on one machine runs a build; prints where the work ran.

    python benchmarks/cluster_two_nodes.py            # 8 generated sources
    python benchmarks/cluster_two_nodes.py --sources 12 --keep /tmp/cluster

Starts `ray start --head --num-cpus 1` and a second node `ray start --address ... --num-cpus
1` (two raylets, as on two machines), then runs `curate build custom --address <head>` over
generated media served on loopback (the demo recipe without its in-run sync training; random
models, which do not gate). Every checkpoint record carries the Ray node id of the worker
that computed it, so the script prints, per stage, how many items each node did. Exits 1
unless the build succeeds, verifies, and both nodes did work. `--out` is a local folder
here; on a real cluster it must be storage every node sees (NFS, a shared volume).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testkit.kill_resume import build_args, verify_cli, write_inputs  # noqa: E402
from curate.execution.checkpoints import read_records

RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`ray start ... --block` in its own process group: stopping it stops exactly this node
    (`ray stop` would stop every Ray on the machine)."""
    return subprocess.Popen([RAY, "start", *args, "--block"], env=env, start_new_session=True,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def wait_nodes(head: str, n: int, env: dict, timeout: float = 180.0) -> None:
    probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
             "print(sum(x['Alive'] for x in ray.nodes()))")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        res = subprocess.run([sys.executable, "-c", probe, head], capture_output=True, text=True,
                             env=env, timeout=120)
        if res.returncode == 0 and res.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    raise RuntimeError(f"the cluster at {head} did not reach {n} nodes in {timeout:.0f} s")


def stop_node(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def nodes_per_stage(out: Path) -> dict[str, Counter]:
    per: dict[str, Counter] = defaultdict(Counter)
    for part in sorted((out / "work").glob("*/part-*.jsonl")):
        for rec in read_records(part):
            per[part.parent.name][rec.get("node") or "unknown"] += 1
    return per


def _args(argv=None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="keep corpus and output here")
    return ap.parse_args(argv)


def _report(out: Path) -> bool:
    """Which node computed each stage's items, and verify: True when the build verifies and
    work ran on both nodes."""
    per = nodes_per_stage(out)
    nodes = sorted({n for c in per.values() for n in c})
    names = {n: f"node{i}" for i, n in enumerate(nodes)}
    for stage, c in per.items():
        print(f"  {stage:<10}" + "  ".join(f"{names[n]}={k}" for n, k in sorted(c.items())))
    print("  nodes: " + ", ".join(f"{v}={k[:12]}" for k, v in names.items()))
    verified = verify_cli(out).returncode == 0
    real = [n for n in nodes if n != "unknown"]
    ok = verified and len(real) >= 2
    print(f"verify: {'ok' if verified else 'FAILED'}; work on {len(real)} nodes -> {'OK' if ok else 'FAILED'}")
    return ok


def main(argv=None) -> int:
    args = _args(argv)

    from curate.demo.loopback import LoopbackServer
    from curate.demo.synth import synthesize

    root = args.keep or Path(tempfile.mkdtemp(prefix="curate-cluster-"))
    root.mkdir(parents=True, exist_ok=True)
    # both nodes announce loopback: everything this benchmark sends stays on 127.0.0.1
    # (by default Ray announces the machine's interface address)
    ip = "127.0.0.1"
    port = free_port()
    head = f"{ip}:{port}"
    # Ray >= 2.59 authenticates with a token: one of our own for every process of this cluster
    # (the default token file is shared with any other local Ray on the machine)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    ok, procs = False, []
    try:
        procs.append(start_node(["--head", "--port", str(port),
                                 "--num-cpus", "1", "--include-dashboard", "false", "--node-ip-address", ip,
                                 "--disable-usage-stats"], env, root / "head.log"))
        wait_nodes(head, 1, env)
        procs.append(start_node(["--address", head, "--num-cpus", "1", "--node-ip-address", ip], env, root / "worker.log"))
        wait_nodes(head, 2, env)
        truth = synthesize(root / "corpus", n_videos=args.sources, seed=5, duration=6.0)
        with LoopbackServer(root / "corpus" / "videos") as server:
            src, cfg = write_inputs(root / "corpus", server, truth)
            out = root / "out"
            cmd = [*build_args(out, src, cfg, workers=args.workers), "--address", head]
            t0 = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
            wall = time.perf_counter() - t0
        print(f"cluster: head {head}, 2 nodes x 1 CPU; build exit {res.returncode} in {wall:.1f} s")
        if res.returncode != 0:
            print(res.stdout[-3000:], res.stderr[-3000:])
            return 1
        ok = _report(out)
    finally:
        for proc in reversed(procs):
            stop_node(proc)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
