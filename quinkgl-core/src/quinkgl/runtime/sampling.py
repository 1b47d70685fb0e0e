"""The runtime side of peer sampling (:mod:`quinkgl.sampling`): the channel a sampler talks through, the
envelopes that carry announcements with requests, and the admission of first contacts.

With a peer-sampling topology a peer broadcasts no announcements. Instead every request it makes carries its
announcement (an envelope), and every sampling answer carries the answerer's: a peer hears of the peers it
exchanges with, which its view and its fan-in bound, and of no others. The announcement is checked exactly as
a broadcast one (swarm ID, arch hash, membership certificate) before a request is answered.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from quinkgl.runtime.bounded import RateLimit
from quinkgl.sampling import (
    ENVELOPE_PREFIX,
    SAMPLING_PREFIX,
    EnvelopeRejected,
    InProcessSigner,
    PeerSampler,
    decode_envelope,
    encode_envelope,
)
from quinkgl.transport import MAX_REQUEST_BYTES, RequestRefused, TransportError

log = logging.getLogger("quinkgl.sampling")

BOOTSTRAP_CONTACTS = 3  # without configured bootstrap peers: this many of the transport's first contacts
STRANGERS_PER_SECOND = 32  # certified swarms: first contacts from peers not (yet) in the view, per second
_in_process = InProcessSigner()


def _peer_ids(addresses: Sequence[str]) -> list[str]:
    """The peer IDs named by bootstrap addresses: a multiaddr's ``/p2p/`` part, or a bare (memory) peer ID."""
    from quinkgl.manifest.peers import parse_peer_address

    ids = []
    for text in addresses:
        if "/" not in text and ":" not in text:
            ids.append(text)  # a memory transport peer ID
            continue
        try:
            peer_id = parse_peer_address(text).peer_id
        except ValueError:
            continue
        if peer_id:
            ids.append(peer_id)
    return ids


class SamplingService:
    """One peer's sampling: implements :class:`quinkgl.sampling.SamplingChannel` for its sampler."""

    def __init__(
        self,
        sampler: PeerSampler,
        transport: Any,
        *,
        scope: str,
        announcement: Callable[[], bytes],
        observe: Callable[[str, bytes], None],
        knows: Callable[[str], bool],
        certified: bool,
    ):
        self.sampler = sampler
        self.transport = transport
        self._scope = f"quinkgl-sampling/1\n{scope}\n".encode()  # a descriptor is valid in this swarm only
        self._announcement = announcement
        self._observe = observe
        self._knows = knows
        self._strangers = RateLimit(STRANGERS_PER_SECOND, 1.0) if certified else None
        self._rng = random.Random()
        self.exchanges = 0  # sampling requests made + answered
        self.rounds = trio.Event()
        self.last_contact = float("-inf")  # trio time of the last request another peer made to us

    # -- the channel -----------------------------------------------------------------------------------------

    @property
    def own_id(self) -> str:
        return str(self.transport.peer_id)

    @property
    def addrs(self) -> Sequence[str]:
        return list(self.transport.listen_addrs)

    @property
    def bootstrap(self) -> Sequence[str]:
        config = getattr(self.transport, "config", None)
        configured = [p for p in _peer_ids(getattr(config, "bootstrap_peers", ()) or ()) if p != self.own_id]
        if configured:
            return configured
        contacts = sorted(p for p in self.transport.connected_peers() if p != self.own_id)
        return self._rng.sample(contacts, min(BOOTSTRAP_CONTACTS, len(contacts)))

    @property
    def max_body_bytes(self) -> int:
        return MAX_REQUEST_BYTES - len(SAMPLING_PREFIX) - 2 - len(self._announcement())

    def sign(self, data: bytes) -> bytes:
        sign = getattr(self.transport, "sign_sampling", None)
        return sign(self._scope + data) if sign is not None else _in_process.sign(self.own_id, self._scope + data)

    def verify(self, peer_id: str, data: bytes, signature: bytes) -> bool:
        verify = getattr(self.transport, "verify_sampling", None)
        if verify is not None:
            return bool(verify(peer_id, self._scope + data, signature))
        return _in_process.verify(peer_id, self._scope + data, signature)

    def learn_addrs(self, peer_id: str, addrs: Sequence[str], via: str) -> None:
        learn = getattr(self.transport, "learn_peer_addrs", None)
        if learn is not None and addrs:
            learn(peer_id, list(addrs), via)

    async def request(self, peer_id: str, body: bytes, *, timeout: float) -> bytes:
        raw = await self.transport.request(
            peer_id, encode_envelope(SAMPLING_PREFIX, self._announcement(), body), timeout=timeout
        )
        self.exchanges += 1
        try:
            announcement, answer = decode_envelope(raw, SAMPLING_PREFIX)
        except EnvelopeRejected as exc:
            raise TransportError(f"peer {peer_id} sent a malformed sampling answer: {exc}") from None
        if announcement:
            self._observe(peer_id, announcement)
        if not self._knows(peer_id):
            raise TransportError(f"peer {peer_id} is not a compatible peer of this swarm")
        return answer

    # -- the runtime's side ----------------------------------------------------------------------------------

    def admits_stranger(self) -> bool:
        """Whether the transport may hand us a message of a peer we have not heard from (a first contact): in an
        open swarm always (its envelope's announcement is checked before anything is answered); in a certified
        swarm at most :data:`STRANGERS_PER_SECOND` per second."""
        return self._strangers is None or self._strangers.allow(time.monotonic())

    def wrap(self, request: bytes) -> bytes:
        """A request of the round protocol, carrying our announcement."""
        return encode_envelope(ENVELOPE_PREFIX, self._announcement(), request)

    def unwrap(self, sender: str, message: bytes) -> bytes:
        """The plain request inside an envelope (its announcement observed first); other messages unchanged."""
        self.last_contact = trio.current_time()
        if not message.startswith(ENVELOPE_PREFIX):
            return message
        try:
            announcement, inner = decode_envelope(message, ENVELOPE_PREFIX)
        except EnvelopeRejected as exc:
            raise RequestRefused("bad_request", str(exc)) from None
        if announcement:
            self._observe(sender, announcement)
        return inner

    async def handle(self, sender: str, message: bytes) -> bytes | None:
        """Answer a sampling request; None when ``message`` is not one."""
        if not message.startswith(SAMPLING_PREFIX):
            return None
        self.last_contact = trio.current_time()
        try:
            announcement, body = decode_envelope(message, SAMPLING_PREFIX)
        except EnvelopeRejected as exc:
            raise RequestRefused("bad_sampling", str(exc)) from None
        if announcement:
            self._observe(sender, announcement)
        if not self._knows(sender):
            raise RequestRefused("unknown_peer", "a sampling request needs a compatible announcement")
        answer = await self.sampler.answer(sender, body)
        self.exchanges += 1
        return encode_envelope(SAMPLING_PREFIX, self._announcement(), answer)

    def round_started(self) -> None:
        """Wake the sampling loop: one exchange per round."""
        self.rounds.set()

    async def run(self) -> None:
        """One exchange per round; while the view is empty, one every ``sampling_interval`` seconds."""
        while True:
            self.rounds = trio.Event()
            try:
                await self.sampler.step()
            except Exception as exc:  # a sampler must not take the peer down
                log.warning("peer sampling step failed: %r", exc)
            if self.sampler.sampled_peers():
                await self.rounds.wait()
            else:
                with trio.move_on_after(max(0.05, float(self.sampler.sampling_interval))):
                    await self.rounds.wait()
