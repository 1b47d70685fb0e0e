"""Cyclon peer sampling (Voulgaris, Gavidia and van Steen, 2005) as a transport-neutral state machine.

Every peer keeps a *partial view* of at most ``view_size`` descriptors, each with an age. Periodically a peer
**shuffles** with the oldest peer in its view:

1. it ages every entry by one, takes the oldest entry Q out of its view, and picks ``shuffle_length - 1`` other
   random entries;
2. it sends Q those entries plus a fresh descriptor of itself (age 0);
3. Q answers with up to ``shuffle_length`` random entries of its own view and merges what it received;
4. the initiator merges Q's answer.

A merge drops descriptors of the merging peer itself, descriptors already in the view (keeping the newer
signed one) and descriptors whose signature does not verify; it fills empty slots first, then replaces the
entries it just sent away. If Q does not answer, nothing is merged: Q was already taken out of the view in
step 1, which is how departed peers disappear: their descriptors age in other views until they are the oldest,
then they are contacted, fail and are dropped.

A descriptor's peer ID, addresses and issue time are signed by the peer it describes, so one peer cannot
forge another's address; the age is the holder's local bookkeeping and is not signed. Signing and verifying are
injected (the transport knows the keys), so this module does no I/O and no cryptography of its own. Messages
are size-capped JSON (:func:`encode_shuffle`, :func:`decode_shuffle`).

No peer here needs the swarm's membership: its bootstrap descriptors and the shuffles are all it learns from.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Iterable, Sequence

import attrs

MAX_ADDRS = 8  # addresses per descriptor
MAX_ADDR_CHARS = 256
MAX_PEER_ID_CHARS = 128
MAX_SIGNATURE_BYTES = 256
MAX_SHUFFLE_BYTES = 64 * 1024  # one shuffle request or answer, encoded

Signer = Callable[[bytes], bytes]
Verifier = Callable[[str, bytes, bytes], bool]  # (peer ID, signed bytes, signature) -> valid


class ShuffleRejected(ValueError):
    """A shuffle message that is malformed, too large or carries too many entries."""


@attrs.frozen
class Descriptor:
    """A peer as others know it: ID, addresses and issue time (signed by that peer), plus a local age."""

    peer_id: str
    addrs: tuple[str, ...]
    issued: int  # the described peer's clock when it signed, in ms; a newer descriptor replaces an older one
    signature: bytes
    age: int = 0  # as the sender's view had it; a view keeps its own ages (CyclonView.ages)

    def signed_bytes(self) -> bytes:
        """What the described peer signs: everything but the age."""
        return descriptor_body(self.peer_id, self.addrs, self.issued)


def descriptor_body(peer_id: str, addrs: Sequence[str], issued: int) -> bytes:
    """The canonical bytes of a descriptor's signed part: one field per line (no field may hold a line break)."""
    return "\n".join(("cyclon/1", peer_id, str(issued), *addrs)).encode()


def make_descriptor(peer_id: str, addrs: Sequence[str], issued: int, sign: Signer) -> Descriptor:
    """A fresh (age 0) descriptor of this peer, signed with its own key."""
    addrs = tuple(addrs)[:MAX_ADDRS]
    return Descriptor(peer_id, addrs, issued, sign(descriptor_body(peer_id, addrs, issued)))


def encode_shuffle(entries: Sequence[Descriptor]) -> bytes:
    """A shuffle request or answer as bytes."""
    doc = [
        {"a": list(d.addrs), "g": d.age, "i": d.issued, "p": d.peer_id, "s": base64.b64encode(d.signature).decode()}
        for d in entries
    ]
    return json.dumps({"entries": doc, "v": "cyclon/1"}, separators=(",", ":")).encode()


def decode_shuffle(raw: bytes, *, max_entries: int) -> list[Descriptor]:
    """Parse a shuffle message, enforcing every cap; raises :class:`ShuffleRejected`. Signatures are not checked
    here (merging does that)."""
    if len(raw) > MAX_SHUFFLE_BYTES:
        raise ShuffleRejected(f"shuffle message of {len(raw)} bytes exceeds {MAX_SHUFFLE_BYTES}")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShuffleRejected(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("v") != "cyclon/1" or not isinstance(doc.get("entries"), list):
        raise ShuffleRejected("not a cyclon/1 shuffle message")
    if len(doc["entries"]) > max_entries:
        raise ShuffleRejected(f"{len(doc['entries'])} entries, at most {max_entries} allowed")
    return [_entry(item) for item in doc["entries"]]


def _printable(value: object, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


def _entry(item: object) -> Descriptor:
    if not isinstance(item, dict):
        raise ShuffleRejected("an entry is not an object")
    peer_id, addrs, issued, age, signature = (item.get(k) for k in ("p", "a", "i", "g", "s"))
    if not _printable(peer_id, MAX_PEER_ID_CHARS):
        raise ShuffleRejected("bad peer ID")
    if not isinstance(addrs, list) or len(addrs) > MAX_ADDRS or not all(_printable(a, MAX_ADDR_CHARS) for a in addrs):
        raise ShuffleRejected("bad address list")
    for name, value in (("issue time", issued), ("age", age)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
            raise ShuffleRejected(f"bad {name}")
    if not isinstance(signature, str) or len(signature) > MAX_SIGNATURE_BYTES * 2:
        raise ShuffleRejected("bad signature")
    try:
        sig = base64.b64decode(signature, validate=True)
    except ValueError:
        raise ShuffleRejected("signature is not base64") from None
    assert isinstance(peer_id, str) and isinstance(issued, int) and isinstance(age, int)  # checked above
    return Descriptor(peer_id, tuple(addrs), issued, sig, age)


@attrs.define
class CyclonStats:
    """What a peer's Cyclon instance did: shuffles started/answered/failed, entries rejected."""

    started: int = 0
    answered: int = 0
    failed: int = 0
    rejected_signature: int = 0


class CyclonView:
    """One peer's partial view and its side of the shuffle protocol."""

    def __init__(
        self,
        own: Callable[[], Descriptor],
        *,
        view_size: int,
        shuffle_length: int,
        rng: random.Random,
        verify: Verifier,
    ):
        if not 1 <= shuffle_length <= view_size:
            raise ValueError("shuffle_length must be between 1 and view_size")
        self._own = own  # makes a fresh signed descriptor of this peer
        self.own_id = own().peer_id
        self.view_size = view_size
        self.shuffle_length = shuffle_length
        self.rng = rng
        self.verify = verify
        self.entries: dict[str, Descriptor] = {}  # peer ID -> its signed descriptor (shared, never mutated)
        self.ages: dict[str, int] = {}  # peer ID -> age in shuffles, this view's own bookkeeping
        self.stats = CyclonStats()
        self._pending: dict[str, list[str]] = {}  # shuffle target -> peer IDs sent to it

    # -- the view -------------------------------------------------------------------------------------------------

    def peers(self) -> list[str]:
        """The peer IDs in the view, sorted."""
        return sorted(self.entries)

    def seed(self, descriptors: Iterable[Descriptor]) -> None:
        """Add bootstrap descriptors (verified like any other)."""
        self._merge(list(descriptors), sent=[])

    def sample(self, k: int) -> list[str]:
        """Up to ``k`` distinct random peers from the view: the peers to learn from this round."""
        peers = self.peers()
        return self.rng.sample(peers, min(k, len(peers)))

    # -- the protocol ---------------------------------------------------------------------------------------------

    def start_shuffle(self) -> tuple[str, list[Descriptor]] | None:
        """Age the view and take its oldest entry out; return (that peer, the entries to send it), or None."""
        if not self.entries:
            return None
        for peer_id in self.ages:
            self.ages[peer_id] += 1
        peers = self.peers()
        eldest = max(self.ages.values())
        target = self.rng.choice([p for p in peers if self.ages[p] == eldest])
        self._drop(target)
        others = self.rng.sample([p for p in peers if p != target], min(self.shuffle_length - 1, len(peers) - 1))
        self._pending[target] = others
        self.stats.started += 1
        return target, [self._own(), *self._outgoing(others)]

    def start_intro(self, target: str) -> list[Descriptor]:
        """A newcomer's first exchange with ``target`` (a bootstrap peer, not in the view): just our own fresh
        descriptor. ``target`` answers as to a shuffle, with its own descriptor first (it joins our view)."""
        self._pending[target] = []
        self.stats.started += 1
        return [self._own()]

    def answer_shuffle(self, sender: str, received: Sequence[Descriptor]) -> list[Descriptor]:
        """Handle a shuffle request from ``sender``: pick the answer, merge what was received, return the answer."""
        pool = [p for p in self.peers() if p != sender]
        answer_ids = self.rng.sample(pool, min(self.shuffle_length, len(pool)))
        answer = self._outgoing(answer_ids)
        self._merge(list(received)[: self.shuffle_length], sent=answer_ids)
        self.stats.answered += 1
        return answer

    def finish_shuffle(self, target: str, answer: Sequence[Descriptor]) -> None:
        """Merge ``target``'s answer to the shuffle this peer started."""
        sent = self._pending.pop(target, None)
        if sent is None:
            return  # an answer nobody asked for
        self._merge(list(answer)[: self.shuffle_length], sent=sent)

    def shuffle_failed(self, target: str) -> None:
        """``target`` did not answer: it stays out of the view (it is probably gone)."""
        if self._pending.pop(target, None) is not None:
            self.stats.failed += 1

    def forget(self, peer_id: str) -> None:
        """Drop a peer the runtime found unreachable."""
        self._drop(peer_id)

    def _drop(self, peer_id: str) -> None:
        self.entries.pop(peer_id, None)
        self.ages.pop(peer_id, None)

    def _outgoing(self, peer_ids: Sequence[str]) -> list[Descriptor]:
        return [
            Descriptor(d.peer_id, d.addrs, d.issued, d.signature, self.ages[p])
            for p, d in ((p, self.entries[p]) for p in peer_ids)
        ]

    def _put(self, descriptor: Descriptor, age: int) -> None:
        self.entries[descriptor.peer_id] = descriptor
        self.ages[descriptor.peer_id] = age

    def _merge(self, received: list[Descriptor], sent: list[str]) -> None:
        replaceable = [p for p in sent if p in self.entries]
        for descriptor in received:
            if descriptor.peer_id == self.own_id:
                continue
            current = self.entries.get(descriptor.peer_id)
            if current is not None and current.issued >= descriptor.issued:
                continue
            if not self.verify(descriptor.peer_id, descriptor.signed_bytes(), descriptor.signature):
                self.stats.rejected_signature += 1
                continue
            if current is not None:  # a newer signed descriptor of a peer we know: new addresses, the younger age
                self._put(descriptor, min(self.ages[descriptor.peer_id], descriptor.age))
            elif len(self.entries) < self.view_size:
                self._put(descriptor, descriptor.age)
            elif replaceable:
                self._drop(replaceable.pop())
                self._put(descriptor, descriptor.age)
