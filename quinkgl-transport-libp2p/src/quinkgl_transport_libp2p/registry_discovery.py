"""Same-machine discovery: poll the per-user peer registry (:mod:`.discovery`) and dial local peers.

Of each pair, the peer with the smaller ID dials (:func:`.discovery.should_dial`); the other dials too if no
connection appeared within :data:`REGISTRY_FALLBACK_S`. Failed dials back off exponentially (to 30 s); a
restarted peer (new PID or start time in its entry) starts with a clean slate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from .discovery import PeerRegistry, RegistryEntry, should_dial
from .params import Libp2pParams

logger = logging.getLogger(__name__)

REGISTRY_POLL_S = 0.25
REGISTRY_FALLBACK_S = 3.0  # the larger peer ID dials too if the smaller one has not connected by then


class RegistryDiscovery:
    """The registry polling loop of one transport."""

    def __init__(
        self,
        *,
        host: IHost,
        registry: PeerRegistry,
        params: Libp2pParams,
        options: Mapping[str, object],
        peer_id: str,
        listen_addrs: Callable[[], Sequence[str]],
        connected_peers: Callable[[], Sequence[str]],
        dialing: set[str],
        observer: bool = False,
    ) -> None:
        self.host = host
        self.registry = registry
        self.params = params
        self.poll_s = float(options.get("registry_poll_s", REGISTRY_POLL_S))  # type: ignore[arg-type]
        self.peer_id = peer_id
        self._listen_addrs = listen_addrs
        self._connected_peers = connected_peers
        self.dialing = dialing
        self.observer = observer  # listen-only: not in the registry itself, so it always dials

    async def run(self, nursery: trio.Nursery) -> None:
        registry = self.registry
        first_seen: dict[str, float] = {}
        next_try: dict[str, float] = {}
        backoff: dict[str, float] = {}
        incarnation: dict[str, tuple[int, float]] = {}  # a restarted peer (new PID) starts with a clean slate
        while True:
            try:
                if not registry.path.exists() and not self.observer:
                    registry.register(list(self._listen_addrs()))  # the directory was cleaned under us
                entries = registry.swarm_peers()
            except Exception:
                logger.warning("peer registry scan failed", exc_info=True)
                entries = []
            now = time.monotonic()
            live = {e.peer_id for e in entries}
            for entry in entries:
                if incarnation.get(entry.peer_id) != (entry.pid, entry.started_at):
                    incarnation[entry.peer_id] = (entry.pid, entry.started_at)
                    for table in (first_seen, next_try, backoff):
                        table.pop(entry.peer_id, None)
            for gone in set(incarnation) - live:
                for table in (first_seen, next_try, backoff):
                    table.pop(gone, None)
                incarnation.pop(gone, None)
            connected = set(self._connected_peers())
            for entry in entries:
                pid = entry.peer_id
                first_seen.setdefault(pid, now)
                if pid in connected:
                    backoff.pop(pid, None)
                    continue
                if pid in self.dialing or now < next_try.get(pid, 0.0):
                    continue
                # An observer is in nobody's registry scan: it always dials.
                waited = now - first_seen[pid] >= REGISTRY_FALLBACK_S
                my_turn = self.observer or should_dial(self.peer_id, pid) or waited
                if not my_turn:
                    continue
                delay = min(backoff.get(pid, 0.5) * 2, 30.0)
                backoff[pid] = delay
                next_try[pid] = now + delay
                nursery.start_soon(self.dial_entry, entry)
            await trio.sleep(self.poll_s)

    async def dial_entry(self, entry: RegistryEntry) -> None:
        host = self.host
        self.dialing.add(entry.peer_id)
        try:
            target = ID.from_base58(entry.peer_id)
            addrs = [multiaddr.Multiaddr(a) for a in entry.addrs]
            addrs = [a.decapsulate(multiaddr.Multiaddr(f"/p2p/{entry.peer_id}")) for a in addrs]
            # Registry peers run on this machine: use loopback when they listen there (the swarm would
            # otherwise prefer any public announce address over loopback).
            loopback = [a for a in addrs if str(a).startswith(("/ip4/127.", "/ip6/::1/"))]
            addrs = loopback or addrs
            host.get_network().unblock_peer(target)  # type: ignore[attr-defined]
            # The registry is authoritative for local peers: forget addresses of an earlier incarnation (the
            # swarm dials only the first address per transport class it knows).
            host.get_peerstore().clear_addrs(target)
            with trio.fail_after(self.params.dial_timeout_s):
                await host.connect(PeerInfo(target, addrs))
            logger.info("connected to local peer %s (registry)", entry.peer_id)
        except Exception as exc:
            logger.debug("dialling registry peer %s failed: %r", entry.peer_id, exc)
        finally:
            self.dialing.discard(entry.peer_id)
