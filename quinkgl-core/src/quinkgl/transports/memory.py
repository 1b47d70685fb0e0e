"""The in-process ``memory`` transport: peers in one Python process, joined through a named hub.

It implements the same contract as the libp2p transport (:mod:`quinkgl.transport`) — announcements, requests
and payloads with their size caps, peer loss — so the runtime and the simulator exercise exactly the code paths a
networked peer does.
Deliveries are synchronous handler calls on the event loop; bytes are passed, never objects.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import trio

from quinkgl.transport import MAX_REQUEST_BYTES, TransportConfig, TransportError, TransportStats

_hubs: dict[str, dict[str, MemoryTransport]] = {}
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
        self._open = False

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
        self._open = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._open = False
        hub = self._hub()
        hub.pop(self._peer_id, None)
        for other in list(hub.values()):
            if other._handlers.get("lost"):
                other._handlers["lost"](self._peer_id)
        if not hub:
            _hubs.pop(self.hub_name, None)

    async def announce(self, document: bytes) -> None:
        if self.config.options.get("observer"):
            raise TransportError("an observer (listen-only) transport publishes no announcements")
        for peer_id, other in list(self._hub().items()):
            if peer_id != self._peer_id:
                other._handlers["announcement"](self._peer_id, bytes(document))

    async def send(self, peer_id: str, payload: bytes, *, timeout: float) -> None:
        target = self._hub().get(peer_id)
        if target is None or not target._open or target.config.options.get("observer"):
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
        target._stats["bytes_received"] += len(payload)
        target._stats["payloads_received"] += 1
        target._handlers["payload"](self._peer_id, bytes(payload))

    async def request(self, peer_id: str, message: bytes, *, timeout: float) -> bytes:
        target = self._hub().get(peer_id)
        if target is None or not target._open or peer_id == self._peer_id:
            raise TransportError(f"peer {peer_id} is not reachable")
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
        with trio.move_on_after(max(timeout, 0.0)) as scope:
            try:
                response = bytes(await handler(self._peer_id, bytes(message)))
            except Exception as exc:  # the serving side refused (RequestRefused) or failed
                raise TransportError(f"peer {peer_id} refused the request: {exc}") from None
        if scope.cancelled_caught:
            raise TransportError(f"request to {peer_id} timed out after {timeout:g} s")
        if not target._open:
            raise TransportError(f"peer {peer_id} left before answering")
        if len(response) > self.config.max_payload_bytes:
            self._count_rejected("response_too_large")
            raise TransportError(f"response of {len(response)} bytes exceeds max_payload_bytes")
        target._stats["bytes_sent"] += len(response)
        target._stats["payloads_sent"] += 1
        self._stats["bytes_received"] += len(response)
        self._stats["payloads_received"] += 1
        return response

    def connected_peers(self) -> list[str]:
        return [p for p in self._hub() if p != self._peer_id]

    def stats(self) -> TransportStats:
        return TransportStats(**self._stats, rejected=dict(self._rejected))


def memory_transport(params: MemoryParams, config: TransportConfig) -> MemoryTransport:
    """Factory registered as the ``memory`` transport."""
    return MemoryTransport(params, config)
