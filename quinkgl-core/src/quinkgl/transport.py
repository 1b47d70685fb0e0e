"""The transport contract: how a peer reaches the others.

A transport carries two kinds of traffic for one swarm:

* **announcements** — small (< 64 KiB) JSON documents a peer publishes about itself (swarm ID, arch hash,
  round, model digest, metrics). The transport authenticates the sender: ``sender`` on delivery is the peer ID
  that signed it, never a claim from inside the payload.
* **requests** — the round protocol's pull (``request``): a small message (at most :data:`MAX_REQUEST_BYTES`)
  to one peer, answered by that peer's request handler with one response (a model update, at most the
  requester's ``TransportConfig.max_payload_bytes``, checked before the response is read). The requester bounds
  the whole exchange with its ``timeout``; a handler that raises :class:`RequestRefused` (or anything else)
  makes ``request`` raise :class:`TransportError` on the requesting side. Without an ``on_request`` handler every
  request is refused.
* **payloads** — opaque bytes pushed to one peer (``send``). The runtime no longer pushes models (it pulls
  them); a transport still delivers pushes so that the runtime can count them as ``unsolicited`` and drop them
  without decoding. The transport enforces ``TransportConfig.max_payload_bytes`` and delivers a payload only if
  it arrived complete.

Optional, for peer-sampling topologies (:mod:`quinkgl.sampling`): a network transport whose peer IDs are derived
from keys offers ``sign_sampling(data) -> bytes`` (sign with this peer's identity key),
``verify_sampling(peer_id, data, signature) -> bool`` and ``learn_peer_addrs(peer_id, addrs, via)`` (file
addresses ``peer_id`` signed, received from peer ``via``, so that ``request`` can dial it). Without them the
runtime signs descriptors in-process (right for the ``memory`` transport only) and dials nothing new.

Transports are async context managers on trio (anyio with the trio backend). Handlers given to ``set_handlers``
are plain functions called on the event loop; they must not block (the runtime queues and returns) — except the
request handler, an async function that may wait (bounded by the runtime) until it has an answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from quinkgl.errors import NetworkError

AnnouncementHandler = Callable[[str, bytes], None]
PayloadHandler = Callable[[str, bytes], None]
PeerHandler = Callable[[str], None]
RequestHandler = Callable[[str, bytes], Awaitable[bytes]]  # (authenticated sender, request) -> response

MAX_REQUEST_BYTES = 4096  # a request is a small control message; larger ones are refused unread


@attrs.frozen(kw_only=True)
class TransportConfig:
    """What the runtime tells a transport when it builds one."""

    swarm_id: str
    node_id: str
    host: str = "127.0.0.1"
    port: int = 0
    state_dir: str | None = None  # where the transport may persist its identity key
    max_payload_bytes: int = 64 * 1024 * 1024
    bootstrap_peers: Sequence[str] = ()
    announce_addrs: Sequence[str] = ()
    # Transport-specific flags (e.g. mdns). One every transport should honour: ``observer`` (listen-only, for
    # ``quinkgl monitor``): deliver announcements, publish none (``announce`` raises), accept no payloads.
    options: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class TransportStats:
    """Counters a transport keeps; ``rejected`` maps a reason to how many inbound messages it dropped."""

    bytes_sent: int = 0
    bytes_received: int = 0
    payloads_sent: int = 0
    payloads_received: int = 0
    rejected: Mapping[str, int] = attrs.field(factory=dict)
    relayed_bytes: int = 0  # bytes this peer forwarded between two other peers as their relay (0 if it is none)


class TransportError(NetworkError):
    """A send or connect failed (peer unreachable, deadline passed, refused), or the transport cannot start.

    A :class:`~quinkgl.errors.NetworkError`: when it ends a run the CLI prints one ``error:`` line and exits with
    ``ExitCode.NETWORK``.
    """


class RequestRefused(Exception):
    """Raised by a request handler to refuse a request; ``reason`` is a short counter key sent to the requester."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Transport(Protocol):
    """One peer's endpoint. Enter it with ``async with``; leaving closes every connection."""

    @property
    def peer_id(self) -> str:
        """This peer's stable identifier (for libp2p: the base58 peer ID)."""

    @property
    def listen_addrs(self) -> Sequence[str]:
        """Addresses other peers can dial (empty for in-process transports)."""

    def set_handlers(
        self,
        *,
        on_announcement: AnnouncementHandler,
        on_payload: PayloadHandler,
        on_peer_lost: PeerHandler | None = None,
        admits: Callable[[str], bool] | None = None,
        on_request: RequestHandler | None = None,
    ) -> None:
        """Install the callbacks for inbound traffic. Called once, before ``__aenter__``.

        ``admits(peer_id)``, when given, is the runtime's admission predicate: a network transport consults it
        before reading any payload byte from a peer and before dialling one, and refuses peers it rejects."""

    async def __aenter__(self) -> Transport: ...

    async def __aexit__(self, *exc_info: object) -> bool | None: ...

    async def announce(self, document: bytes) -> None:
        """Publish a small announcement to every peer of the swarm."""

    async def send(self, peer_id: str, payload: bytes, *, timeout: float) -> None:
        """Deliver ``payload`` to ``peer_id`` or raise :class:`TransportError` within ``timeout`` seconds."""

    async def request(self, peer_id: str, message: bytes, *, timeout: float) -> bytes:
        """Send ``message`` (at most :data:`MAX_REQUEST_BYTES`) to ``peer_id`` and return its handler's response.

        Raises :class:`TransportError` within ``timeout`` seconds when the peer is unreachable, refuses, answers
        more than ``max_payload_bytes`` or does not answer in time.
        """

    def connected_peers(self) -> Sequence[str]:
        """Peer IDs currently reachable."""

    def stats(self) -> TransportStats:
        """Traffic counters since start."""
