"""Sybils in an open swarm (issue 7, item 5): free identities must not starve honest exchange, and k copies of one
model must not count k times. Each attack is performed against running peers with the defence switched off (it
bites) and on (it is bounded); docs/security.md, "Sybils"."""

from __future__ import annotations

import pytest
import torch
import trio

from helpers import fedavg_manifest, run_swarm
from quinkgl.aggregation import ModelUpdate
from quinkgl.runtime import sources
from quinkgl.runtime.options import PeerOptions
from quinkgl.runtime.peerview import encode_announcement
from quinkgl.script import ScriptPlugin
from quinkgl.transport import TransportConfig, TransportError
from quinkgl.transports.memory import MemoryParams, MemoryTransport

FAKES = 300


def options(node, rounds, mnist_root, **extra):
    return PeerOptions(
        node_id=node,
        rounds=rounds,
        local_steps=10,
        max_eval_batches=10,
        script_args={"data_root": str(mnist_root)},
        **extra,
    )


def blackholed_fake_ids(monkeypatch):
    """Fake IDs exist only in announcements. Over libp2p a request to one dials the addresses it announced (a
    black hole) until the request's deadline; the memory transport fails at once, so model that here."""
    real = MemoryTransport.request

    async def request(self, peer_id, message, *, timeout):
        if peer_id.startswith("fake-"):
            await trio.sleep(max(timeout, 0.0))
            raise TransportError(f"request to {peer_id} timed out after {timeout:g} s")
        return await real(self, peer_id, message, timeout=timeout)

    monkeypatch.setattr(MemoryTransport, "request", request)


def run_with_fake_ids(guide_script, mnist_root, rounds=3):
    manifest = fedavg_manifest()

    async def flood(peers, hub):
        with trio.fail_after(60):
            while any(p.view is None or len(p.view.peers) < 1 for p in peers):
                await trio.sleep(0.01)
        rogue = MemoryTransport(MemoryParams(hub=hub), TransportConfig(swarm_id=manifest.swarm_id, node_id="flood"))
        rogue.set_handlers(on_announcement=lambda s, d: None, on_payload=lambda s, d: None)
        fake = encode_announcement(
            swarm_id=manifest.swarm_id,
            arch_hash=manifest.model.arch_hash,
            node_id="fake",
            round_idx=0,
            pushed=0,
            done=False,
            metrics={},
            metadata={},
        )
        async with rogue:
            while not all(p.done for p in peers):  # keep the fake IDs alive in both views
                for i in range(FAKES):
                    rogue._peer_id = f"fake-{i}"
                    await rogue.announce(fake)
                rogue._peer_id = "flood"
                with trio.move_on_after(2.0):
                    while not all(p.done for p in peers):
                        await trio.sleep(0.05)

    peers = run_swarm(
        manifest,
        [ScriptPlugin.from_file(guide_script) for _ in range(2)],
        [options(f"p{i}", rounds, mnist_root, gossip_interval=4.0, min_peers=2, peer_timeout=30.0) for i in range(2)],
        extra=flood,
    )
    assert all(p.completed == rounds for p in peers)
    exchanged = [sum(1 for m in p.history if m["aggregated_from"]) for p in peers]
    print(f"rounds with an honest exchange, per peer: {exchanged} of {rounds}")
    return exchanged


@pytest.mark.slow
def test_fake_ids_starve_honest_exchange_without_the_answer_record(guide_script, mnist_root, monkeypatch):
    blackholed_fake_ids(monkeypatch)
    monkeypatch.setattr(sources, "ENABLED", False)
    exchanged = run_with_fake_ids(guide_script, mnist_root)
    # Sources are picked from a view of 302: a fake ID holds the round's only request slot until the deadline.
    assert sum(exchanged) <= 1, exchanged


@pytest.mark.slow
def test_fake_ids_only_get_probe_slots(guide_script, mnist_root, monkeypatch):
    blackholed_fake_ids(monkeypatch)
    exchanged = run_with_fake_ids(guide_script, mnist_root)
    # The honest peer is connected, so it is probed first; once it answered it is asked before any fake ID.
    assert all(n >= 2 for n in exchanged), exchanged


def test_answer_record_queue():
    record = sources.AnswerRecord(enabled=True)
    order = [f"fake-{i}" for i in range(10)] + ["honest", "other"]
    queue, spare = record.queue(order, connected=["other"], need=1)
    assert queue == ["fake-0", "fake-1", "fake-2", "fake-3", "other"] and spare == 5  # need + 4, connected first
    record.answered("honest", now=0.0)
    queue, spare = record.queue(order, connected=[], need=1)
    assert queue == ["fake-0", "fake-1", "fake-2", "fake-3", "fake-4", "honest"] and spare == 5
    record.missed("honest")  # late once: a newcomer again
    assert not record.proven("honest")
    assert sources.AnswerRecord(enabled=False).queue(order, [], 1) == (order, 0)


def _update(sender, tensors):
    return ModelUpdate(sender, 1, 100, tensors, {})


def test_identical_models_from_many_senders_count_once_in_krum():
    """Four identities serving one model against Krum (f = 1): identical models score 0, so the copy wins."""
    from quinkgl_agg_robust.krum import Krum
    from quinkgl_agg_robust.params import KrumParams

    gen = torch.Generator().manual_seed(0)
    honest = [{"w": torch.randn(50, generator=gen) * 0.3 + 1.0} for _ in range(4)]
    poison = {"w": torch.full((50,), -1.0)}
    own = _update("me", honest[0])
    received = [_update(f"h{i}", t) for i, t in enumerate(honest[1:])]
    received += [_update(f"sybil-{i}", {"w": poison["w"].clone()}) for i in range(4)]
    krum = Krum(KrumParams(f=1))
    assert torch.equal(krum.aggregate(own, received).tensors["w"], poison["w"])  # undefended: the Sybils win
    kept, dropped = sources.distinct_updates(received, own.tensors)
    assert dropped == 3 and [u.sender for u in kept] == ["h0", "h1", "h2", "sybil-0"]
    assert not torch.equal(krum.aggregate(own, kept).tensors["w"], poison["w"])
    # a copy of our own model is dropped too (a replay of what we serve)
    kept, dropped = sources.distinct_updates([_update("x", {"w": honest[0]["w"].clone()})], own.tensors)
    assert kept == [] and dropped == 1


def test_a_stale_answer_equal_to_the_rounds_starting_model_does_not_win_krum():
    """Everyone adopted M (Krum picks whole models); a slower source answers with M, stale. M is the centre of the
    models trained from it, so Krum picks it and the round's training is lost; known to us, it is dropped."""
    import torch

    from quinkgl_agg_robust.krum import Krum
    from quinkgl_agg_robust.params import KrumParams

    gen = torch.Generator().manual_seed(1)
    base = {"w": torch.randn(50, generator=gen)}
    trained = [{"w": base["w"] + 0.1 * torch.randn(50, generator=gen)} for _ in range(4)]
    own = _update("me", trained[0])
    received = [_update(f"h{i}", t) for i, t in enumerate(trained[1:])]
    received += [_update("slow", {"w": base["w"].clone()}), _update("hostile", {"w": base["w"] - 10 * trained[1]["w"]})]
    krum = Krum(KrumParams(f=1))
    assert torch.equal(krum.aggregate(own, received).tensors["w"], base["w"])  # the stale base wins: no progress
    kept, dropped = sources.distinct_updates(received, own.tensors, (sources.model_digest(base),))
    assert dropped == 1 and "slow" not in [u.sender for u in kept]
    assert not torch.equal(krum.aggregate(own, kept).tensors["w"], base["w"])
