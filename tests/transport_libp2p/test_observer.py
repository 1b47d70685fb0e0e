"""Observer (listen-only) mode of the libp2p transport, as `quinkgl monitor` uses it."""

from __future__ import annotations

import pytest
from transport_libp2p.p2p_helpers import SWARM, Inbox, make_transport, run

from quinkgl.transport import TransportConfig, TransportError

pytestmark = pytest.mark.network


def make_observer(registry):
    from quinkgl_transport_libp2p.params import Libp2pParams
    from quinkgl_transport_libp2p.transport import Libp2pTransport

    config = TransportConfig(
        swarm_id=SWARM,
        node_id="monitor",
        host="127.0.0.1",
        port=0,
        options={"registry_dir": str(registry), "observer": True},
    )
    observer = Libp2pTransport(Libp2pParams(), config)
    inbox = Inbox()
    observer.set_handlers(
        on_announcement=inbox.on_announcement, on_payload=inbox.on_payload, on_peer_lost=inbox.on_peer_lost
    )
    return observer, inbox


def test_observer_hears_announcements_but_publishes_none_accepts_no_model_and_is_not_registered(registry):
    async def main():
        (a, inbox_a), (observer, inbox_o) = make_transport(registry_dir=registry, name="a"), make_observer(registry)
        async with a, observer:
            assert {f.stem for f in registry.glob("*.json")} == {a.peer_id}  # no registry entry of its own
            await observer.wait_connected([a.peer_id], timeout=10)  # it dials the registry's peers itself
            await a.wait_announce_ready(observer.peer_id, timeout=10)
            await a.announce(b'{"round": 1}')
            await inbox_o.wait_for(lambda: inbox_o.announcements)
            assert inbox_o.announcements == [(a.peer_id, b'{"round": 1}')]
            with pytest.raises(TransportError, match="observer"):
                await observer.announce(b'{"round": 1}')
            with pytest.raises(TransportError):
                await a.send(observer.peer_id, b"model bytes", timeout=5)
            assert inbox_o.payloads == [] and inbox_a.announcements == []

    run(main)
