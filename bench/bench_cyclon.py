"""Cyclon peer sampling at 100 and 1,000 peers (protocol only, no training), next to uniform sampling.

Each swarm starts from a ring (every peer knows ONE other peer) and runs ``--cycles`` shuffle cycles (every
live peer starts one shuffle per cycle). Printed per size: whether every view is full, the overlay's weakly
connected components, the in-degree mean and standard deviation next to uniform sampling of the same view
size over full membership (what RandomTopology does) measured in the same run, the shuffle messages and bytes
each peer handles per cycle, the entries each peer stores, and the cycles until the 10 % of peers that then
leave without a word have vanished from every view.

Exit status 1 when a goal is missed: views not full, more than one component, a higher in-degree std than
uniform sampling, departed peers still held after 4 × view_size cycles, or per-peer messages, bytes or stored
entries differing by more than 1.5× between the smallest and the largest swarm.

Usage: python bench/bench_cyclon.py [--sizes 100 1000] [--view-size 20] [--shuffle-length 8] [--cycles 40]
"""

from __future__ import annotations

import argparse
import sys
import time

from quinkgl_topo.cyclon_overlay import Overlay, uniform_in_degree_std


def measure(n: int, args: argparse.Namespace) -> dict[str, float]:
    started = time.perf_counter()
    overlay = Overlay(
        n, view_size=args.view_size, shuffle_length=args.shuffle_length, seed=args.seed, measure_bytes=True
    )
    for _ in range(args.cycles):
        overlay.cycle()
    stats = overlay.stats()
    row = {
        "peers": n,
        "full": stats.full_views == n,
        "components": stats.components,
        "in_mean": stats.in_degree_mean,
        "in_std": stats.in_degree_std,
        "uniform_std": uniform_in_degree_std(n, args.view_size, seed=args.seed),
        "msgs": 2 * overlay.messages / (n * args.cycles),  # each message is sent by one peer, handled by another
        "bytes": 2 * overlay.bytes / (n * args.cycles),
        "stored": sum(len(v.entries) for v in overlay.alive.values()) / n,
    }
    gone = [peer for index, peer in enumerate(sorted(overlay.alive)) if index % 10 == 0]
    overlay.leave(gone)
    bound = 4 * args.view_size
    row["purge_cycles"] = float("inf")
    for cycle in range(1, bound + 1):
        overlay.cycle()
        if overlay.stats().dead_links == 0:
            row["purge_cycles"] = cycle
            break
    row["seconds"] = time.perf_counter() - started
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--view-size", type=int, default=20)
    parser.add_argument("--shuffle-length", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = [measure(n, args) for n in args.sizes]
    print(f"Cyclon, view {args.view_size}, shuffle {args.shuffle_length}, {args.cycles} cycles from a ring")
    print(
        "| peers | views full | components | in-degree mean | std | uniform std | msgs/peer/cycle "
        "| bytes/peer/cycle | entries/peer | cycles to purge 10 % departed | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['peers']} | {r['full']} | {r['components']} | {r['in_mean']:.1f} | {r['in_std']:.2f} "
            f"| {r['uniform_std']:.2f} | {r['msgs']:.2f} | {r['bytes']:.0f} | {r['stored']:.1f} "
            f"| {r['purge_cycles']} | {r['seconds']:.1f} |"
        )
    failures = []
    for r in rows:
        if not r["full"] or r["components"] != 1:
            failures.append(f"{r['peers']} peers: views not full or overlay split")
        if r["in_std"] >= r["uniform_std"]:
            failures.append(f"{r['peers']} peers: in-degree std {r['in_std']:.2f} ≥ uniform {r['uniform_std']:.2f}")
        if r["purge_cycles"] == float("inf"):
            failures.append(f"{r['peers']} peers: departed peers still held after {4 * args.view_size} cycles")
    for key in ("msgs", "bytes", "stored"):
        values = [r[key] for r in rows]
        ratio = max(values) / min(values)
        print(f"{key} per peer, largest / smallest swarm: {ratio:.2f}x (goal ≤ 1.5x)")
        if ratio > 1.5:
            failures.append(f"{key} per peer grows {ratio:.2f}x with the swarm")
    for failure in failures:
        print("MISSED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
