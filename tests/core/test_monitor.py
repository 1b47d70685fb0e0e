"""The swarm view behind `quinkgl monitor`: announcements in, a checked per-peer view out; the observer is silent."""

from __future__ import annotations

import json

import pytest
import trio

from helpers import make_manifest
from quinkgl.monitor import SwarmView, observe_swarm
from quinkgl.plugins.manager import build_registry
from quinkgl.runtime.peerview import encode_announcement
from quinkgl.transport import TransportConfig, TransportError
from quinkgl.transports.memory import MemoryParams, memory_transport

SWARM, ARCH = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def announcement(node: str, round_idx: int, *, pushed: int | None = None, done: bool = False, **metrics) -> bytes:
    return encode_announcement(
        swarm_id=SWARM,
        arch_hash=ARCH,
        node_id=node,
        round_idx=round_idx,
        pushed=round_idx if pushed is None else pushed,
        done=done,
        metrics=metrics,
        metadata={},
    )


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_view_keeps_each_peer_its_round_accuracy_history_and_finish():
    clock = Clock()
    view = SwarmView(swarm_id=SWARM, arch_hash=ARCH, name="demo", clock=clock)
    assert view.observe("P1", announcement("n1", 1))
    assert view.observe("P1", announcement("n1", 2, pushed=1, val_accuracy=0.5, round=1))
    assert not view.observe("P1", announcement("n1", 2, pushed=1, val_accuracy=0.5, round=1))  # nothing new
    clock.now += 3
    view.observe("P2", announcement("n2", 3, done=True, val_accuracy=0.75, round=3))
    view.observe("P1", announcement("n1", 2, val_accuracy=0.625))  # an older peer's metrics carry no round
    snapshot = view.snapshot()
    json.dumps(snapshot, allow_nan=False)
    by_node = {p["node_id"]: p for p in snapshot["peers"]}
    assert by_node["n1"]["round"] == 2 and by_node["n1"]["val_accuracy"] == 0.625 and not by_node["n1"]["finished"]
    assert by_node["n1"]["accuracy"] == [[1, 0.5]]  # round 2 not yet measured (pushed == round, not done): no guess
    assert by_node["n2"]["finished"] and by_node["n2"]["accuracy"] == [[3, 0.75]]
    assert snapshot["finished"] == 1 and snapshot["swarm"]["name"] == "demo"
    view.lost("P2")
    assert not {p["node_id"]: p for p in view.snapshot()["peers"]}["n2"]["connected"]


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"not json", "malformed"),
        (announcement("x", 1).replace(SWARM.encode(), b"sha256:" + b"c" * 64), "other_swarm"),
        (announcement("x", 1).replace(ARCH.encode(), b"sha256:" + b"d" * 64), "arch_mismatch"),
    ],
)
def test_foreign_or_malformed_announcements_are_counted_not_shown(raw, reason):
    view = SwarmView(swarm_id=SWARM, arch_hash=ARCH)
    assert not view.observe("P1", raw)
    assert view.snapshot()["peers"] == [] and view.snapshot()["rejected"] == {reason: 1}


def test_observer_hears_peers_but_publishes_nothing_and_accepts_no_model():
    manifest = make_manifest()
    hub = f"monitor-test-{id(manifest)}"
    view = SwarmView(swarm_id=manifest.swarm_id, arch_hash=manifest.model.arch_hash)
    heard: list[str] = []

    async def main() -> None:
        peer = memory_transport(MemoryParams(hub=hub), TransportConfig(swarm_id=manifest.swarm_id, node_id="p1"))
        peer.set_handlers(on_announcement=lambda s, raw: heard.append(s), on_payload=lambda s, p: None)
        observer_config = TransportConfig(swarm_id=manifest.swarm_id, node_id="monitor", options={"observer": True})
        observer = memory_transport(MemoryParams(hub=hub), observer_config)
        observer.set_handlers(on_announcement=view.observe, on_payload=lambda s, p: None)
        async with peer, observer:
            await peer.announce(
                encode_announcement(
                    swarm_id=manifest.swarm_id,
                    arch_hash=manifest.model.arch_hash,
                    node_id="p1",
                    round_idx=1,
                    pushed=1,
                    done=False,
                    metrics={},
                    metadata={},
                )
            )
            with pytest.raises(TransportError, match="observer"):
                await observer.announce(b"{}")
            with pytest.raises(TransportError):
                await peer.send(observer.peer_id, b"model", timeout=1)
        assert heard == []  # the observer never published anything the peer could hear

    trio.run(main)
    assert [p["node_id"] for p in view.snapshot()["peers"]] == ["p1"]


def test_observe_swarm_joins_through_the_manifests_transport_as_an_observer():
    manifest = make_manifest(transport="memory")
    view = SwarmView(swarm_id=manifest.swarm_id, arch_hash=manifest.model.arch_hash)
    ready: list[str] = []

    async def main() -> None:
        async def stop() -> None:
            return None

        await observe_swarm(manifest, build_registry(), view, on_ready=lambda t: ready.append(t.peer_id), until=stop)

    trio.run(main)
    assert ready and view.observer_id == ready[0]
