"""Dialling peers learnt by peer exchange: the addresses to try, in which order, and within which deadline.

``send`` to a peer without a connection dials the addresses that peer announced (and any other peerstore
address) one after another within the send's deadline, expecting that peer ID (Noise verifies it). A dial
already in flight to the same peer is awaited instead of duplicated, and a dial that finds a connection
established meanwhile (the peer dialled us) drops its own, so a pair keeps one connection where avoidable.
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from quinkgl.transport import TransportError

from .bootstrap import BootstrapTarget, dial_unknown, resolve
from .params import Libp2pParams
from .peer_exchange import AddressBook, parse_addr

logger = logging.getLogger(__name__)


class Dialler:
    """Outbound connections to peers known by their announced addresses.

    ``dialing`` is shared with registry discovery, which skips peers being dialled here.
    """

    def __init__(self, *, params: Libp2pParams, book: AddressBook, dialing: set[str]) -> None:
        self.params = params
        self.book = book
        self.dialing = dialing
        self._pending: dict[ID, trio.Event] = {}  # dials in flight, awaited by concurrent sends

    async def ensure_connected(self, host: IHost, target: ID) -> None:
        """Connect to ``target`` unless connected; bounded by the caller's deadline (send's timeout)."""
        swarm = host.get_network()
        while not swarm.get_connections(target):
            pending = self._pending.get(target)
            if pending is None:
                break
            await pending.wait()  # another send is dialling this peer: use its connection, do not dial twice
        if swarm.get_connections(target):
            return
        done = trio.Event()
        self._pending[target] = done
        self.dialing.add(target.to_base58())
        try:
            await self.dial_known_addrs(host, target)
        finally:
            done.set()
            if self._pending.get(target) is done:
                del self._pending[target]
            self.dialing.discard(target.to_base58())

    def candidates(self, host: IHost, target: ID) -> list[str]:
        """Addresses to try for ``target``: peer exchange (newest first), then any other peerstore address."""
        key = target.to_base58()
        candidates = self.book.addrs(key)
        try:
            stored = list(host.get_peerstore().addrs(target))
        except Exception:  # PeerStoreError: unknown or expired
            stored = []
        for maddr in stored:
            try:
                canonical, suffix = parse_addr(str(maddr))
            except ValueError:
                continue
            if suffix in (None, key) and canonical not in candidates:
                candidates.append(canonical)
        return candidates

    async def dial_known_addrs(self, host: IHost, target: ID) -> None:
        key = target.to_base58()
        candidates = self.candidates(host, target)
        if not candidates:
            raise TransportError(f"peer {key} is unreachable: no known address (not announced, not in the peerstore)")
        swarm = host.get_network()
        swarm.unblock_peer(target)  # type: ignore[attr-defined]  # a deliberate dial: skip the 60 s negative cache
        errors: list[str] = []
        for index, addr in enumerate(candidates):
            _, proto, name, _, port_s = addr.split("/")
            left = len(candidates) - index
            limit = float(self.params.dial_timeout_s)
            if left > 1:  # leave time for the other addresses within the caller's deadline
                remaining = trio.current_effective_deadline() - trio.current_time()
                limit = min(limit, max(0.5, remaining / left))
            try:
                with trio.fail_after(limit):
                    if proto.startswith("dns"):
                        ips = await resolve(BootstrapTarget(addr, name, int(port_s), None, True))
                        if proto != "dns":
                            ips = [ip for ip in ips if (":" in ip) == (proto == "dns6")]
                    else:
                        ips = [name]
                    for ip in ips:
                        try:
                            await dial_unknown(host, ip, int(port_s), expected=target, remember_ttl=None)
                            logger.debug("connected to %s at %s", key, addr)
                            return
                        except TransportError as exc:
                            errors.append(f"{addr}: {exc}")
            except trio.TooSlowError:
                errors.append(f"{addr}: no answer within {limit:.1f} s")
            except TransportError as exc:  # name resolution
                errors.append(f"{addr}: {exc}")
            if swarm.get_connections(target):
                return  # the peer dialled us meanwhile
        raise TransportError(f"peer {key} is unreachable: {'; '.join(errors) or 'no usable address'}")
