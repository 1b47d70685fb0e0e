"""Circuit relay v2 (py-libp2p 0.8.1's ``libp2p.relay.circuit_v2``) for peers that nobody can dial.

**Serving** (``quinkgl run --relay``): a publicly reachable peer answers the HOP protocol, for *swarm members
only* — a peer whose signed announcement on this swarm's topic was received (it knows the manifest) — within
:data:`LIMITS` (reservations, circuits, bytes and duration per circuit). Others are refused and counted
(``relay_refused_non_member``). Bytes relayed are counted (``relayed_bytes``).

**Using**: after a bootstrap peer answers, a peer asks it (``/quinkgl/hello/1.0.0``) for a dial-back to its
listen port. When the dial-back fails (NAT, firewall) and that peer serves as a relay, it reserves a slot there
and announces ``/ip4/<relay>/tcp/<port>/p2p/<relay id>/p2p-circuit`` first among its addresses. A peer dialling
such an address opens a relayed connection and runs the usual Noise handshake *through* it: the relay carries
ciphertext between the two peers, end to end.

Hole punching (DCUtR) is not used (it never succeeded in bench/relay_spike.py; see docs/networking.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID, STOP_PROTOCOL_ID, CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

from quinkgl.transport import TransportError

from . import hello

logger = logging.getLogger(__name__)
net_log = logging.getLogger("quinkgl.net")

#: What one relay grants: reservations, concurrent circuits, and per circuit at most 2 minutes and 64 MiB.
LIMITS = RelayLimits(
    duration=120, data=64 * 1024 * 1024, max_circuit_conns=16, max_reservations=16, reservation_ttl=600
)
CIRCUIT_SUFFIX = "/p2p-circuit"


def circuit_addr(relay_tcp: str, relay_id: str) -> str:
    """``/ip4/<ip>/tcp/<port>/p2p/<relay id>/p2p-circuit``: where others reach us through that relay."""
    return f"{relay_tcp}/p2p/{relay_id}{CIRCUIT_SUFFIX}"


class Relay:
    """The relay roles of one transport: serve (``serve=True``), reserve on others, dial through them."""

    def __init__(
        self, host: IHost, *, serve: bool, is_member: Callable[[ID], bool], count: Callable[[str, int], None]
    ) -> None:
        self.host = host
        self.serve = serve
        self._is_member = is_member
        self._count = count
        self.protocol = CircuitV2Protocol(host, limits=LIMITS, allow_hop=serve)
        roles = RelayRole.HOP | RelayRole.STOP if serve else RelayRole.STOP | RelayRole.CLIENT
        self.circuit = CircuitV2Transport(host, self.protocol, RelayConfig(roles=roles, limits=LIMITS))
        self.reserved: dict[str, str] = {}  # relay peer ID -> our circuit address there
        read = self.protocol._read_stream_with_retry  # only the relaying loop reads through it

        async def counted(stream: Any, *args: Any, **kwargs: Any) -> bytes | None:
            data: bytes | None = await read(stream, *args, **kwargs)
            if data:
                self._count("relayed_bytes", len(data))
            return data

        self.protocol._read_stream_with_retry = counted  # type: ignore[method-assign]

    async def start(self, stack: AsyncExitStack) -> None:
        await stack.enter_async_context(background_trio_service(self.protocol))
        await self.protocol.event_started.wait()
        # The protocol's run() registers its own HOP handler (for everyone): replace it with the members-only one.
        if self.serve:
            self.host.set_stream_handler(PROTOCOL_ID, self._hop_for_members)
        self.host.set_stream_handler(STOP_PROTOCOL_ID, self.protocol._handle_stop_stream)

    async def _hop_for_members(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id
        if not self._is_member(peer):
            self._count("relay_refused_non_member", 1)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.reset()
                except Exception:  # the peer may already be gone
                    logger.debug("reset of a refused relay stream failed", exc_info=True)
            return
        await self.protocol._handle_hop_stream(stream)

    async def reserve(self, relay_id: ID, relay_tcp: str, nursery: trio.Nursery) -> str:
        """Reserve a slot on ``relay_id`` (connected); return our circuit address there."""
        stream = await self.host.new_stream(relay_id, [PROTOCOL_ID])
        if not await self.circuit.reserve(stream, relay_id, nursery):
            raise TransportError(f"relay {relay_id} refused the reservation")
        address = circuit_addr(relay_tcp, relay_id.to_base58())
        self.reserved[relay_id.to_base58()] = address
        net_log.info("reserved a relay slot: reachable as %s", address)
        return address

    async def dial(self, address: str, target: ID) -> None:
        """Connect to ``target`` through the relay in ``address`` (Noise end to end, verified peer ID)."""
        try:
            await self.circuit.dial(multiaddr.Multiaddr(f"{address}/p2p/{target.to_base58()}"))
        except Exception as exc:
            raise TransportError(f"relayed dial via {address} failed: {type(exc).__name__}: {exc}") from exc
        if not self.host.get_network().get_connections(target):
            raise TransportError(f"relayed dial via {address} did not connect to {target}")


async def ask_dial_back(
    host: IHost, peer: ID, *, swarm_tag: bytes, arch_hash: str | None, port: int, timeout: float
) -> dict[str, Any]:
    """The hello answer of a connected ``peer``, with a dial-back to our ``port``."""
    with trio.fail_after(timeout + hello.DIAL_BACK_TIMEOUT_S):
        stream = await host.new_stream(peer, [hello.PROTOCOL_ID])  # type: ignore[list-item]
        try:
            await stream.write(hello.encode({"swarm_tag": swarm_tag.hex(), "arch_hash": arch_hash, "dial_back": port}))
            return await hello.read_message(stream, timeout + hello.DIAL_BACK_TIMEOUT_S)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.close()
                except Exception:  # already reset by the peer
                    logger.debug("closing a hello stream failed", exc_info=True)


__all__ = ["CIRCUIT_SUFFIX", "LIMITS", "Relay", "ask_dial_back", "circuit_addr"]
