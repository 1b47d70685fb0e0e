"""CyclonTopology inside running peers over the memory transport (issue 11, item 1).

Every peer knows ONE bootstrap peer (peer-000). Nobody broadcasts an announcement: peers find their sources
through Cyclon shuffles alone, learn, and a peer that crashes disappears from every view within a bounded number
of rounds (one shuffle per peer per round).
"""

from __future__ import annotations

import statistics

import pytest
import trio

from helpers import fedavg_manifest
from quinkgl.plugins.manager import build_registry
from quinkgl.runtime.build import build_peer
from quinkgl.runtime.options import PeerOptions
from quinkgl.runtime.peer import Peer
from quinkgl.script import ScriptPlugin
from quinkgl.transport import TransportConfig
from quinkgl.transports.memory import MemoryParams, memory_transport

VIEW = {"view_size": 4, "fanout": 2, "shuffle_length": 2}


def cyclon_swarm(n, rounds, guide_script, mnist_root, *, hub, local_steps, observer=None):
    """``n`` peers with CyclonTopology; peer i > 0 is given peer-000 as its only bootstrap peer."""
    manifest = fedavg_manifest(topology="CyclonTopology", params={"topology": VIEW})
    registry = build_registry()
    ids = [f"peer-{i:03d}" for i in range(n)]

    def factory(i):
        return lambda max_bytes: memory_transport(
            MemoryParams(hub=hub),
            TransportConfig(
                swarm_id=manifest.swarm_id,
                node_id=ids[i],
                max_payload_bytes=max_bytes,
                options={"peer_id": ids[i]},
                bootstrap_peers=(ids[0],) if i else (),
            ),
        )

    peers = []
    for i in range(n):
        options = PeerOptions(
            node_id=ids[i],
            rounds=rounds,
            local_steps=local_steps,
            max_eval_batches=2,
            script_args={"data_root": str(mnist_root)},
            seed=0,
            gossip_interval=10,
        )
        peers.append(
            Peer(build_peer(manifest, ScriptPlugin.from_file(guide_script), options, registry, factory(i)), observer)
        )
    return peers


def run(peers, scopes=None):
    async def main():
        async with trio.open_nursery() as nursery:
            for peer in peers:
                scope = trio.CancelScope()
                if scopes is not None:
                    scopes[peer.options.node_id] = scope

                async def one(peer=peer, scope=scope):
                    with scope:
                        await peer.run()

                nursery.start_soon(one)

    trio.run(main)


@pytest.mark.slow
def test_cyclon_peers_find_sources_through_shuffles_only_and_learn(guide_script, mnist_root):
    aggregated: dict[str, set[str]] = {}

    def observer(kind, data):
        if kind == "aggregated":
            aggregated.setdefault(data["peer_id"], set()).update(data["peers"])

    peers = cyclon_swarm(12, 8, guide_script, mnist_root, hub="cyclon-learn", local_steps=8, observer=observer)
    run(peers)
    accuracy = [p.history[-1]["val_accuracy"] for p in peers]
    print(
        "accuracy", [round(a, 3) for a in accuracy], "views", [len(p.sampling.sampler.sampled_peers()) for p in peers]
    )
    assert all(p.completed == 8 for p in peers)
    # nothing was broadcast: every peer heard of the others only with requests and shuffle answers
    assert all(p.announcements_handled == 0 for p in peers)
    assert all(p.carried_announcements > 0 for p in peers)
    # sources found by shuffles: every peer learnt from peers other than the one bootstrap peer it was given
    for peer in peers[1:]:
        assert aggregated.get(peer.peer_id, set()) - {"peer-000"}, (peer.peer_id, aggregated.get(peer.peer_id))
    assert len(set().union(*aggregated.values())) == 12  # every peer served someone
    # partial views, never the swarm: at most view_size entries each
    assert all(0 < len(p.sampling.sampler.sampled_peers()) <= VIEW["view_size"] for p in peers)
    assert min(accuracy) >= 0.75 and statistics.fmean(accuracy) >= 0.8, accuracy


@pytest.mark.slow
def test_a_crashed_peer_disappears_from_every_cyclon_view_within_bounded_rounds(guide_script, mnist_root):
    crashed, crash_round, rounds, bound = "peer-011", 3, 30, 6 * VIEW["view_size"]
    scopes: dict[str, trio.CancelScope] = {}
    holders: list[tuple[int, str]] = []  # (round, holder) whenever a live peer's view names the crashed peer
    peers: list[Peer] = []
    crashed_at: list[int] = []

    def observer(kind, data):
        if kind != "round_end":
            return
        if data["node_id"] == crashed and data["round"] == crash_round:
            scopes[crashed].cancel()  # a crash: no goodbye
            crashed_at.append(crash_round)
        elif crashed_at and data["node_id"] != crashed:
            peer = next(p for p in peers if p.options.node_id == data["node_id"])
            if crashed in peer.sampling.sampler.sampled_peers():
                holders.append((data["round"], data["node_id"]))

    peers += cyclon_swarm(12, rounds, guide_script, mnist_root, hub="cyclon-crash", local_steps=1, observer=observer)
    run(peers, scopes)
    last = max((r for r, _ in holders), default=crash_round)
    print(f"views naming the crashed peer after round {crash_round}: {len(holders)}; last seen in round {last}")
    assert crashed_at and holders  # it was in views when it crashed ...
    assert last <= crash_round + bound, holders  # ... and left all of them within the bound
    assert all(crashed not in p.sampling.sampler.sampled_peers() for p in peers if p.options.node_id != crashed)
    assert all(p.completed == rounds for p in peers if p.options.node_id != crashed)
