"""Announcement messages handled per peer per round, N peers: in the simulator, or over libp2p on loopback.

Usage: python bench/bench_announcements.py --peers 5 --rounds 5 --data-root DIR [--transport libp2p]
Counts every announcement delivered to a peer's runtime (what its handler has to parse; over libp2p that is after
the transport's rate limits and replay checks), divided by peers x rounds. ``--transport libp2p`` starts N
`quinkgl run` processes (FedAvg + RandomTopology, the guide's script, a manifest made with that version's own
`quinkgl manifest create`) with a counting shim around ``Peer._on_announcement``. Runs against whichever quinkgl
is first on PYTHONPATH, so the same script measures before/after a change (e.g. a worktree of an older commit).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=50)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--transport", choices=["memory", "libp2p"], default="memory")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds the libp2p peers may take")
    parser.add_argument("--workdir", default="runs/announcements")
    args = parser.parse_args()
    if args.transport == "libp2p":
        libp2p_main(args)
        return

    from helpers import fedavg_manifest
    from quinkgl.plugins.manager import build_registry
    from quinkgl.script import ScriptPlugin
    from quinkgl.simulate import SimulationOptions, simulate
    from quinkgl.transports import memory

    delivered = [0]
    original = memory.MemoryTransport.announce

    async def counting(self, document):  # type: ignore[no-untyped-def]
        delivered[0] += sum(1 for peer_id in self._hub() if peer_id != self._peer_id)
        await original(self, document)

    memory.MemoryTransport.announce = counting  # type: ignore[method-assign]
    script = ScriptPlugin.from_file(str(Path(__file__).resolve().parents[1] / "examples" / "mnist_peer_script.py"))
    options = SimulationOptions(
        peers=args.peers,
        rounds=args.rounds,
        local_steps=args.local_steps,
        max_eval_batches=5,
        script_args={"data_root": args.data_root},
    )
    result = simulate(fedavg_manifest(), script, options, build_registry())
    per = delivered[0] / (args.peers * args.rounds)
    print(
        f"peers={args.peers} rounds={args.rounds} seconds={result.seconds:.1f} announcements_delivered="
        f"{delivered[0]} per_peer_per_round={per:.1f}"
    )


# Wraps `quinkgl run`: counts deliveries to Peer._on_announcement; every 2 s and at exit writes "count seconds" to
# argv[1] (seconds since the first delivery), so a peer that has to be killed still leaves its numbers.
SHIM = """
import atexit, sys, threading, time
from quinkgl.runtime import peer
count, path, first = [0], sys.argv.pop(1), []
original = peer.Peer._on_announcement
def counting(self, sender, raw):
    first or first.append(time.monotonic())
    count[0] += 1
    return original(self, sender, raw)
def write():
    with open(path, "w") as out:
        out.write(f"{count[0]} {time.monotonic() - first[0] if first else 0.0}")
def every_two_seconds():
    while True:
        time.sleep(2)
        write()
peer.Peer._on_announcement = counting
threading.Thread(target=every_two_seconds, daemon=True).start()
atexit.register(write)
from quinkgl_cli.main import main
sys.argv[0] = "quinkgl"
main()
"""


def libp2p_main(args: argparse.Namespace) -> None:
    import statistics
    import subprocess
    import time

    from swarm import fresh_workdir, histories, peer_argv, start, wait_all

    work = Path(args.workdir).resolve()
    env = fresh_workdir(work)
    cli = [sys.executable, "-m", "quinkgl_cli"]
    subprocess.run([*cli, "keygen", "--output", "creator.key"], cwd=work, env=env, check=True, capture_output=True)
    arch = subprocess.run(
        [
            sys.executable,
            "-c",
            "from quinkgl.manifest import compute_arch_hash\nfrom mnist_peer_script import MNISTNet\n"
            "print(compute_arch_hash(MNISTNet()))",
        ],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    create = [
        "manifest", "create", "--name", "announce-bench", "--task-type", "class", "--input-shape", "1,28,28",
        "--output-shape", "10", "--label-type", "integer", "--model-framework", "pytorch", "--model-arch-hash", arch,
        "--aggregation", "FedAvg", "--topology", "RandomTopology", "--sign-with", "creator.key", "--output", "demo.qgl",
    ]  # fmt: skip
    subprocess.run([*cli, *create], cwd=work, env=env, check=True, capture_output=True)
    started = time.monotonic()
    procs = [
        start(
            work,
            env,
            index,
            [
                str(work / f"count-{index}"),
                *peer_argv(index, rounds=args.rounds, steps=args.local_steps, data_root=args.data_root),
            ],
            python=("-c", SHIM),
        )
        for index in range(1, args.peers + 1)
    ]
    codes = wait_all(procs, started + args.timeout)
    seconds = time.monotonic() - started
    rounds = {i: len(h) for i, h in histories(work, range(1, args.peers + 1)).items()}
    counts: dict[int, tuple[int, float]] = {}
    for index in rounds:
        text = (work / f"count-{index}").read_text().split() if (work / f"count-{index}").exists() else []
        if len(text) == 2:
            counts[index] = (int(text[0]), float(text[1]))
    print(
        f"libp2p peers={args.peers} rounds={args.rounds} exit codes={codes} seconds={seconds:.1f} "
        f"rounds completed={[rounds[i] for i in sorted(rounds)]} "
        f"announcements handled={[counts.get(i, (None,))[0] for i in sorted(rounds)]}"
    )
    per_round = [counts[i][0] / rounds[i] for i in counts if rounds[i]]
    per_second = [n / s for n, s in counts.values() if s > 0]
    if per_round:
        print(
            f"per peer per round: median {statistics.median(per_round):.1f}, "
            f"min {min(per_round):.1f}, max {max(per_round):.1f}"
        )
    if per_second:
        print(f"per peer per second: median {statistics.median(per_second):.2f}, max {max(per_second):.2f}")


if __name__ == "__main__":
    main()
