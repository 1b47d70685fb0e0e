"""Dialling peers learnt by peer exchange: the addresses to try, in which order, and within which deadline.

``send`` to a peer without a connection dials the addresses that peer announced (and any other peerstore
address) one after another within the send's deadline, expecting that peer ID (Noise verifies it). A dial
already in flight to the same peer is awaited instead of duplicated, and a dial that finds a connection
established meanwhile (the peer dialled us) drops its own, so a pair keeps one connection where avoidable.

Announced addresses are claims of strangers, so dialling them is bounded (:class:`.limits.NetworkLimits`):

* a peer the runtime does not admit (``admits``) is never dialled;
* every address dialled spends one token of a dial budget (``dial_budget`` per ``dial_window_s``), and at most
  ``dial_addrs_per_peer`` addresses are tried per attempt;
* an address that failed is not dialled again for ``dial_negative_ttl_s``, *whichever* peer announces it, and a
  peer none of whose addresses answered is not dialled for ``dial_peer_negative_ttl_s`` — so many fake IDs
  naming a third party's address make at most one connection attempt to it per TTL (no reflection amplifier);
* an address is never more local than the forwarder it was learnt from (the transport filters that when it
  files addresses; names are checked here once resolved): loopback addresses only when learnt from a loopback
  forwarder, private ranges only over a private or loopback connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from quinkgl.transport import TransportError

from .bootstrap import BootstrapTarget, dial_unknown, resolve
from .limits import BoundedMap, ExpiringSet, NetworkLimits, TokenBucket, addr_scope, ip_scope, may_dial
from .params import Libp2pParams
from .peer_exchange import AddressBook, parse_addr

logger = logging.getLogger(__name__)
CIRCUIT_SUFFIX = "/p2p-circuit"


class Dialler:
    """Outbound connections to peers known by their announced addresses.

    ``dialing`` is shared with registry discovery, which skips peers being dialled here.
    """

    def __init__(
        self,
        *,
        params: Libp2pParams,
        book: AddressBook,
        dialing: set[str],
        limits: NetworkLimits | None = None,
        admits: Callable[[], Callable[[str], bool] | None] = lambda: None,
        reject: Callable[[str], None] = lambda reason: None,
        relay_dial: Callable[[str, ID], Awaitable[None]] | None = None,
    ) -> None:
        self.params = params
        self.book = book
        self.dialing = dialing
        self.limits = limits if limits is not None else NetworkLimits()
        self._admits = admits
        self._reject = reject
        self._relay_dial = relay_dial  # dials a /p2p-circuit address through its relay (circuit relay v2)
        self._pending: dict[ID, trio.Event] = {}  # dials in flight, awaited by concurrent sends
        lim = self.limits
        self._budget = TokenBucket(lim.dial_budget / lim.dial_window_s, float(lim.dial_budget), time.monotonic())
        self.failed_addrs = ExpiringSet(lim.max_negative_entries)
        self.failed_peers = ExpiringSet(lim.max_negative_entries)
        #: Per peer, the scope of the most local forwarder its addresses were learnt from (see the transport).
        self.learnt_scope: BoundedMap[str, int] = BoundedMap(lim.max_tracked_origins)
        self.attempts = 0  # addresses dialled (for tests and diagnostics)

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
        min_scope = self.learnt_scope.get(key)
        for maddr in stored:
            try:
                canonical, suffix = parse_addr(str(maddr))
            except ValueError:
                continue
            if min_scope is not None and not may_dial(addr_scope(canonical), min_scope):
                continue  # e.g. identify's self-reported loopback address of a peer met over a public connection
            if suffix in (None, key) and canonical not in candidates:
                candidates.append(canonical)
        return candidates

    async def dial_known_addrs(self, host: IHost, target: ID) -> None:
        key = target.to_base58()
        admits = self._admits()
        if admits is not None and not admits(key):
            self._reject("dial_not_admitted")
            raise TransportError(f"peer {key} is not admitted (not in this peer's view of the swarm)")
        if key in self.failed_peers:
            self._reject("dial_negative_cached")
            raise TransportError(f"peer {key} is unreachable (no address answered recently; not redialled yet)")
        known = self.candidates(host, target)
        if not known:
            raise TransportError(f"peer {key} is unreachable: no known address (not announced, not in the peerstore)")
        candidates = [a for a in known if a not in self.failed_addrs][: self.limits.dial_addrs_per_peer]
        if not candidates:
            self._reject("dial_negative_cached")
            raise TransportError(f"peer {key} is unreachable: its addresses failed recently (not redialled yet)")
        swarm = host.get_network()
        swarm.unblock_peer(target)  # type: ignore[attr-defined]  # a deliberate dial: skip the 60 s negative cache
        min_scope = self.learnt_scope.get(key)
        errors: list[str] = []
        for index, addr in enumerate(candidates):
            if not self._budget.take(1, time.monotonic()):
                self._reject("dial_budget_exhausted")
                errors.append("dial budget exhausted")
                break
            self.attempts += 1
            left = len(candidates) - index
            limit = float(self.params.dial_timeout_s)
            # Leave time for the other addresses within the caller's deadline, except after a relayed address: a
            # peer announces one only when it found that nobody can dial it directly, and a relayed dial (hop,
            # stop, Noise through the relay) is the slow one (under CPU load a 1 s share made it fail for minutes).
            if left > 1 and not addr.endswith(CIRCUIT_SUFFIX):
                remaining = trio.current_effective_deadline() - trio.current_time()
                limit = min(limit, max(0.5, remaining / left))
            if addr.endswith(CIRCUIT_SUFFIX):  # reachable through a relay
                if self._relay_dial is None:
                    errors.append(f"{addr}: relayed addresses are not dialled by this transport")
                    continue
                try:
                    with trio.fail_after(limit):
                        await self._relay_dial(addr, target)
                    logger.debug("connected to %s through %s", key, addr)
                    return
                except trio.TooSlowError:
                    errors.append(f"{addr}: no relayed connection within {limit:.1f} s")
                except TransportError as exc:
                    errors.append(f"{addr}: {exc}")
                self.failed_addrs.add(addr, self.limits.dial_negative_ttl_s)
                continue
            _, proto, name, _, port_s = addr.split("/")
            try:
                with trio.fail_after(limit):
                    if proto.startswith("dns"):
                        ips = await resolve(BootstrapTarget(addr, name, int(port_s), None, True))
                        if proto != "dns":
                            ips = [ip for ip in ips if (":" in ip) == (proto == "dns6")]
                        if min_scope is not None:
                            ips = [ip for ip in ips if may_dial(ip_scope(ip), min_scope)]
                    else:
                        ips = [name]
                    for ip in ips[:2]:
                        try:
                            await dial_unknown(host, ip, int(port_s), expected=target, remember_ttl=None)
                            logger.debug("connected to %s at %s", key, addr)
                            return
                        except TransportError as exc:
                            errors.append(f"{addr}: {exc}")
                    if not ips:
                        errors.append(f"{addr}: resolves only to addresses more local than where it was learnt")
            except trio.TooSlowError:
                errors.append(f"{addr}: no answer within {limit:.1f} s")
            except TransportError as exc:  # name resolution
                errors.append(f"{addr}: {exc}")
            if swarm.get_connections(target):
                return  # the peer dialled us meanwhile
            self.failed_addrs.add(addr, self.limits.dial_negative_ttl_s)
        else:
            self.failed_peers.add(key, self.limits.dial_peer_negative_ttl_s)
        raise TransportError(f"peer {key} is unreachable: {'; '.join(errors) or 'no usable address'}")
