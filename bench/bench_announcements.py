"""Announcement messages handled per peer per round in the simulator (memory transport), N peers.

Usage: python bench/bench_announcements.py --peers 5 --rounds 5 --data-root DIR
Counts every announcement delivered to a peer (what each peer's handler has to parse), divided by peers x rounds.
Runs against whichever quinkgl is first on PYTHONPATH, so the same script measures before/after a change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=50)
    parser.add_argument("--data-root", required=True)
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
