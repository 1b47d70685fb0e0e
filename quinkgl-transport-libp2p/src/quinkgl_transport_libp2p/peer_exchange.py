"""Peer exchange: every announcement carries its publisher's dialable addresses.

Peers that only share a bootstrap peer (``A -> B <- C`` with no registry, e.g. on different machines) receive
each other's announcements through GossipSub forwarding, but would have no address to dial each other. So the
announcement envelope carries an *address block* with the publisher's announced listen addresses, and a
receiver files them under the message's origin peer ID.

**Envelope** (the whole GossipSub message data; everything is length-checked, nothing is trusted)::

    b"QGA3"                     4 bytes, magic (version 3: version 2 had no stamp, version 1 no address block)
    SHA-256 of the swarm ID     32 bytes (the swarm tag)
    stamp                       24 bytes: start time, sequence number, send time (u64 BE each; times in ms
                                since the Unix epoch). Start time + sequence grow strictly per origin.
    block length L              u16 big-endian, L <= MAX_ADDR_BLOCK
    address block               L bytes:
        count N                     u8, N <= MAX_ADDRS
        N x (u16 BE length n, n bytes of ASCII multiaddr text), 1 <= n <= MAX_ADDR_TEXT
    document                    the rest (the application's bytes, <= max_announcement_bytes)

Each address is ``/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>`` optionally followed by ``/p2p/<peer id>``, or a
relayed address ``<such an address>/p2p/<relay id>/p2p-circuit`` (circuit relay v2, see relay.py); the
block must parse exactly (no trailing bytes, no duplicates). A malformed block makes the whole envelope invalid
(the topic validator rejects it, so it is neither delivered nor forwarded).

**Replays.** The stamp is covered by the origin's GossipSub signature. A receiver keeps, per origin, the
highest ``(start time, sequence)`` it accepted and ignores anything not above it (``announce_stale``); a
restarted peer has a later start time. The send time bounds how old an announcement may be when it arrives
(``NetworkLimits.announce_max_age_s``), which also covers origins whose state was evicted: a departed peer's
announcements replayed minutes later are refused.

**Trust model.** GossipSub runs with strict signing: the library verifies the origin's signature over the
message (data included) against the key embedded in the ``from`` peer ID. The addresses are therefore
authenticated to the *publishing* peer ID — a forwarder cannot change them, and nobody can publish addresses in
another peer's name. A publisher can still list an address that is not its own (or a black hole): that is
harmless beyond a wasted, bounded dial, because a dial to a peer-exchange address expects that peer ID and the
Noise handshake verifies the remote's identity. An address whose ``/p2p/`` suffix names a peer other than the
publisher is ignored (counted), never filed under that other peer. Filed addresses expire after a TTL, at most
:data:`MAX_ADDRS` are kept per peer (the most recently announced first) and the book holds a bounded number
of peers.

Pure Python: this module does not import libp2p.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from quinkgl.manifest.peers import parse_peer_address

ENVELOPE_MAGIC = b"QGA3"
TAG_SIZE = 32
STAMP = struct.Struct(">QQQ")  # start time (ms), sequence, send time (ms)
HEADER_SIZE = len(ENVELOPE_MAGIC) + TAG_SIZE + STAMP.size + 2  # magic + swarm tag + stamp + u16 block length
MAX_ADDRS = 8
MAX_ADDR_TEXT = 400  # /dns6/<253-character name>/tcp/65535/p2p/<peer id> fits
MAX_ADDR_BLOCK = 1 + MAX_ADDRS * (2 + MAX_ADDR_TEXT)
DEFAULT_TTL_S = 600.0  # a peer that stops announcing is forgotten after this long
DEFAULT_MAX_PEERS = 1024

_CIRCUIT = "/p2p-circuit"


class EnvelopeError(ValueError):
    """An announcement envelope is invalid; ``reason`` is the ``stats().rejected`` key (without ``announce_``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------------------------------------------------
# Addresses
# ------------------------------------------------------------------------------------------------------------


def parse_addr(text: str) -> tuple[str, str | None]:
    """Validate one block address; return ``(canonical address without /p2p/, peer ID in the suffix or None)``.

    Raises :class:`ValueError` for anything that is not a multiaddr in core's peer-address grammar
    (:func:`quinkgl.manifest.peers.parse_peer_address`) or not in canonical form (IP addresses as Python's
    ``ipaddress`` writes them, no leading zeros).
    """
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not a multiaddr")
    if text.endswith(_CIRCUIT):  # <relay tcp address>/p2p/<relay id>/p2p-circuit: reachable through that relay
        relay, relay_id = parse_addr(text[: -len(_CIRCUIT)])
        if relay_id is None or relay.endswith(_CIRCUIT):
            raise ValueError(f"{text!r}: a relayed address needs /p2p/<relay id> before /p2p-circuit")
        return f"{relay}/p2p/{relay_id}{_CIRCUIT}", None
    address = parse_peer_address(text)
    canonical = address.multiaddr if address.peer_id is None else address.multiaddr.rpartition("/p2p/")[0]
    if text != address.multiaddr:
        raise ValueError(f"{text!r} is not in canonical form")  # e.g. "/ip6/::0001/...", port "080"
    return canonical, address.peer_id


def dialable(canonical: str) -> bool:
    """False for addresses nobody can dial (unspecified or multicast IPs)."""
    parts = canonical.split("/")
    if parts[1] not in ("ip4", "ip6"):
        return True
    ip = ipaddress.ip_address(parts[2])
    return not (ip.is_unspecified or ip.is_multicast)


def own_addrs(listen_addrs: Iterable[str], peer_id: str) -> list[str]:
    """The addresses a peer publishes: its announced listen addresses in block form, at most :data:`MAX_ADDRS`.

    Addresses that are not TCP over IP / DNS, that name another peer, or that nobody could dial are left out;
    the ``/p2p/<own id>`` suffix is dropped (the origin is authenticated by the message signature anyway).
    """
    out: list[str] = []
    for text in listen_addrs:
        try:
            canonical, suffix = parse_addr(str(text))
        except ValueError:
            continue
        if suffix not in (None, peer_id) or not dialable(canonical) or canonical in out:
            continue
        if len(canonical) > MAX_ADDR_TEXT:
            continue
        out.append(canonical)
        if len(out) == MAX_ADDRS:
            break
    return out


# ------------------------------------------------------------------------------------------------------------
# Address block and envelope
# ------------------------------------------------------------------------------------------------------------


def encode_addr_block(addrs: Sequence[str]) -> bytes:
    """The address block for ``addrs`` (already validated, e.g. by :func:`own_addrs`)."""
    if len(addrs) > MAX_ADDRS:
        raise ValueError(f"at most {MAX_ADDRS} addresses, got {len(addrs)}")
    out = bytearray([len(addrs)])
    for addr in addrs:
        raw = addr.encode("ascii")
        if not 0 < len(raw) <= MAX_ADDR_TEXT:
            raise ValueError(f"address of {len(raw)} bytes (limit {MAX_ADDR_TEXT})")
        out += struct.pack(">H", len(raw)) + raw
    return bytes(out)


def decode_addr_block(block: bytes) -> list[str]:
    """The address texts of a block, exactly as sent; :class:`EnvelopeError` (``bad_addrs``) if malformed."""

    def bad(message: str) -> EnvelopeError:
        return EnvelopeError("bad_addrs", f"malformed address block: {message}")

    if not block:
        raise bad("empty")
    count = block[0]
    if count > MAX_ADDRS:
        raise bad(f"{count} addresses (limit {MAX_ADDRS})")
    pos = 1
    addrs: list[str] = []
    for _ in range(count):
        if pos + 2 > len(block):
            raise bad("truncated length")
        (n,) = struct.unpack_from(">H", block, pos)
        pos += 2
        if not 0 < n <= MAX_ADDR_TEXT or pos + n > len(block):
            raise bad(f"address length {n}")
        raw = bytes(block[pos : pos + n])
        pos += n
        try:
            text = raw.decode("ascii")
            parse_addr(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise bad(f"invalid address: {exc}") from None
        if text in addrs:
            raise bad(f"duplicate address {text!r}")
        addrs.append(text)
    if pos != len(block):
        raise bad(f"{len(block) - pos} trailing bytes")
    return addrs


class Stamp(NamedTuple):
    """The replay-protection stamp of an envelope (times in ms since the Unix epoch)."""

    start_ms: int  # when the origin's process started: a restart is a new, later incarnation
    seq: int  # per incarnation, strictly increasing
    sent_ms: int  # when it was published


class _DefaultStamps:
    """Stamps for callers that give none: this process's start time and one counter."""

    def __init__(self) -> None:
        self.start_ms = int(time.time() * 1000)
        self.seq = 0

    def next(self) -> Stamp:
        self.seq += 1
        return Stamp(self.start_ms, self.seq, int(time.time() * 1000))


_default_stamps = _DefaultStamps()


def encode_envelope(tag: bytes, addr_block: bytes, document: bytes, stamp: Stamp | None = None) -> bytes:
    """An envelope; without ``stamp``, the next one of a process-wide counter."""
    if len(tag) != TAG_SIZE:
        raise ValueError("the swarm tag is 32 bytes")
    if len(addr_block) > MAX_ADDR_BLOCK:
        raise ValueError(f"address block of {len(addr_block)} bytes (limit {MAX_ADDR_BLOCK})")
    stamp = _default_stamps.next() if stamp is None else stamp
    return ENVELOPE_MAGIC + tag + STAMP.pack(*stamp) + struct.pack(">H", len(addr_block)) + addr_block + bytes(document)


def decode_stamped_envelope(data: bytes, tag: bytes, max_document_bytes: int) -> tuple[Stamp, list[str], bytes]:
    """``(stamp, address texts, document)`` of an envelope, or :class:`EnvelopeError` with the rejection reason:
    ``too_large``, ``bad_envelope`` (magic / header), ``wrong_swarm``, ``bad_addrs`` (address block)."""
    if len(data) > HEADER_SIZE + MAX_ADDR_BLOCK + max_document_bytes:
        raise EnvelopeError("too_large", f"announcement of {len(data)} bytes")
    if len(data) < HEADER_SIZE or not data.startswith(ENVELOPE_MAGIC):
        raise EnvelopeError("bad_envelope", "not a QGA3 announcement envelope")
    if data[len(ENVELOPE_MAGIC) : len(ENVELOPE_MAGIC) + TAG_SIZE] != tag:
        raise EnvelopeError("wrong_swarm", "announcement of another swarm")
    stamp = Stamp(*STAMP.unpack_from(data, len(ENVELOPE_MAGIC) + TAG_SIZE))
    (block_len,) = struct.unpack_from(">H", data, HEADER_SIZE - 2)
    if block_len > MAX_ADDR_BLOCK or HEADER_SIZE + block_len > len(data):
        raise EnvelopeError("bad_addrs", f"malformed address block: length {block_len}")
    addrs = decode_addr_block(data[HEADER_SIZE : HEADER_SIZE + block_len])
    document = bytes(data[HEADER_SIZE + block_len :])
    if len(document) > max_document_bytes:
        raise EnvelopeError("too_large", f"announcement document of {len(document)} bytes")
    return stamp, addrs, document


def decode_envelope(data: bytes, tag: bytes, max_document_bytes: int) -> tuple[list[str], bytes]:
    """``(address texts, document)`` of an envelope (see :func:`decode_stamped_envelope`)."""
    _, addrs, document = decode_stamped_envelope(data, tag, max_document_bytes)
    return addrs, document


# ------------------------------------------------------------------------------------------------------------
# Address book
# ------------------------------------------------------------------------------------------------------------


def addrs_for_origin(origin: str, addrs: Iterable[str]) -> tuple[list[str], int]:
    """Addresses of a block that may be filed under ``origin``: ``(canonical addresses, number ignored)``.

    Ignored: addresses whose ``/p2p/`` suffix names another peer, and undialable ones (unspecified/multicast).
    """
    kept: list[str] = []
    ignored = 0
    for text in addrs:
        try:
            canonical, suffix = parse_addr(text)
        except ValueError:
            ignored += 1
            continue
        if (suffix is not None and suffix != origin) or not dialable(canonical):
            ignored += 1
            continue
        if canonical not in kept:
            kept.append(canonical)
    return kept, ignored


class AddressBook:
    """Peer ID -> addresses learned from its authenticated announcements, each with an expiry time.

    The most recently announced addresses come first; at most ``max_per_peer`` are kept per peer and at most
    ``max_peers`` peers (the least recently refreshed is dropped first). Times are ``time.monotonic()``.
    """

    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_per_peer: int = MAX_ADDRS,
        max_peers: int = DEFAULT_MAX_PEERS,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        self.ttl_s = float(ttl_s)
        self.max_per_peer = max_per_peer
        self.max_peers = max_peers
        self.on_evict = on_evict  # told about every peer dropped to respect max_peers
        self._book: OrderedDict[str, dict[str, float]] = OrderedDict()  # peer -> {addr: expires_at}, newest first

    def learn(self, peer: str, addrs: Sequence[str], now: float | None = None) -> bool:
        """File ``addrs`` (canonical, newest announcement) under ``peer``; True if the list of addresses changed."""
        now = time.monotonic() if now is None else now
        before = self.addrs(peer, now)
        old = self._book.pop(peer, {})
        entry: dict[str, float] = {}
        for addr in list(addrs)[: self.max_per_peer]:
            entry[addr] = now + self.ttl_s
        for addr, expires in old.items():  # earlier addresses stay (until they expire) after the new ones
            if len(entry) >= self.max_per_peer:
                break
            if addr not in entry and expires > now:
                entry[addr] = expires
        if entry:
            self._book[peer] = entry
            while len(self._book) > self.max_peers:
                evicted, _ = self._book.popitem(last=False)
                if self.on_evict is not None:
                    self.on_evict(evicted)
        return self.addrs(peer, now) != before

    def addrs(self, peer: str, now: float | None = None) -> list[str]:
        """Unexpired addresses of ``peer``, the most recently announced first."""
        now = time.monotonic() if now is None else now
        entry = self._book.get(peer)
        if not entry:
            return []
        live = [a for a, expires in entry.items() if expires > now]
        if len(live) != len(entry):
            if live:
                self._book[peer] = {a: entry[a] for a in live}
            else:
                del self._book[peer]
        return live

    def remaining_ttl(self, peer: str, now: float | None = None) -> float:
        """Seconds until the last address of ``peer`` expires (0 when none is known)."""
        now = time.monotonic() if now is None else now
        entry = self._book.get(peer) or {}
        return max([expires - now for expires in entry.values()] + [0.0])

    def forget(self, peer: str) -> None:
        self._book.pop(peer, None)

    def __len__(self) -> int:
        return len(self._book)

    def __contains__(self, peer: object) -> bool:
        return peer in self._book
