"""Announcements over GossipSub: small signed documents published to every peer of the swarm.

Facts about py-libp2p 0.8.1 this module is built around (DESIGN §7):

* GossipSub drops messages of 1 MiB or more **silently**: announcements are capped (default 64 KiB) and an
  oversized ``announce`` raises instead of vanishing.
* Spam protection (on by default) silently drops more than 10 messages/s per forwarder — it is turned off;
  so is eclipse protection, whose IP-diversity rule cannot be met by peers sharing one machine.
* The subscription buffer holds 32 messages and drops the rest (with a warning). Even a task draining it at
  once loses messages when one burst of RPCs is processed within a single scheduler batch, so the hand-over
  point itself is replaced: ``Pubsub.notify_subscriptions`` puts every validated message straight into our
  own bounded queue (default 1024), and anything that still overflows is counted.
* Each peer's outbound RPC queue also holds only 32 RPCs and drops the rest silently (a burst of publications
  within one scheduler batch overflows it); it is raised to 256.
* Strict signing is on: every message is signed by its origin's peer key, and the library rejects messages
  whose signature or key does not match the ``from`` peer ID. The ``sender`` handed to the application is
  that authenticated peer ID, never a field inside the document.
* A topic validator accepts only our envelope (``b"QGA3"`` + SHA-256 of the swarm ID + a signed stamp + the
  publisher's address block + document; see :mod:`.peer_exchange`) with the right swarm tag, a well-formed
  address block and the right size, whose stamp is fresh and above the last one accepted from that origin;
  rejections are counted by reason, and a rejected message is neither delivered nor forwarded.
* Hostile volume is dropped **before** anything of ours is parsed: a message is refused when its forwarder
  (the connected peer that handed it over) exceeds its rate — checked before the signature is verified — or
  when its origin does — checked first thing in the validator, before the envelope is decoded. Both count
  messages and bytes (``announce_rate_forwarder`` / ``announce_rate_origin``); per-origin and per-forwarder
  state is bounded (least recently used entries dropped). The queue towards the application is bounded in
  messages and bytes.
* GossipSub's equivocation detector keeps up to ~1,000 whole messages (64 MiB of 64 KiB announcements, for as
  long as no heartbeat prunes it); it is given a table that keeps a SHA-256 fingerprint of each instead.
* Any exception raised while pubsub handles one message (a hostile message can make py-libp2p raise where it
  expects none, and an exception there stops the whole pubsub service) is caught, counted as
  ``rpc_malformed`` and the forwarder is dropped.
* Peer exchange: the address block of a delivered message is handed to ``learn(origin, addrs)`` — the origin
  being the authenticated signer — before the document is queued for the application, which sees only
  ``(sender, document)``.

The topic is derived from the swarm ID, so swarms never share a topic.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from quinkgl.transport import TransportError

from .framing import swarm_tag
from .limits import BoundedMap, NetworkLimits, RateLimiter
from .peer_exchange import (
    ENVELOPE_MAGIC,
    HEADER_SIZE,
    STAMP,
    TAG_SIZE,
    EnvelopeError,
    Stamp,
    decode_stamped_envelope,
    encode_addr_block,
    encode_envelope,
)
from .stream_guard import is_disconnect

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1024  # announcements waiting for the application's handler
QUEUE_BYTES = 16 * 1024 * 1024  # ... and their documents' bytes together
REPLAY_WINDOW = 64  # sequence numbers below an origin's highest one that are remembered (anti-replay window)
OUTBOUND_QUEUE_SIZE = 256  # RPCs waiting to be written to one peer (py-libp2p: 32, then silently dropped)


#: The peer that handed over the message being processed (set per pubsub task, read by the sink).
_FORWARDER: contextvars.ContextVar[ID | None] = contextvars.ContextVar("quinkgl_forwarder", default=None)


class _QueueingPubsub(Pubsub):
    """Pubsub whose delivery to local subscribers goes to ``sink`` (no 32-message channel in between), whose
    per-peer outbound queues hold :data:`OUTBOUND_QUEUE_SIZE` RPCs instead of 32, that asks ``admit_forwarded``
    before verifying a message and that survives any exception while handling one."""

    sink: Callable[[rpc_pb2.Message], bool] | None = None
    admit_forwarded: Callable[[ID, rpc_pb2.Message], bool] | None = None
    on_malformed: Callable[[ID, BaseException], None] | None = None

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        try:
            if msg_forwarder != self.my_id:
                if self._is_msg_seen(msg):
                    return  # duplicates cost nothing and count against nobody
                admit = self.admit_forwarded
                if admit is not None and not admit(msg_forwarder, msg):
                    return
            _FORWARDER.set(msg_forwarder)
            await super().push_msg(msg_forwarder, msg)
        except Exception as exc:
            if msg_forwarder == self.my_id:
                raise
            if is_disconnect(exc):  # a peer we forward to went away: not the forwarder's doing
                logger.debug("forwarding a message from %s met a closed connection (%s)", msg_forwarder, exc)
                return
            report = self.on_malformed
            if report is not None:
                report(msg_forwarder, exc)

    async def handle_sending_messages(self, peer_id: ID, stream: Any, queue: Any) -> None:
        inner = getattr(queue, "_queue", None)  # RpcQueue's bounded PriorityQueue (py-libp2p 0.8.1)
        if inner is not None and getattr(inner, "max_size", 0) < OUTBOUND_QUEUE_SIZE:
            inner.max_size = OUTBOUND_QUEUE_SIZE
        await super().handle_sending_messages(peer_id, stream, queue)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        sink = self.sink
        if sink is not None and sink(publish_message):
            return
        super().notify_subscriptions(publish_message)


class _Fingerprint:
    """What GossipSub's equivocation check reads of a stored message (``data``, ``topicIDs``), as digests."""

    __slots__ = ("data", "topicIDs")

    class _Digest:
        __slots__ = ("value",)

        def __init__(self, value: bytes) -> None:
            self.value = value

        def __eq__(self, other: object) -> bool:
            if isinstance(other, (bytes, bytearray)):
                return hashlib.sha256(other).digest() == self.value
            return NotImplemented

        def __ne__(self, other: object) -> bool:
            equal = self.__eq__(other)
            return equal if equal is NotImplemented else not equal

        __hash__ = None  # type: ignore[assignment]

    class _Topics:
        __slots__ = ("value",)

        def __init__(self, topics: Any) -> None:
            self.value = tuple(topics)

        def __eq__(self, other: object) -> bool:
            try:
                return tuple(other) == self.value  # type: ignore[arg-type]
            except TypeError:
                return NotImplemented

        def __ne__(self, other: object) -> bool:
            equal = self.__eq__(other)
            return equal if equal is NotImplemented else not equal

        __hash__ = None  # type: ignore[assignment]

    def __init__(self, msg: rpc_pb2.Message) -> None:
        self.data = _Fingerprint._Digest(hashlib.sha256(msg.data).digest())
        self.topicIDs = _Fingerprint._Topics(msg.topicIDs)


class _FingerprintTable(dict):
    """GossipSub's ``equivocation_detection`` table, holding fingerprints instead of whole messages."""

    def __setitem__(self, key: Any, msg: Any) -> None:
        super().__setitem__(key, msg if isinstance(msg, _Fingerprint) else _Fingerprint(msg))


def topic_for(swarm_id: str) -> str:
    """The GossipSub topic of a swarm."""
    return f"/quinkgl/{swarm_id}/announce/1"


class Announcer:
    """GossipSub publishing / receiving for one swarm on one host."""

    def __init__(
        self,
        host: IHost,
        *,
        swarm_id: str,
        max_bytes: int,
        deliver: Callable[[str, bytes], None],
        reject: Callable[[str], None],
        learn: Callable[[str, list[str], ID | None], None] | None = None,
        queue_size: int = QUEUE_SIZE,
        limits: NetworkLimits | None = None,
        drop_peer: Callable[[ID], None] | None = None,
    ) -> None:
        self.host = host
        self.topic = topic_for(swarm_id)
        self.max_bytes = max_bytes
        self._tag = swarm_tag(swarm_id)
        self._deliver = deliver
        self._reject = reject
        self._learn = learn
        self._queue_size = queue_size
        self._queued_bytes = 0
        self._addr_block = encode_addr_block([])
        self.limits = limits if limits is not None else NetworkLimits()
        self._drop_peer = drop_peer
        lim = self.limits
        self._per_forwarder = RateLimiter(
            rate=lim.announce_per_forwarder_rate,
            burst=lim.announce_per_forwarder_burst,
            bytes_rate=lim.announce_per_forwarder_bytes_rate,
            bytes_burst=lim.announce_per_forwarder_bytes_burst,
            capacity=lim.max_tracked_forwarders,
        )
        self._per_origin = RateLimiter(
            rate=lim.announce_per_origin_rate,
            burst=lim.announce_per_origin_burst,
            bytes_rate=lim.announce_per_origin_bytes_rate,
            bytes_burst=lim.announce_per_origin_bytes_burst,
            capacity=lim.max_tracked_origins,
        )
        # origin -> (start time, highest sequence number, bitmask of the seen ones below it); see _check_stamp
        self._last_stamp: BoundedMap[bytes, tuple[int, int, int]] = BoundedMap(lim.max_tracked_origins)
        self.superseded = 0  # announcements overtaken by a newer one of their origin (not delivered)
        self._start_ms = int(time.time() * 1000)
        self._seq = 0
        self.gossipsub = GossipSub(
            protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=6,
            degree_low=4,
            degree_high=12,
            heartbeat_initial_delay=0.1,
            heartbeat_interval=1,
            spam_protection_enabled=False,
            eclipse_protection_enabled=False,
            adaptive_gossip_enabled=False,
        )
        if isinstance(getattr(self.gossipsub, "equivocation_detection", None), dict):
            self.gossipsub.equivocation_detection = _FingerprintTable()
        self.pubsub = _QueueingPubsub(host, self.gossipsub, strict_signing=True)
        self.pubsub.admit_forwarded = self._admit_forwarded
        self.pubsub.on_malformed = self._on_malformed
        self.pubsub.set_topic_validator(self.topic, self._validate, False)
        self._send, self._recv = trio.open_memory_channel[tuple[str, bytes]](queue_size)
        self._me = host.get_id().to_bytes()

    def set_addrs(self, addrs: list[str]) -> None:
        """The addresses published with every announcement (validated block form, see
        :func:`.peer_exchange.own_addrs`)."""
        self._addr_block = encode_addr_block(addrs)

    # ---------------------------------------------------------------------------------------------------------

    def _admit_forwarded(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Per-forwarder rate limit, before the signature is verified or anything is parsed; then the stamp
        check (pubsub caches validation results, so a replay could otherwise skip the validator)."""
        if not self._per_forwarder.allow(forwarder.to_bytes(), len(msg.data)):
            self._reject("announce_rate_forwarder")
            return False
        reason = self._check_stamp(bytes(msg.from_id), msg.data, record=False)
        if reason is not None:
            self._reject(f"announce_{reason}")
            return False
        return True

    def _check_stamp(self, origin: bytes, data: bytes, *, record: bool) -> str | None:
        """Replay protection from the envelope's signed stamp (like IPsec's anti-replay window).

        Per origin: its start time, the highest sequence number seen and a bitmask of the :data:`REPLAY_WINDOW`
        sequence numbers below it that were seen. Returns ``"stale"`` for a send time too old, an older
        incarnation, a sequence number already seen or below the window; ``"future"`` for a send time too far
        ahead; None otherwise (also for data too short to hold a stamp: the validator refuses those).

        With ``record`` (the last gate, right before delivery) the stamp is marked seen, and two more answers
        stop delivery without being a rejection: ``"duplicate"`` (one message validated via two forwarders at
        once) and ``"superseded"`` (an honest announcement overtaken in flight by a newer one of its origin:
        announcements are state, the newer one wins).
        """
        if origin == self._me or len(data) < HEADER_SIZE or not data.startswith(ENVELOPE_MAGIC):
            return None
        stamp = Stamp(*STAMP.unpack_from(data, len(ENVELOPE_MAGIC) + TAG_SIZE))
        now_ms = time.time() * 1000
        if now_ms - stamp.sent_ms > self.limits.announce_max_age_s * 1000:
            return "stale"
        if stamp.sent_ms - now_ms > self.limits.announce_max_future_s * 1000:
            return "future"
        state = self._last_stamp.get(origin)
        if state is None or stamp.start_ms > state[0]:  # first word from this origin, or it restarted
            if record:
                self._last_stamp.put(origin, (stamp.start_ms, stamp.seq, 1))
            return None
        start, highest, seen = state
        if stamp.start_ms < start:
            return "stale"  # an earlier incarnation
        if stamp.seq > highest:
            if record:
                shift = stamp.seq - highest
                mask = ((seen << shift) | 1) & ((1 << REPLAY_WINDOW) - 1) if shift < REPLAY_WINDOW else 1
                self._last_stamp.put(origin, (start, stamp.seq, mask))
            return None
        behind = highest - stamp.seq
        if behind >= REPLAY_WINDOW:
            return "stale"
        if seen >> behind & 1:
            return "duplicate" if record else "stale"  # already seen: a replay (or a concurrent duplicate)
        if record:
            self._last_stamp.put(origin, (start, highest, seen | 1 << behind))
            return "superseded"
        return None

    def _on_malformed(self, forwarder: ID, exc: BaseException) -> None:
        self._reject("rpc_malformed")
        logger.warning("dropped peer %s: a pubsub message it forwarded raised %s", forwarder, type(exc).__name__)
        if self._drop_peer is not None:
            self._drop_peer(forwarder)

    def _validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        origin = bytes(msg.from_id)
        own = origin == self._me
        if not own and not self._per_origin.allow(origin, len(msg.data)):
            self._reject("announce_rate_origin")  # before the envelope is parsed
            return False
        try:
            decode_stamped_envelope(msg.data, self._tag, self.max_bytes)
        except EnvelopeError as exc:
            self._reject(f"announce_{exc.reason}")
            return False
        if not msg.signature:
            self._reject("announce_unsigned")  # strict signing already refuses these; kept as a guard
            return False
        reason = self._check_stamp(origin, msg.data, record=False)
        if reason is not None:
            self._reject(f"announce_{reason}")
            return False
        return True

    def _enqueue(self, msg: rpc_pb2.Message) -> bool:
        """Take a validated, first-seen message off pubsub's hands (called synchronously by pubsub)."""
        if self.topic not in msg.topicIDs:
            return False
        if msg.from_id == self._me:
            return True  # our own publication, echoed back by pubsub
        reason = self._check_stamp(bytes(msg.from_id), msg.data, record=True)  # the last gate: records it
        if reason == "duplicate":
            return True  # the same message through a second forwarder, validated concurrently: delivered once
        if reason == "superseded":
            self.superseded += 1  # honest reordering, not a rejection
            return True
        if reason is not None:
            self._reject(f"announce_{reason}")
            return True
        try:
            _, addrs, document = decode_stamped_envelope(msg.data, self._tag, self.max_bytes)
        except EnvelopeError:  # validated already; kept as a guard
            return True
        origin = ID(msg.from_id).to_base58()  # authenticated by strict signing
        if self._learn is not None and addrs:
            try:
                self._learn(origin, addrs, _FORWARDER.get())
            except Exception:
                logger.exception("filing the addresses announced by %s failed", origin)
        if self._queued_bytes + len(document) > QUEUE_BYTES:
            self._reject("announce_queue_full")
            return True
        try:
            self._send.send_nowait((origin, document))
            self._queued_bytes += len(document)
        except trio.WouldBlock:
            self._reject("announce_queue_full")
        return True

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Announcer]:
        """Run pubsub + gossipsub, subscribe to the swarm topic and deliver from our queue while the block runs."""
        async with background_trio_service(self.pubsub), background_trio_service(self.gossipsub):
            await self.pubsub.wait_until_ready()
            self.pubsub.sink = self._enqueue
            await self.pubsub.subscribe(self.topic)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._dispatch, self._recv)
                try:
                    yield self
                finally:
                    self.pubsub.sink = None
                    nursery.cancel_scope.cancel()

    async def _dispatch(self, recv: trio.MemoryReceiveChannel[tuple[str, bytes]]) -> None:
        async for sender, document in recv:
            self._queued_bytes -= len(document)
            try:
                self._deliver(sender, document)
            except Exception:
                logger.exception("announcement handler failed for a message from %s", sender)

    # ---------------------------------------------------------------------------------------------------------

    async def publish(self, document: bytes) -> None:
        if len(document) > self.max_bytes:
            raise TransportError(
                f"announcement of {len(document)} bytes exceeds the limit of {self.max_bytes} bytes "
                "(GossipSub drops large messages silently; send big data with send())"
            )
        try:
            self._seq += 1
            stamp = Stamp(self._start_ms, self._seq, int(time.time() * 1000))
            await self.pubsub.publish(self.topic, encode_envelope(self._tag, self._addr_block, document, stamp))
        except Exception as exc:
            raise TransportError(f"publishing the announcement failed: {exc}") from exc
        await self._backpressure()

    async def _backpressure(self, limit_s: float = 2.0) -> None:
        """Let the per-peer sender tasks catch up before the next publication can overflow their queues."""
        deadline = trio.current_time() + limit_s
        while True:
            fullest = max((len(q) for q in self.pubsub.peer_queues.values()), default=0)
            if fullest < OUTBOUND_QUEUE_SIZE // 2 or trio.current_time() >= deadline:
                return
            await trio.sleep(0.002)  # no "queue has room" event exists to wait on

    def topic_peers(self) -> list[str]:
        """Peers known to be subscribed to the swarm topic."""
        return [p.to_base58() for p in self.pubsub.peer_topics.get(self.topic, ())]

    async def wait_for_peer(self, peer_id: ID, timeout: float) -> None:
        """Wait until ``peer_id`` is in our mesh for the swarm topic (an announcement will then reach it)."""
        await self.pubsub.wait_for_mesh(peer_id, self.topic, timeout=timeout)
