"""Bootstrap peers: ``host:port`` (no peer ID needed), ``host:port/p2p/<id>`` or a full multiaddr.

The forms are core's one peer-address grammar (:mod:`quinkgl.manifest.peers`); ``parse_bootstrap_addr`` only
wraps it, so the manifest, ``run``'s flag check and the transport accept exactly the same addresses.

Names are resolved with the operating system's resolver (py-libp2p's own ``/dns`` resolution ignores
``/etc/hosts``).

**Dialling without a peer ID.** py-libp2p's upgrader refuses an outbound connection whose peer ID is unknown,
but the Noise XX handshake itself does not need it: the initiator still verifies the responder's signed
identity payload and learns its authenticated peer ID; only the equality check is skipped. ``dial_unknown``
opens TCP, runs the Noise upgrade as initiator with no expected peer, reads the authenticated ID, runs the
Yamux upgrade and hands the connection to the swarm — the mirror of the swarm's own inbound path.

Trust model: with a bare ``host:port`` whoever answers at that address becomes the bootstrap peer (the channel
is still encrypted and the peer ID authenticated; what is not checked is *which* peer it is). The learned peer
ID is logged; pin it with ``host:port/p2p/<id>`` or a full multiaddr to have any other peer refused.

This relies on concrete attributes of py-libp2p 0.8.1's ``Swarm`` (``upgrader``, ``transport_manager``,
``add_conn``); the version is pinned and a loopback test covers it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from typing import TYPE_CHECKING

import attrs
import trio

from quinkgl.errors import NetworkError
from quinkgl.manifest.peers import parse_peer_address
from quinkgl.transport import TransportError

if TYPE_CHECKING:  # pragma: no cover
    from libp2p.abc import IHost
    from libp2p.peer.id import ID

logger = logging.getLogger(__name__)


class BootstrapAddrError(NetworkError, ValueError):
    """A bootstrap address is not in one of the accepted forms (exit code ``NETWORK``)."""


@attrs.frozen
class BootstrapTarget:
    """A parsed bootstrap address: where to dial and, if pinned, which peer must answer."""

    text: str
    host: str  # IP literal or DNS name
    port: int
    peer_id: str | None = None
    is_name: bool = False  # host must be resolved first

    def describe(self) -> str:
        hostpart = f"[{self.host}]" if ":" in self.host else self.host
        base = f"{hostpart}:{self.port}"
        return f"{base}/p2p/{self.peer_id}" if self.peer_id else base


def parse_bootstrap_addr(text: str) -> BootstrapTarget:
    """Parse one bootstrap address with core's grammar (:func:`quinkgl.manifest.peers.parse_peer_address`)."""
    try:
        address = parse_peer_address(text)
    except ValueError as exc:
        raise BootstrapAddrError(f"bad bootstrap address {text!r}: {exc}") from None
    return BootstrapTarget(text, address.host, address.port, address.peer_id, address.is_name)


async def resolve(target: BootstrapTarget) -> list[str]:
    """IP addresses for ``target`` via the OS resolver (``/etc/hosts`` included)."""
    if not target.is_name:
        return [target.host]
    try:
        infos = await trio.socket.getaddrinfo(target.host, target.port, type=trio.socket.SOCK_STREAM)
    except OSError as exc:
        raise TransportError(f"cannot resolve bootstrap host {target.host!r}: {exc}") from exc
    ips: list[str] = []
    for family, _, _, _, sockaddr in infos:
        ip = str(sockaddr[0])
        if family in (trio.socket.AF_INET, trio.socket.AF_INET6) and ip not in ips:
            ips.append(ip)
    if not ips:
        raise TransportError(f"bootstrap host {target.host!r} has no IPv4/IPv6 address")
    return ips


def tcp_multiaddr_text(ip: str, port: int) -> str:
    proto = "ip6" if ipaddress.ip_address(ip).version == 6 else "ip4"
    return f"/{proto}/{ip}/tcp/{port}"


async def dial_unknown(
    host: IHost, ip: str, port: int, *, expected: ID | None = None, remember_ttl: int | None = 0
) -> ID:
    """Connect to ``ip:port`` without knowing the peer ID there; return the authenticated peer ID.

    With ``expected`` the answering peer must be that one (the Noise handshake verifies the remote identity).
    On success the address is added to the peerstore with ``remember_ttl`` (0: no expiry; None: not added).
    The caller bounds this with a deadline.
    """
    import multiaddr

    swarm = host.get_network()
    maddr = multiaddr.Multiaddr(tcp_multiaddr_text(ip, port))
    transport = swarm.transport_manager.transport_for_dialing(maddr)  # type: ignore[attr-defined]
    if transport is None:
        raise TransportError(f"no libp2p transport can dial {maddr}")
    try:
        raw_conn = await transport.dial(maddr)
    except Exception as exc:
        raise TransportError(f"cannot open TCP connection to {ip}:{port}: {exc}") from exc
    to_close = raw_conn  # what must be closed if we do not get as far as handing it to the swarm
    try:
        upgrader = swarm.upgrader  # type: ignore[attr-defined]
        # Noise XX as initiator with no expected peer: the responder's signed identity is still verified.
        secured = await upgrader.security_multistream.secure_outbound(raw_conn, expected)
        to_close = secured
        peer = secured.get_remote_peer()
        if expected is not None and peer != expected:
            raise TransportError(f"peer at {ip}:{port} is {peer}, not the pinned {expected}")
        if peer == host.get_id():
            raise TransportError(f"{ip}:{port} is this peer itself")
        if swarm.get_connections(peer):
            return peer  # already connected (it dialled us first): keep that connection, drop this one
        muxed = await upgrader.upgrade_connection(secured, peer)
        to_close = muxed
        await swarm.add_conn(muxed, direction="outbound")  # type: ignore[attr-defined]
        to_close = None  # the swarm owns it now
        if remember_ttl is not None:
            host.get_peerstore().add_addrs(peer, [maddr], remember_ttl)
        return peer
    except TransportError:
        raise
    except trio.Cancelled:
        raise
    except Exception as exc:
        raise TransportError(f"handshake with {ip}:{port} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if to_close is not None:
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await to_close.close()
