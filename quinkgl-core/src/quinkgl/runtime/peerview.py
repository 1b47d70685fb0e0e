"""What a peer knows about the others: their announcements, checked and kept with the time last heard.

An announcement is a small JSON document every peer publishes about itself every few seconds (discovery and
liveness only; no round waits on announcements). Only peers announcing our swarm ID and our arch hash are
compatible: others are ignored with a logged, counted reason. The sender's identity comes from the transport
(authenticated), never from the document.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import attrs

from quinkgl.errors import MembershipError
from quinkgl.membership import MembershipGate
from quinkgl.topology import PeerCandidate

MAX_ANNOUNCEMENT_BYTES = 64 * 1024
ANNOUNCEMENT_VERSION = 1
MAX_VIEW_PEERS = 512  # peers kept in the view; a newcomer beyond this waits until an entry expires
MAX_PEER_METADATA_BYTES = 8 * 1024  # metrics + metadata kept per peer (JSON bytes); larger announcements refused
MAX_ROUND_LEAD = 1000  # an announcement or update this many rounds ahead of ours is refused (round 2**53 …)
EXPIRE_AFTER_TIMEOUTS = 6  # an entry not heard from for this many peer timeouts (at least a minute) is dropped


class AnnouncementRejected(Exception):
    """An announcement we do not act on; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def encode_announcement(
    *,
    swarm_id: str,
    arch_hash: str,
    node_id: str,
    round_idx: int,
    pushed: int,
    done: bool,
    metrics: dict[str, Any],
    metadata: dict[str, Any],
    cert: dict[str, Any] | None = None,
) -> bytes:
    """The announcement bytes a peer publishes (``cert``: its membership certificate in a certified swarm).

    Non-finite metric values (a diverged model's infinite loss) are left out: announcements are strict JSON."""
    metrics = {k: v for k, v in metrics.items() if not (isinstance(v, float) and not math.isfinite(v))}
    doc = {
        "v": ANNOUNCEMENT_VERSION,
        "swarm_id": swarm_id,
        "arch_hash": arch_hash,
        "node_id": node_id,
        "round": round_idx,
        "pushed": pushed,
        "done": done,
        "metrics": metrics,
        "metadata": metadata,
    }
    if cert is not None:
        doc["cert"] = cert
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if type(value) is not int or value < 0:
        raise AnnouncementRejected("malformed", f"field {key!r} must be a non-negative integer")
    return value


def parse_announcement(raw: bytes, *, swarm_id: str, arch_hash: str) -> dict[str, Any]:
    """Validate an announcement for our swarm; raises :class:`AnnouncementRejected`."""
    if len(raw) > MAX_ANNOUNCEMENT_BYTES:
        raise AnnouncementRejected("oversized", f"{len(raw)} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise AnnouncementRejected("malformed", f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("v") != ANNOUNCEMENT_VERSION:
        raise AnnouncementRejected("malformed", "not a version-1 announcement")
    if doc.get("swarm_id") != swarm_id:
        raise AnnouncementRejected("other_swarm", f"announces swarm {str(doc.get('swarm_id'))[:23]}…")
    if doc.get("arch_hash") != arch_hash:
        raise AnnouncementRejected("arch_mismatch", f"announces arch hash {str(doc.get('arch_hash'))[:23]}…")
    for key in ("round", "pushed"):
        _int(doc, key)
    if not isinstance(doc.get("node_id"), str) or not isinstance(doc.get("done"), bool) or len(doc["node_id"]) > 128:
        raise AnnouncementRejected("malformed", "node_id/done have the wrong type")
    for key in ("metrics", "metadata"):
        if not isinstance(doc.get(key), dict):
            raise AnnouncementRejected("malformed", f"{key} must be an object")
    if "cert" in doc and not isinstance(doc["cert"], dict):
        raise AnnouncementRejected("malformed", "cert must be an object")
    kept = sum(len(json.dumps(doc[key], separators=(",", ":"))) for key in ("metrics", "metadata"))
    if kept > MAX_PEER_METADATA_BYTES:
        raise AnnouncementRejected(
            "oversized_metadata", f"{kept} bytes of metrics and metadata; at most {MAX_PEER_METADATA_BYTES} are kept"
        )
    return doc


@attrs.define
class PeerState:
    """The latest we know of one compatible peer."""

    peer_id: str
    node_id: str = ""
    round: int = 0
    pushed: int = 0
    done: bool = False
    last_seen: float = 0.0
    metrics: dict[str, Any] = attrs.field(factory=dict)
    metadata: dict[str, Any] = attrs.field(factory=dict)
    cert_signature: str | None = None  # of the verified membership certificate (certified swarms)
    cert_expires: float | None = None  # POSIX time the certificate expires (None: never, or open swarm)


class PeerView:
    """The compatible peers heard from: the candidates a topology picks sources from.

    Bounded: at most ``max_peers`` entries of at most :data:`MAX_PEER_METADATA_BYTES` each; an entry not heard
    from for ``expire_after`` seconds is dropped. When the view is full, a newcomer takes the place of an entry
    that is no longer alive, or is refused (``view_full``): peers already known are never displaced by a flood of
    new identities. In a certified swarm (``gate`` given) only senders with a valid membership certificate get in.

    The view lives on the event loop; other threads get :meth:`snapshot` copies taken there."""

    def __init__(
        self,
        own_id: str,
        timeout: float,
        *,
        max_peers: int = MAX_VIEW_PEERS,
        expire_after: float | None = None,
        gate: MembershipGate | None = None,
        max_round_lead: int = MAX_ROUND_LEAD,
    ):
        self.own_id = own_id
        self.timeout = timeout
        self.max_peers = max_peers
        self.expire_after = expire_after if expire_after is not None else max(EXPIRE_AFTER_TIMEOUTS * timeout, 60.0)
        self.gate = gate
        self.max_round_lead = max_round_lead
        self.peers: dict[str, PeerState] = {}

    def observe(self, peer_id: str, doc: dict[str, Any], now: float, own_round: int | None = None) -> bool:
        """Record a valid announcement; True the first time this peer is seen (since it last left the view).

        Raises :class:`AnnouncementRejected` for a round too far ahead of ``own_round``, a sender without a valid
        membership certificate (certified swarms) and a newcomer when the view is full."""
        if own_round is not None and doc["round"] > own_round + self.max_round_lead:
            raise AnnouncementRejected("far_future_round", f"announces round {doc['round']}, ours is {own_round}")
        state = self.peers.get(peer_id)
        cert = None
        if self.gate is not None:
            try:
                cert = self.gate.admit(peer_id, doc.get("cert"), state.cert_signature if state else None)
            except MembershipError as exc:
                if state is not None:
                    del self.peers[peer_id]  # e.g. its certificate expired
                raise AnnouncementRejected("not_a_member", f"{exc.reason.replace('_', ' ')}: {exc}") from None
        first = state is None
        if state is None:
            self._make_room(now)
            state = self.peers[peer_id] = PeerState(peer_id)
        state.node_id, state.round, state.pushed, state.done = doc["node_id"], doc["round"], doc["pushed"], doc["done"]
        state.metrics, state.metadata, state.last_seen = doc["metrics"], doc["metadata"], now
        if cert is not None:
            state.cert_signature, state.cert_expires = cert.signature, cert.expires_at_unix()
        return first

    def _make_room(self, now: float) -> None:
        if len(self.peers) < self.max_peers:
            return
        self.expire(now)
        if len(self.peers) < self.max_peers:
            return
        oldest = min(self.peers.values(), key=lambda p: p.last_seen)
        if now - oldest.last_seen <= self.timeout and not oldest.done:
            raise AnnouncementRejected("view_full", f"the view already holds {self.max_peers} live peers")
        del self.peers[oldest.peer_id]

    def expire(self, now: float) -> list[str]:
        """Drop entries not heard from for ``expire_after`` seconds; return their peer IDs."""
        gone = [p.peer_id for p in self.peers.values() if now - p.last_seen > self.expire_after]
        for peer_id in gone:
            del self.peers[peer_id]
        return gone

    def forget(self, peer_id: str) -> None:
        """The transport lost this peer."""
        self.peers.pop(peer_id, None)

    def admits(self, peer_id: str, wall_now: float | None = None) -> bool:
        """Whether we exchange anything with ``peer_id``: it is in the view, and its certificate (if the swarm is
        certified) has not expired. Transports may ask this before reading any bytes from the peer."""
        state = self.peers.get(peer_id)
        if state is None:
            return False
        return state.cert_expires is None or (wall_now if wall_now is not None else time.time()) < state.cert_expires

    def alive(self, now: float) -> list[PeerState]:
        """Peers heard from within the timeout that have not finished (and are still admitted)."""
        wall = time.time()
        return [
            p
            for p in self.peers.values()
            if now - p.last_seen <= self.timeout and not p.done and (p.cert_expires is None or wall < p.cert_expires)
        ]

    def is_compatible(self, peer_id: str) -> bool:
        """Whether ``peer_id`` has announced our swarm and arch hash (and is admitted)."""
        return self.admits(peer_id)

    def candidates(self, now: float) -> list[PeerCandidate]:
        """Push targets a topology may choose from."""
        return [PeerCandidate(p.peer_id, p.round, dict(p.metadata)) for p in self.alive(now)]

    def snapshot(self) -> dict[str, Any]:
        """The view as JSON for checkpoints (a copy: call it on the event loop, hand the copy to a thread)."""
        return {p.peer_id: {"node_id": p.node_id, "round": p.round} for p in list(self.peers.values())}
