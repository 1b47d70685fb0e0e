"""How the simulator scales (issue 11): `quinkgl simulate` at 10 / 100 / 1,000 peers, the same local work.

Each size runs as its own `quinkgl simulate` process (the guide's MNIST MLP, FedAvg + RandomTopology, IID,
``--rounds R --local-steps S --max-eval-batches E``) and is read back from its metrics.json ("scale"). Prints a
table — time per round, memory per peer (and over the model + optimizer state), messages and bytes per peer per
round — and the growth ratios from 100 to 1,000 peers. "built" is the memory per peer once the peers are built,
before any round; "cpu s/rnd" the process's CPU time per round, which other load on a shared machine distorts
less than wall time. Exits 1 when the linear goal is missed: time per round at
1,000 peers more than 12x the time at 100, or memory per peer at 1,000 above 3x the model + optimizer state.
Messages and bytes per peer per round (goal: within 1.5x from 100 to 1,000) are reported, and checked with
``--check-traffic``.

Usage: python bench/bench_scale.py --data-root DIR [--sizes 10,100,1000] [--rounds 3] [--steps 10]
       [--workdir runs/scale]
Uses the `quinkgl` found as ``python -m quinkgl_cli`` with the current PYTHONPATH. Timings on a shared machine are
noisy: say what else ran.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

TIME_GOAL = 12.0  # time per round at 1,000 peers over the time at 100 peers
MEMORY_GOAL = 3.0  # memory per peer over its model + optimizer state
TRAFFIC_GOAL = 1.5  # messages / bytes per peer per round, 1,000 peers over 100


def run_size(work: Path, peers: int, args: argparse.Namespace) -> dict:
    from helpers import guide_arch_hash, make_manifest
    from quinkgl.manifest.codec import write_manifest

    folder = work / f"peers-{peers}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "mnist_peer_script.py", folder / "mnist_peer_script.py")
    write_manifest(make_manifest(arch_hash=guide_arch_hash(), name="scale-bench"), folder / "demo.qgl")
    argv = [
        sys.executable,
        "-m",
        "quinkgl_cli",
        "simulate",
        "--manifest",
        "demo.qgl",
        "--script",
        "mnist_peer_script.py",
        "--trust-policy",
        "open",
        "--peers",
        str(peers),
        "--rounds",
        str(args.rounds),
        "--local-steps",
        str(args.steps),
        "--max-eval-batches",
        str(args.eval_batches),
        "--script-arg",
        f"data_root={args.data_root}",
        "--output",
        "out",
    ]
    env = dict(os.environ, QUINKGL_STATE_DIR=str(folder / "state"), PYTHONUNBUFFERED="1")
    started = time.monotonic()
    with open(folder / "simulate.log", "w") as log:
        proc = subprocess.run(argv, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout)
    if proc.returncode != 0:
        tail = (folder / "simulate.log").read_text()[-2000:]
        raise SystemExit(f"quinkgl simulate --peers {peers} failed (exit {proc.returncode}):\n{tail}")
    report = json.loads((folder / "out" / "metrics.json").read_text())
    scale = dict(report["scale"])
    scale["process_seconds"] = time.monotonic() - started
    scale["min_val_accuracy"] = report["honest_val_accuracy"]["min"]
    return scale


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eval-batches", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "scale"))
    parser.add_argument("--check-traffic", action="store_true", help="also fail when traffic per peer grows > 1.5x")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = {}
    for peers in sizes:
        rows[peers] = run_size(Path(args.workdir), peers, args)
        print(f"ran {peers} peers in {rows[peers]['process_seconds']:.0f} s", flush=True)
    header = (
        f"{'peers':>6} {'s/round':>8} {'cpu s/rnd':>9} {'MB/peer':>8} {'built':>6} {'x state':>8} "
        f"{'msgs/peer/rnd':>14} {'MB/peer/rnd':>12} "
        f"{'announce s':>10} {'min acc':>8}"
    )
    print(header)
    for peers, row in rows.items():
        print(
            f"{peers:>6} {row['seconds_per_round']:>8.2f} {row['cpu_seconds_per_round']:>9.2f} "
            f"{row['memory_per_peer_bytes'] / 1e6:>8.2f} {row['memory_per_peer_built_bytes'] / 1e6:>6.2f} "
            f"{row['memory_per_peer_over_state']:>8.2f} {row['messages_per_peer_per_round']:>14.1f} "
            f"{row['bytes_per_peer_per_round'] / 1e6:>12.2f} {row['announce_interval_s']:>10.1f} "
            f"{row['min_val_accuracy'] or 0:>8.4f}"
        )
    failures = []
    if 100 in rows and 1000 in rows:
        small, large = rows[100], rows[1000]
        time_ratio = large["seconds_per_round"] / small["seconds_per_round"]
        message_ratio = large["messages_per_peer_per_round"] / small["messages_per_peer_per_round"]
        byte_ratio = large["bytes_per_peer_per_round"] / small["bytes_per_peer_per_round"]
        memory_ratio = large["memory_per_peer_bytes"] / max(small["memory_per_peer_bytes"], 1)
        cpu_ratio = large["cpu_seconds_per_round"] / small["cpu_seconds_per_round"]
        print(f"time per round, 1000 / 100 peers: {time_ratio:.2f}x (goal <= {TIME_GOAL:g}x)")
        print(f"CPU time per round, 1000 / 100 peers: {cpu_ratio:.2f}x (the same, undistorted by other load)")
        print(f"memory per peer, 1000 / 100 peers: {memory_ratio:.2f}x")
        print(f"messages per peer per round, 1000 / 100 peers: {message_ratio:.2f}x (goal <= {TRAFFIC_GOAL:g}x)")
        print(f"bytes per peer per round, 1000 / 100 peers: {byte_ratio:.2f}x (goal <= {TRAFFIC_GOAL:g}x)")
        if time_ratio > TIME_GOAL:
            failures.append(f"time per round grew {time_ratio:.2f}x from 100 to 1000 peers (goal <= {TIME_GOAL:g}x)")
        if args.check_traffic and max(message_ratio, byte_ratio) > TRAFFIC_GOAL:
            failures.append(f"traffic per peer grew {max(message_ratio, byte_ratio):.2f}x (goal <= {TRAFFIC_GOAL:g}x)")
    largest = rows[max(rows)]
    print(
        f"memory per peer at {max(rows)} peers: {largest['memory_per_peer_over_state']:.2f}x the model + optimizer "
        f"state ({largest['model_bytes'] + largest['optimizer_state_bytes']} bytes; goal <= {MEMORY_GOAL:g}x)"
    )
    if largest["memory_per_peer_over_state"] > MEMORY_GOAL:
        failures.append(f"memory per peer is {largest['memory_per_peer_over_state']:.2f}x the state")
    for failure in failures:
        print(f"MISSED: {failure}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
