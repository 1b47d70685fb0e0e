"""Per-peer cost of a simulated swarm with CyclonTopology (or RandomTopology) at several sizes (issue 11, item 2).

Runs ``quinkgl simulate``'s engine (real peers, real round loop, memory transport, the guide's MNIST MLP) once
per size and prints, per peer and per round: messages handled (requests made + requests answered or refused +
broadcast announcements received), bytes (the transport's sent + received), the peers a peer knows of (its peer
view), its sampler's view, and the process's peak memory growth per peer. With Cyclon nothing grows with the
swarm; with RandomTopology every peer hears every other peer's announcements.

Exit status 1 when, for Cyclon, messages, bytes or known peers per peer per round differ by more than 1.5×
between the smallest and the largest size. Memory per peer is reported, not checked (the simulator's memory is
another helper's work; see the report).

Usage: python bench/bench_cyclon_runtime.py --data-root DIR [--sizes 100 300] [--rounds 3] [--local-steps 1]
       [--topology CyclonTopology|RandomTopology] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def view_stats(views: dict[str, list[str]], size: int) -> dict[str, float]:
    """The Cyclon overlay the peers' views formed (snapshot in the second-to-last round): full views, in-degree,
    components, next to the in-degree std of uniform sampling over full membership (what RandomTopology does)."""
    from quinkgl_topo.cyclon_overlay import uniform_in_degree_std

    degree = dict.fromkeys(views, 0)
    parent = {p: p for p in views}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for peer_id, view in views.items():
        for other in view:
            if other in degree:
                degree[other] += 1
                parent[find(peer_id)] = find(other)
    return {
        "full_views": sum(len(v) == size for v in views.values()) / len(views),
        "in_std": statistics.pstdev(degree.values()),
        "uniform_std": uniform_in_degree_std(len(views), size),
        "components": len({find(p) for p in views}),
    }


def measure(n: int, args: argparse.Namespace) -> dict[str, float]:
    from helpers import fedavg_manifest
    from quinkgl.plugins.manager import build_registry
    from quinkgl.script import ScriptPlugin
    from quinkgl.simulate import SimulationOptions, simulate

    params = {"topology": {"fanout": 3}} if args.topology == "RandomTopology" else {"topology": {"view_size": 8}}
    manifest = fedavg_manifest(topology=args.topology, params=params)
    script = ScriptPlugin.from_file(REPO / "tests" / "data" / "mnist_peer_script.py")
    options = SimulationOptions(
        peers=n,
        rounds=args.rounds,
        local_steps=args.local_steps,
        max_eval_batches=1,
        script_args={"data_root": args.data_root},
        gossip_interval=args.gossip_interval,
    )
    import quinkgl.runtime.peer as peer_module

    built: list = []
    original_init = peer_module.Peer.__init__

    def recording_init(self, *a, **k):  # the bench keeps the peers to read their views after the run
        original_init(self, *a, **k)
        built.append(self)

    peer_module.Peer.__init__ = recording_init  # type: ignore[method-assign]
    before = current_rss_mb()
    started = time.perf_counter()
    snapshot: dict[str, list[str]] = {}  # each peer's view at the end of the second-to-last round (all alive)

    def observer(kind: str, data: dict) -> None:
        if kind == "round_end" and data["round"] == max(1, args.rounds - 1):
            peer = next((p for p in built if p.peer_id == data["peer_id"]), None)
            if peer is not None and peer.sampling is not None:
                snapshot[peer.peer_id] = peer.sampling.sampler.sampled_peers()

    result = simulate(manifest, script, options, build_registry(), observer)
    seconds = time.perf_counter() - started
    rounds = args.rounds
    rows = result.summaries
    messages = [
        (
            s["sources_asked"]
            + s["requests_served"]
            + s["requests_refused"]
            + s["sampling_exchanges"]
            + s["announcements_handled"]
        )
        / rounds
        for s in rows
    ]
    overlay = view_stats(snapshot, built[0].p.topology.params.view_size) if snapshot else {}
    return {
        **overlay,
        "peers": n,
        "seconds": round(seconds, 1),
        "accuracy": round(statistics.fmean(s["val_accuracy"] or 0 for s in rows), 3),
        "msgs": statistics.fmean(messages),
        "msgs_max": max(messages),
        "bytes": statistics.fmean((s["bytes_sent"] + s["bytes_received"]) / rounds for s in rows),
        "announcements": statistics.fmean(s["announcements_handled"] / rounds for s in rows),
        # peers a peer heard from within its peer timeout, per round (its live peer view)
        "known": statistics.fmean(m["peers"] for h in result.history.values() for m in h),
        "mem_mb": (peak_rss_mb() - before) / n,  # peak growth of this process per peer (upper bound)
        "peak_mb": peak_rss_mb() - before,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=1)
    parser.add_argument("--gossip-interval", type=float, default=60.0)
    parser.add_argument("--topology", default="CyclonTopology")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--json")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = parser.parse_args()
    logging.disable(logging.INFO)
    if args.one:
        print("RESULT " + json.dumps(measure(args.one, args)), flush=True)
        return 0
    table = []
    for n in sorted(args.sizes):  # each size in a fresh process: peak memory is its own
        argv = [
            sys.executable,
            __file__,
            "--one",
            str(n),
            "--rounds",
            str(args.rounds),
            "--local-steps",
            str(args.local_steps),
            "--gossip-interval",
            str(args.gossip_interval),
            "--topology",
            args.topology,
            "--data-root",
            args.data_root,
        ]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        row = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        table.append(row)
        print(
            f"{args.topology} peers={n:5d} seconds={row['seconds']:7.1f} acc={row['accuracy']:.3f} "
            f"msgs/peer/round={row['msgs']:6.2f} (max {row['msgs_max']:.1f}) "
            f"bytes/peer/round={row['bytes']:12,.0f} announcements/peer/round={row['announcements']:7.2f} "
            f"known peers={row['known']:6.1f} peak MB={row['peak_mb']:.0f} ({row['mem_mb']:.2f}/peer)",
            flush=True,
        )
        if "full_views" in row:
            print(
                f"    views full: {row['full_views']:.0%}, in-degree std {row['in_std']:.2f} (uniform sampling "
                f"{row['uniform_std']:.2f}), components {row['components']}",
                flush=True,
            )
    first, last = table[0], table[-1]
    if len(table) > 1:
        marginal = (last["peak_mb"] - first["peak_mb"]) / (last["peers"] - first["peers"])
        print(f"marginal peak memory per added peer, {first['peers']} -> {last['peers']}: {marginal:.2f} MB")
    ratios = {k: last[k] / first[k] if first[k] else float("inf") for k in ("msgs", "bytes", "known", "mem_mb")}
    print("ratios largest/smallest:", ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": table, "ratios": ratios}, indent=1))
    if args.topology == "CyclonTopology" and any(ratios[k] > 1.5 for k in ("msgs", "bytes", "known")):
        print("FAIL: per-peer traffic or state grows with the swarm")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
