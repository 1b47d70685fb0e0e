"""The peer-sampling contract: topologies that keep their own partial view by exchanging messages (Cyclon).

A topology is usually a pure function of the peers the runtime knows from announcements. A **peer sampler**
instead maintains its own small view of the swarm, filled by messages it exchanges with other peers (a Cyclon
shuffle, docs/peer-sampling.md), so a peer needs no full membership: its bootstrap contacts and those exchanges
are all it learns from. A topology becomes a peer sampler by also implementing :class:`PeerSampler`; the runtime
then (docs/runtime.md, "Peer sampling"):

* calls :meth:`PeerSampler.bind` once its transport runs, with a :class:`SamplingChannel`;
* calls :meth:`PeerSampler.step` every :attr:`PeerSampler.sampling_interval` seconds (one active exchange);
* routes requests that carry :data:`SAMPLING_PREFIX` to :meth:`PeerSampler.answer`;
* offers only :meth:`PeerSampler.sampled_peers` to ``select`` as candidate sources;
* stops broadcasting announcements: each request the peer makes carries its announcement in an envelope
  (:func:`encode_envelope`), and each sampling answer carries the answerer's, so what a peer hears about others
  is bounded by its view and its fan-in, not by the swarm's size.

The channel hides the transport: a sampler never sees the transport, the peer view or the announcement format.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from quinkgl.transport import MAX_REQUEST_BYTES

SAMPLING_PREFIX = b"QGLS"  # a sampling request: prefix + envelope; pull requests are JSON and start with "{"
ENVELOPE_PREFIX = b"QGLE"  # any other request of a sampling peer: prefix + envelope around the plain request
_LENGTH = struct.Struct("!H")  # announcement length (an envelope's announcement fits a request: < 4 KiB)


class EnvelopeRejected(ValueError):
    """A malformed envelope."""


def encode_envelope(prefix: bytes, announcement: bytes, body: bytes) -> bytes:
    """``prefix`` + the sender's announcement + ``body``."""
    if len(prefix) + _LENGTH.size + len(announcement) + len(body) > MAX_REQUEST_BYTES:
        announcement = b""  # too large to travel with this request (metadata over ~3.5 KiB): sent without it
    return prefix + _LENGTH.pack(len(announcement)) + announcement + body


def decode_envelope(raw: bytes, prefix: bytes) -> tuple[bytes, bytes]:
    """(announcement, body) of an envelope that starts with ``prefix``; raises :class:`EnvelopeRejected`."""
    head = len(prefix) + _LENGTH.size
    if not raw.startswith(prefix) or len(raw) < head:
        raise EnvelopeRejected("not an envelope")
    (length,) = _LENGTH.unpack_from(raw, len(prefix))
    if len(raw) < head + length:
        raise EnvelopeRejected("truncated announcement")
    return raw[head : head + length], raw[head + length :]


class SamplingChannel(Protocol):
    """What the runtime gives a peer sampler: identity, signing, and one request/response exchange."""

    @property
    def own_id(self) -> str:
        """This peer's ID."""

    @property
    def addrs(self) -> Sequence[str]:
        """Addresses other peers can dial this peer at (empty on the memory transport)."""

    @property
    def bootstrap(self) -> Sequence[str]:
        """Peer IDs to introduce ourselves to while the view is empty (configured bootstrap peers, else the
        transport's first contacts)."""

    @property
    def max_body_bytes(self) -> int:
        """The largest request body :meth:`request` can carry."""

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` with this peer's identity key (descriptors: a peer vouches for its own address)."""

    def verify(self, peer_id: str, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``peer_id``'s over ``data``."""

    def learn_addrs(self, peer_id: str, addrs: Sequence[str], via: str) -> None:
        """Tell the transport where ``peer_id`` can be dialled (from a descriptor it signed, received from ``via``)."""

    async def request(self, peer_id: str, body: bytes, *, timeout: float) -> bytes:
        """Send ``body`` (at most :attr:`max_body_bytes`) to ``peer_id``'s sampler and return its answer's body.

        Raises :class:`quinkgl.transport.TransportError` when the peer is unreachable, refuses or is too slow."""


@runtime_checkable
class PeerSampler(Protocol):
    """A topology that keeps its own partial view of the swarm (see the module docstring)."""

    sampling_interval: float  # seconds between two active exchanges (:meth:`step`)

    def bind(self, channel: SamplingChannel) -> None:
        """Called once, when the transport runs and the peer ID is known."""

    async def step(self) -> None:
        """One active exchange (a shuffle). Must not raise on network failures; bounded in time."""

    async def answer(self, sender: str, body: bytes) -> bytes:
        """The answer to a sampling request from ``sender`` (authenticated by the transport)."""

    def sampled_peers(self) -> list[str]:
        """The peers currently in the view: the candidate sources. A departed peer is not reported by the runtime
        (a lost connection is not a departure); the sampler finds out through its own exchanges."""


class InProcessSigner:
    """Descriptor signatures for in-process transports (``memory``), whose peer IDs carry no key.

    A keyed BLAKE2b over the peer ID with a secret of this process: every peer of a simulated swarm lives in the
    process, so this proves only that a descriptor was made here, unaltered. Network transports sign with the
    peer's identity key instead (``sign_sampling`` / ``verify_sampling``, see :mod:`quinkgl.transport`)."""

    _secret = os.urandom(32)

    def sign(self, peer_id: str, data: bytes) -> bytes:
        return hmac.new(self._secret, peer_id.encode() + b"\n" + data, hashlib.sha256).digest()

    def verify(self, peer_id: str, data: bytes, signature: bytes) -> bool:
        return hmac.compare_digest(self.sign(peer_id, data), signature)
