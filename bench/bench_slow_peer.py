"""One slow peer among five `quinkgl run` processes over libp2p (issue 8, round protocol v2).

Runs the swarm twice on loopback: all five peers with ``--local-steps S``, then the same with peer-5 training
``4·S`` steps per round. Reports the four fast peers' median round time (from their ``metrics.jsonl``) in both runs,
their ratio (goal: at most 1.25), and every peer's final validation accuracy (goal: the slow peer within 1 point
of the others).

Usage: python bench/bench_slow_peer.py --data-root DIR [--rounds 6] [--steps 40] [--workdir runs/slow-peer]
Uses the `quinkgl` found as ``python -m quinkgl_cli`` with the current PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))


def run_swarm(work: Path, args: argparse.Namespace, slow_factor: int) -> dict[str, list[dict]]:
    from swarm import fresh_workdir, histories, peer_argv, start, wait_all

    from helpers import guide_arch_hash, make_manifest
    from quinkgl.manifest.codec import write_manifest

    env = fresh_workdir(work)
    write_manifest(make_manifest(arch_hash=guide_arch_hash(), name="slow-peer-bench"), work / "demo.qgl")
    extra = ["--max-eval-batches", "40", "--gossip-interval", str(args.gossip_interval)]
    procs = [
        start(
            work,
            env,
            index,
            peer_argv(
                index,
                rounds=args.rounds,
                steps=args.steps * (slow_factor if index == 5 else 1),
                data_root=args.data_root,
                extra=extra,
            ),
        )
        for index in range(1, 6)
    ]
    wait_all(procs, time.monotonic() + args.timeout)
    return {f"peer-{index}": rounds for index, rounds in histories(work, range(1, 6)).items()}


def report(label: str, history: dict[str, list[dict]]) -> float:
    fast = [m["round_seconds"] for node in ("peer-1", "peer-2", "peer-3", "peer-4") for m in history[node]]
    median = statistics.median(fast) if fast else float("nan")
    finals = {node: (rounds[-1]["val_accuracy"] if rounds else None) for node, rounds in history.items()}
    fell_back = sum(m["fell_back"] for rounds in history.values() for m in rounds)
    print(
        f"{label}: fast peers' median round {median:.2f} s over {len(fast)} rounds; fell back {fell_back}; "
        f"final val_accuracy {json.dumps(finals)}"
    )
    return median


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--gossip-interval", type=float, default=12.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "slow-peer"))
    args = parser.parse_args()
    base = report("without a slow peer", run_swarm(Path(args.workdir) / "even", args, 1))
    history = run_swarm(Path(args.workdir) / "slow", args, 4)
    slow = report("peer-5 trains 4x the steps", history)
    others = [rounds[-1]["val_accuracy"] for node, rounds in history.items() if node != "peer-5" and rounds]
    own = history["peer-5"][-1]["val_accuracy"] if history["peer-5"] else float("nan")
    print(
        f"ratio of fast peers' median round time: {slow / base:.2f} (goal <= 1.25); slow peer's accuracy "
        f"{own:.4f} vs others' mean {statistics.mean(others):.4f} (goal: within 0.01)"
    )


if __name__ == "__main__":
    main()
