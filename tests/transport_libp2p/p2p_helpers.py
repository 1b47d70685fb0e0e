"""Helpers for the libp2p transport tests: transports on 127.0.0.1 port 0, inboxes that wake waiters, raw hosts.

Every network test runs inside ``trio.run`` with a deadline; waiting is event-driven (``Inbox.wait_for``,
``Libp2pTransport.wait_connected``), never a sleep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from quinkgl.transport import TransportConfig

SWARM = "sha256:" + "ab" * 32
OTHER_SWARM = "sha256:" + "cd" * 32


class Inbox:
    """Collects what a transport delivers; ``wait_for`` wakes on every delivery."""

    def __init__(self) -> None:
        self.announcements: list[tuple[str, bytes]] = []
        self.payloads: list[tuple[str, bytes]] = []
        self.lost: list[str] = []
        self._changed = trio.Event()

    def _poke(self) -> None:
        event, self._changed = self._changed, trio.Event()
        event.set()

    def on_announcement(self, sender: str, document: bytes) -> None:
        self.announcements.append((sender, document))
        self._poke()

    def on_payload(self, sender: str, payload: bytes) -> None:
        self.payloads.append((sender, payload))
        self._poke()

    def on_peer_lost(self, peer: str) -> None:
        self.lost.append(peer)
        self._poke()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()


def make_transport(
    *,
    swarm_id: str = SWARM,
    registry_dir: Path | None = None,
    port: int = 0,
    state_dir: Path | None = None,
    bootstrap: tuple[str, ...] = (),
    max_payload_bytes: int = 64 * 1024 * 1024,
    params=None,
    name: str = "peer",
    options: dict | None = None,
    admits=None,
):
    """A Libp2pTransport on 127.0.0.1 (registry discovery only when ``registry_dir`` is given) and its Inbox.

    ``options`` are added to the transport's options (e.g. :class:`NetworkLimits` fields); ``admits`` is the
    admission predicate handed to ``set_handlers``."""
    from quinkgl_transport_libp2p.params import Libp2pParams
    from quinkgl_transport_libp2p.transport import Libp2pTransport

    options = {
        **({"registry_dir": str(registry_dir)} if registry_dir is not None else {"registry": False}),
        **(options or {}),
    }
    config = TransportConfig(
        swarm_id=swarm_id,
        node_id=name,
        host="127.0.0.1",
        port=port,
        state_dir=str(state_dir) if state_dir is not None else None,
        max_payload_bytes=max_payload_bytes,
        bootstrap_peers=bootstrap,
        options=options,
    )
    transport = Libp2pTransport(params or Libp2pParams(), config)
    inbox = Inbox()
    transport.set_handlers(
        on_announcement=inbox.on_announcement,
        on_payload=inbox.on_payload,
        on_peer_lost=inbox.on_peer_lost,
        admits=admits,
    )
    return transport, inbox


def port_of(transport) -> int:
    for addr in transport.listen_addrs:
        parts = addr.split("/")
        if "tcp" in parts:
            return int(parts[parts.index("tcp") + 1])
    raise AssertionError(f"no tcp port in {transport.listen_addrs}")


@asynccontextmanager
async def raw_host(*, plaintext: bool = False) -> AsyncIterator[object]:
    """A bare running libp2p host on 127.0.0.1:0: Noise (our hardened build) or plaintext-only."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
    from libp2p.stream_muxer.yamux.yamux import Yamux

    from quinkgl_transport_libp2p.host import build_host

    listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    key_pair = create_new_key_pair()
    if plaintext:
        host = new_host(
            key_pair=key_pair,
            sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)},
            muxer_opt={YAMUX_PROTOCOL_ID: Yamux},
            listen_addrs=[listen],
        )
    else:
        host = build_host(key_pair, listen=listen)
    async with host.run([listen]):
        yield host


def run(fn, *args, timeout: float = 60.0):
    """``trio.run`` with an overall deadline."""

    async def main():
        with trio.fail_after(timeout):
            return await fn(*args)

    return trio.run(main)
