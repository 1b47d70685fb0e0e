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


# -- the sampling channel's checks (no training) ----------------------------------------------------------------


class _Transport:
    peer_id = "me"
    listen_addrs = ()

    def connected_peers(self):
        return ["a", "b", "c", "d", "me"]


class _Sampler:
    sampling_interval = 1.0

    def __init__(self):
        self.answered = []

    def bind(self, channel):
        pass

    async def step(self):
        pass

    async def answer(self, sender, body):
        self.answered.append((sender, body))
        return b"answer"

    def sampled_peers(self):
        return []


def _service(known, observed, certified=False, scope="swarm-a\narch"):
    from quinkgl.runtime.sampling import SamplingService

    return SamplingService(
        _Sampler(),
        _Transport(),
        scope=scope,
        announcement=lambda: b'{"me":1}',
        observe=lambda sender, raw: observed.append((sender, raw)) or (raw == b"good" and known.add(sender)),
        knows=lambda peer: peer in known,
        certified=certified,
    )


def test_a_sampling_request_is_answered_only_after_its_carried_announcement_passed():
    from quinkgl.sampling import ENVELOPE_PREFIX, SAMPLING_PREFIX, encode_envelope
    from quinkgl.transport import RequestRefused

    known: set[str] = set()
    observed: list = []
    service = _service(known, observed)

    async def main():
        with pytest.raises(RequestRefused, match="unknown_peer"):  # another swarm's announcement: not observed in
            await service.handle("x", encode_envelope(SAMPLING_PREFIX, b"bad", b"Sbody"))
        assert service.sampler.answered == []
        raw = await service.handle("y", encode_envelope(SAMPLING_PREFIX, b"good", b"Sbody"))
        assert service.sampler.answered == [("y", b"Sbody")] and raw.startswith(SAMPLING_PREFIX)
        assert await service.handle("y", b'{"v":1}') is None  # a plain pull request is not the sampler's
        with pytest.raises(RequestRefused, match="bad_sampling"):
            await service.handle("z", SAMPLING_PREFIX + b"\xff")
        assert service.unwrap("w", encode_envelope(ENVELOPE_PREFIX, b"good", b'{"v":1}')) == b'{"v":1}'

    trio.run(main)
    assert ("w", b"good") in observed and known == {"y", "w"}
    contacts = service.bootstrap  # no bootstrap configured: three of the transport's contacts, never ourselves
    assert len(set(contacts)) == 3 and "me" not in contacts


def test_an_announcement_too_large_for_the_request_travels_without_it():
    from quinkgl.sampling import SAMPLING_PREFIX, decode_envelope, encode_envelope
    from quinkgl.transport import MAX_REQUEST_BYTES

    ann, body = decode_envelope(encode_envelope(SAMPLING_PREFIX, b"a" * 100, b"body"), SAMPLING_PREFIX)
    assert (ann, body) == (b"a" * 100, b"body")
    raw = encode_envelope(SAMPLING_PREFIX, b"a" * MAX_REQUEST_BYTES, b"body")
    assert len(raw) <= MAX_REQUEST_BYTES and decode_envelope(raw, SAMPLING_PREFIX) == (b"", b"body")


def test_first_contacts_are_rate_limited_in_a_certified_swarm_only():
    open_swarm, certified = _service(set(), []), _service(set(), [], certified=True)
    assert all(open_swarm.admits_stranger() for _ in range(1000))
    assert sum(certified.admits_stranger() for _ in range(1000)) <= 2 * 32


def test_a_descriptor_signed_for_one_swarm_does_not_verify_in_another():
    a, b = _service(set(), []), _service(set(), [], scope="swarm-b\narch")
    signature = a.sign(b"descriptor")
    assert a.verify("me", b"descriptor", signature)
    assert not b.verify("me", b"descriptor", signature)
    assert not a.verify("someone-else", b"descriptor", signature)
