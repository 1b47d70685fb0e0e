"""A late joiner over libp2p (issue 8): five `quinkgl run` peers, a sixth started with no checkpoint once peer-1
has finished round ``--join-at``.

Reports the joiner's catch-up line (round adopted, sources, seconds), its first round's validation accuracy
against the others' at the same round (goal: within 2 points), and the time from its start to the first round
in which another peer aggregated its model (its first accepted contribution).

Usage: python bench/bench_late_joiner.py --data-root DIR [--rounds 10] [--join-at 6] [--steps 40]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
LISTENING = re.compile(r"^peer (\S+) \((\w+)\) swarm .* listening on", re.M)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--join-at", type=int, default=6)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "late-joiner"))
    args = parser.parse_args()

    from swarm import fresh_workdir, histories, peer_argv, start, wait_all

    from helpers import guide_arch_hash, make_manifest
    from quinkgl.manifest.codec import write_manifest

    work = Path(args.workdir)
    env = fresh_workdir(work)
    write_manifest(make_manifest(arch_hash=guide_arch_hash(), name="late-joiner-bench"), work / "demo.qgl")

    def join(index: int) -> subprocess.Popen:
        argv = peer_argv(
            index, rounds=args.rounds, steps=args.steps, data_root=args.data_root, extra=["--max-eval-batches", "40"]
        )
        return start(work, env, index, argv)

    procs = [join(i) for i in range(1, 6)]
    deadline = time.monotonic() + args.timeout
    first_log = work / "peer-1.log"
    while time.monotonic() < deadline and f"round={args.join_at:03d}" not in first_log.read_text(errors="replace"):
        time.sleep(0.2)  # polling a log file, bounded by the deadline
    started = time.time()
    procs.append(join(6))
    wait_all(procs, deadline)
    history = histories(work, range(1, 7))
    text = (work / "peer-6.log").read_text(errors="replace")
    caught = re.search(r"caught up with the swarm at round (\d+) from (\d+) peer\(s\) in ([\d.]+) s", text)
    joiner_id = LISTENING.search(text).group(2) if LISTENING.search(text) else "?"
    print("catch-up:", caught.group(0) if caught else "none")
    if not history[6]:
        print("the joiner recorded no round")
        return
    first = history[6][0]
    others = [m["val_accuracy"] for i in range(1, 6) for m in history[i] if m["round"] == first["round"]]
    print(
        f"joiner's first round {first['round']}: val_accuracy {first['val_accuracy']:.4f}; others at that round "
        f"{min(others):.4f}-{max(others):.4f} (mean {statistics.mean(others):.4f})"
    )
    used = [m["time"] for i in range(1, 6) for m in history[i] if joiner_id in m.get("aggregated_from", [])]
    if used:
        print(
            f"first accepted contribution {min(used) - started:.1f} s after the joiner started "
            f"(used in {len(used)} peer-rounds)"
        )
    else:
        print("nobody aggregated the joiner's model")
    rejected = {i: history[i][-1].get("updates_rejected") for i in range(1, 6) if history[i]}
    print("others' rejected counts at the end:", rejected)


if __name__ == "__main__":
    main()
