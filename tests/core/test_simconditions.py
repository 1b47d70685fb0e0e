"""Simulator conditions (issue 11): flag parsing, the bounded announcement overlay, and the memory transport's
drops, delays and churn — on trio's mock clock, so no test waits in real time."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from quinkgl.errors import QuinkGLError
from quinkgl.simconditions import (
    Conditions,
    Latency,
    Network,
    PeerConditions,
    announce_overlay,
    parse_churn,
    parse_latency,
    parse_probability,
    parse_slow,
)
from quinkgl.transport import TransportConfig, TransportError
from quinkgl.transports.memory import MemoryParams, MemoryTransport


def test_flags_parse_and_bad_values_say_what_is_accepted():
    assert parse_latency("uniform:0.01:0.2") == Latency("uniform", 0.01, 0.2)
    assert parse_latency("exp:0.05") == Latency("exp", 0.05)
    assert parse_latency("none") == Latency()
    assert parse_churn("0.1:0.5") == (0.1, 0.5)
    assert parse_slow("0.2:4") == (0.2, 4.0)
    assert parse_probability("0.2", "--drop-prob") == 0.2
    for bad in ("uniform:0.2:0.1", "gauss:1", "fixed", "fixed:-1", "fixed:nan", "exp:1:2"):
        with pytest.raises(QuinkGLError, match="--latency"):
            parse_latency(bad)
    for bad in ("1", "-0.1", "x", "inf"):
        with pytest.raises(QuinkGLError, match="--drop-prob"):
            parse_probability(bad, "--drop-prob")
    for bad in ("0.1", "1:0.5", "0.1:0", "0.1:1.5"):
        with pytest.raises(QuinkGLError, match="--churn"):
            parse_churn(bad)
    for bad in ("0.2", "1.5:2", "0.2:0.5", "0.2:1000"):
        with pytest.raises(QuinkGLError, match="--slow-peers"):
            parse_slow(bad)


def test_slow_peers_are_the_asked_share_and_seeded():
    conditions = Conditions(slow_fraction=0.2, slow_factor=4)
    speeds = conditions.speeds(50, seed=1)
    assert speeds.count(4.0) == 10 and speeds.count(1.0) == 40
    assert speeds == conditions.speeds(50, seed=1)
    assert Conditions().speeds(5, seed=1) == [1.0] * 5 and not Conditions().any


def test_the_announcement_overlay_is_symmetric_bounded_and_connected():
    nodes = [f"peer-{i}" for i in range(1, 1001)]
    overlay = announce_overlay(nodes, 16, seed=3)
    assert all(node not in others for node, others in overlay.items())
    assert all(node in overlay[other] for node, others in overlay.items() for other in others)  # symmetric
    degrees = [len(others) for others in overlay.values()]
    assert max(degrees) <= 16 and min(degrees) >= 2
    seen, frontier = {nodes[0]}, [nodes[0]]
    while frontier:
        frontier = [o for node in frontier for o in overlay[node] if o not in seen]
        seen.update(frontier)
    assert seen == set(nodes)  # one component
    small = announce_overlay(nodes[:10], 16, seed=3)
    assert all(len(others) == 9 for others in small.values())  # a small swarm: everyone hears everyone


def transport(hub, node, **options):
    config = TransportConfig(swarm_id="s", node_id=node, options=options)
    return MemoryTransport(MemoryParams(hub=hub), config)


def serve(t, heard):
    async def answer(sender, message):
        heard.append(("request", sender))
        return b"model"

    t.set_handlers(
        on_announcement=lambda sender, raw: heard.append(("announcement", sender)),
        on_payload=lambda sender, raw: None,
        on_request=answer,
    )


def run_on_mock_clock(fn):
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def test_announcements_reach_the_overlay_neighbours_only():
    heard = {n: [] for n in ("a", "b", "c")}

    async def main():
        a = transport("scope", "a", announce_to={"b"})
        b, c = transport("scope", "b", announce_to={"a"}), transport("scope", "c", announce_to=set())
        for node, t in (("a", a), ("b", b), ("c", c)):
            serve(t, heard[node])
        async with a, b, c:
            await a.announce(b"{}")
            await c.announce(b"{}")
        assert heard["b"] == [("announcement", a.peer_id)]
        assert heard["a"] == [] and heard["c"] == []
        assert a.traffic()["messages_sent"] == 1 and b.traffic()["messages_received"] == 1

    run_on_mock_clock(main)


def test_lost_messages_cost_the_asker_its_timeout_and_latency_delays_answers():
    async def main():
        lossy = Network(Conditions(drop=0.5), seed=0)
        lossy.drop = 1.0  # every message lost (the flag stops below 1)
        heard: list = []
        a, b = transport("lossy", "a", network=lossy), transport("lossy", "b", network=lossy)
        serve(a, []), serve(b, heard)
        async with a, b:
            started = trio.current_time()
            with pytest.raises(TransportError, match="timed out"):
                await a.request(b.peer_id, b"ask", timeout=3.0)
            assert trio.current_time() - started == pytest.approx(3.0)
            assert heard == [] and lossy.dropped == 1
            await a.announce(b"{}")
            assert heard == [] and lossy.dropped == 2

        slow = Network(Conditions(latency=Latency("fixed", 0.25)), seed=0)
        c, d = transport("slow", "c", network=slow), transport("slow", "d", network=slow)
        serve(c, []), serve(d, [])
        async with c, d:
            started = trio.current_time()
            assert await c.request(d.peer_id, b"ask", timeout=3.0) == b"model"
            assert trio.current_time() - started == pytest.approx(0.5)  # there and back

    run_on_mock_clock(main)


def test_an_offline_peer_is_unreachable_and_hears_nothing_until_it_is_back():
    async def main():
        heard: list = []
        a, b = transport("churn", "a"), transport("churn", "b")
        serve(a, []), serve(b, heard)
        async with a, b:
            b.set_online(False)
            with pytest.raises(TransportError, match="not reachable"):
                await a.request(b.peer_id, b"ask", timeout=1.0)
            await a.announce(b"{}")
            assert heard == []
            b.set_online(True)
            assert await a.request(b.peer_id, b"ask", timeout=1.0) == b"model"

    run_on_mock_clock(main)


class FakePeer:
    def __init__(self):
        self.history = [{"round_seconds": 2.0}]
        self.online_calls: list = []
        self.caught_up = 0
        self.p = self
        self.transport = self

    async def _catch_up(self):
        self.caught_up += 1

    def set_online(self, online):
        self.online_calls.append(online)


def test_churn_takes_a_peer_offline_for_whole_rounds_and_brings_it_back():
    async def main():
        peer = FakePeer()
        always_leaves = PeerConditions(leave=1.0, rejoin=1.0, rng=random.Random(0))
        started = trio.current_time()
        assert await always_leaves.before_round(peer, 1) is False  # left: the round is skipped …
        assert trio.current_time() - started == pytest.approx(2.0)  # … for about one round's time
        assert await always_leaves.before_round(peer, 2) is True  # came back
        assert peer.online_calls == [False, True] and peer.caught_up == 1  # back: it caught up first
        assert always_leaves.to_dict() == {"speed": 1.0, "online": True, "offline_rounds": 1, "departures": 1}
        slow = PeerConditions(speed=3.0)
        started = trio.current_time()
        await slow.after_train(peer, 1.5)
        assert trio.current_time() - started == pytest.approx(3.0)  # 3x the 1.5 s of training in all

    run_on_mock_clock(main)
