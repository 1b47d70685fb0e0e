"""The in-process ``memory`` transport: peers in one Python process, joined through a named hub.

It implements the same contract as the libp2p transport (:mod:`quinkgl.transport`) — announcements, requests
and payloads with their size caps, peer loss — so the runtime and the simulator exercise exactly the code paths a
networked peer does.
Deliveries are synchronous handler calls on the event loop; bytes are passed, never objects.

Two ``TransportConfig.options`` serve the simulator (:mod:`quinkgl.simconditions`): ``announce_to``, the node IDs
whose peers hear this peer's announcements (default: everyone on the hub; the simulator passes a bounded overlay
so that announcement traffic per peer does not grow with the swarm), and ``network``, a
:class:`quinkgl.simconditions.Network` that drops and delays messages. A dropped request or answer is silent: the
asking peer notices only when its timeout runs out, as over a network. :meth:`MemoryTransport.set_online` takes a
peer off the hub and back (churn) without closing it.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import trio

from quinkgl.transport import MAX_REQUEST_BYTES, TransportConfig, TransportError, TransportStats

_hubs: dict[str, dict[str, MemoryTransport]] = {}
_nodes: dict[str, dict[str, MemoryTransport]] = {}  # hub -> node_id -> transport (for ``announce_to``)
_ids = itertools.count(1)


@attrs.frozen
class MemoryParams:
    """``hub``: peers with the same hub name see each other (default: one hub per swarm).

    ``TransportConfig.options["peer_id"]`` fixes the peer ID (tests issue membership certificates for it)."""

    hub: str = ""


class MemoryTransport:
    """One peer's endpoint on an in-process hub."""

    def __init__(self, params: MemoryParams, config: TransportConfig):
        self.config = config
        self.hub_name = params.hub or str(config.options.get("hub") or config.swarm_id)
        self._peer_id = str(config.options.get("peer_id") or f"mem-{config.node_id}-{next(_ids)}")
        self._handlers: dict[str, Any] = {}
        self._stats = {"bytes_sent": 0, "bytes_received": 0, "payloads_sent": 0, "payloads_received": 0}
        self._rejected: dict[str, int] = {}
        self._traffic = {"messages_sent": 0, "messages_received": 0, "announcement_bytes": 0}
        self._open = False
        self._online = True
        scope = config.options.get("announce_to")
        self._announce_to: tuple[str, ...] | None = None if scope is None else tuple(sorted(scope))
        self._network: Any = config.options.get("network")

    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def listen_addrs(self) -> list[str]:
        return []

    def set_handlers(
        self,
        *,
        on_announcement: Any,
        on_payload: Any,
        on_peer_lost: Any | None = None,
        on_request: Any | None = None,
        admits: Any | None = None,
    ) -> None:
        """``admits(peer_id)``, if given, is asked before a payload or request from ``peer_id`` is delivered: one it
        refuses is counted as ``not_admitted`` and the sender gets a TransportError, as over a network."""
        self._handlers = {
            "announcement": on_announcement,
            "payload": on_payload,
            "lost": on_peer_lost,
            "request": on_request,
            "admits": admits,
        }

    def _count_rejected(self, reason: str) -> None:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1

    def _hub(self) -> dict[str, MemoryTransport]:
        return _hubs.setdefault(self.hub_name, {})

    async def __aenter__(self) -> MemoryTransport:
        self._hub()[self._peer_id] = self
        _nodes.setdefault(self.hub_name, {})[self.config.node_id] = self
        self._open = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._open = False
        hub = self._hub()
        hub.pop(self._peer_id, None)
        nodes = _nodes.get(self.hub_name, {})
        if nodes.get(self.config.node_id) is self:
            del nodes[self.config.node_id]
        for other in self._neighbours():  # those that could know us: the whole hub, or our overlay neighbours
            if other._handlers.get("lost"):
                other._handlers["lost"](self._peer_id)
        if not hub:
            _hubs.pop(self.hub_name, None)
            _nodes.pop(self.hub_name, None)

    def _neighbours(self) -> list[MemoryTransport]:
        if self._announce_to is None:
            return [other for peer_id, other in list(self._hub().items()) if peer_id != self._peer_id]
        nodes = _nodes.get(self.hub_name, {})
        return [nodes[node] for node in self._announce_to if node in nodes and nodes[node] is not self]

    def set_online(self, online: bool) -> None:
        """Simulated churn: an offline peer is unreachable, publishes nothing and hears nothing."""
        self._online = online

    def _reachable(self) -> bool:
        return self._open and self._online

    async def _travel(self) -> None:
        """One message's network delay, if the simulated network has one."""
        if self._network is not None:
            delay = self._network.delay()
            if delay > 0:
                await trio.sleep(delay)

    def _lost(self) -> bool:
        return self._network is not None and self._network.lost()

    async def announce(self, document: bytes) -> None:
        if self.config.options.get("observer"):
            raise TransportError("an observer (listen-only) transport publishes no announcements")
        if not self._online:
            return
        for other in self._neighbours():
            if not other._online or not other._handlers:
                continue
            self._traffic["messages_sent"] += 1
            self._traffic["announcement_bytes"] += len(document)
            if self._lost():
                continue
            other._traffic["messages_received"] += 1
            other._handlers["announcement"](self._peer_id, bytes(document))

    async def send(self, peer_id: str, payload: bytes, *, timeout: float) -> None:
        target = self._hub().get(peer_id)
        if target is None or not target._reachable() or target.config.options.get("observer"):
            raise TransportError(f"peer {peer_id} is not reachable")
        admits = target._handlers.get("admits")
        if admits is not None and not admits(self._peer_id):
            target._rejected["not_admitted"] = target._rejected.get("not_admitted", 0) + 1
            raise TransportError(f"peer {peer_id} does not admit {self._peer_id}")
        if len(payload) > target.config.max_payload_bytes:
            target._count_rejected("oversized")
            raise TransportError(f"payload of {len(payload)} bytes exceeds the receiver's limit")
        self._stats["bytes_sent"] += len(payload)
        self._stats["payloads_sent"] += 1
        self._traffic["messages_sent"] += 1
        if self._lost():
            return  # lost on the way: a push is never acknowledged
        await self._travel()
        if not target._reachable():
            return
        target._stats["bytes_received"] += len(payload)
        target._stats["payloads_received"] += 1
        target._traffic["messages_received"] += 1
        target._handlers["payload"](self._peer_id, bytes(payload))

    async def request(self, peer_id: str, message: bytes, *, timeout: float) -> bytes:
        target = self._hub().get(peer_id)
        if target is None or not target._reachable() or peer_id == self._peer_id:
            raise TransportError(f"peer {peer_id} is not reachable")
        if self._network is None:
            return await self._request(target, peer_id, message, timeout)
        with trio.move_on_after(max(timeout, 0.0)):
            return await self._request(target, peer_id, message, timeout, simulated=True)
        raise TransportError(f"request to {peer_id} timed out after {timeout:g} s")

    async def _request(
        self, target: MemoryTransport, peer_id: str, message: bytes, timeout: float, simulated: bool = False
    ) -> bytes:
        """The exchange; ``simulated``: through the simulated network, inside the caller's timeout (a lost
        request or answer waits for it, silently)."""
        if len(message) > MAX_REQUEST_BYTES:
            target._count_rejected("request_too_large")
            raise TransportError(f"request of {len(message)} bytes exceeds {MAX_REQUEST_BYTES}")
        admits = target._handlers.get("admits")
        if admits is not None and not admits(self._peer_id):
            target._count_rejected("not_admitted")
            raise TransportError(f"peer {peer_id} does not admit {self._peer_id}")
        handler = target._handlers.get("request")
        if handler is None:
            raise TransportError(f"peer {peer_id} refused the request: no request handler")
        self._stats["bytes_sent"] += len(message)
        self._traffic["messages_sent"] += 1
        if simulated:
            if self._lost():
                await trio.sleep_forever()  # the caller's timeout ends it
            await self._travel()
            if not target._reachable():
                raise TransportError(f"peer {peer_id} is not reachable")
        target._traffic["messages_received"] += 1
        with trio.move_on_after(max(timeout, 0.0)) as scope:
            try:
                response = bytes(await handler(self._peer_id, bytes(message)))
            except Exception as exc:  # the serving side refused (RequestRefused) or failed
                raise TransportError(f"peer {peer_id} refused the request: {exc}") from None
        if scope.cancelled_caught:
            raise TransportError(f"request to {peer_id} timed out after {timeout:g} s")
        if not target._reachable():
            raise TransportError(f"peer {peer_id} left before answering")
        if len(response) > self.config.max_payload_bytes:
            self._count_rejected("response_too_large")
            raise TransportError(f"response of {len(response)} bytes exceeds max_payload_bytes")
        target._stats["bytes_sent"] += len(response)
        target._stats["payloads_sent"] += 1
        target._traffic["messages_sent"] += 1
        if simulated:
            if target._lost():
                await trio.sleep_forever()  # the answer was lost: the caller's timeout ends it
            await self._travel()
        self._stats["bytes_received"] += len(response)
        self._stats["payloads_received"] += 1
        self._traffic["messages_received"] += 1
        return response

    def connected_peers(self) -> list[str]:
        return [p for p in self._hub() if p != self._peer_id]

    def stats(self) -> TransportStats:
        return TransportStats(**self._stats, rejected=dict(self._rejected))

    def traffic(self) -> dict[str, int]:
        """Messages sent/received of every kind (announcements, requests, answers, pushes) and announcement
        bytes: what the simulator reports per peer and round."""
        return dict(self._traffic)


def memory_transport(params: MemoryParams, config: TransportConfig) -> MemoryTransport:
    """Factory registered as the ``memory`` transport."""
    return MemoryTransport(params, config)
