"""What a peer knows about the others: their announcements, checked and kept with the time last heard.

An announcement is a small JSON document every peer publishes about itself every few seconds (discovery and
liveness only; no round waits on announcements). Only peers announcing our swarm ID and our arch hash are
compatible: others are ignored with a logged, counted reason. The sender's identity comes from the transport
(authenticated), never from the document.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from quinkgl.topology import PeerCandidate

MAX_ANNOUNCEMENT_BYTES = 64 * 1024
ANNOUNCEMENT_VERSION = 1


class AnnouncementRejected(Exception):
    """An announcement we do not act on; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def encode_announcement(*, swarm_id: str, arch_hash: str, node_id: str, round_idx: int, pushed: int, done: bool,
                        metrics: dict[str, Any], metadata: dict[str, Any]) -> bytes:
    """The announcement bytes a peer publishes."""
    doc = {
        "v": ANNOUNCEMENT_VERSION, "swarm_id": swarm_id, "arch_hash": arch_hash, "node_id": node_id,
        "round": round_idx, "pushed": pushed, "done": done, "metrics": metrics, "metadata": metadata,
    }
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
    if not isinstance(doc.get("node_id"), str) or not isinstance(doc.get("done"), bool):
        raise AnnouncementRejected("malformed", "node_id/done have the wrong type")
    for key in ("metrics", "metadata"):
        if not isinstance(doc.get(key), dict):
            raise AnnouncementRejected("malformed", f"{key} must be an object")
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


class PeerView:
    """The compatible peers heard from: the candidates a topology picks sources from."""

    def __init__(self, own_id: str, timeout: float):
        self.own_id = own_id
        self.timeout = timeout
        self.peers: dict[str, PeerState] = {}

    def observe(self, peer_id: str, doc: dict[str, Any], now: float) -> bool:
        """Record a valid announcement; True the first time this peer is seen."""
        state = self.peers.get(peer_id)
        first = state is None
        if state is None:
            state = self.peers[peer_id] = PeerState(peer_id)
        state.node_id, state.round, state.pushed, state.done = doc["node_id"], doc["round"], doc["pushed"], doc["done"]
        state.metrics, state.metadata, state.last_seen = doc["metrics"], doc["metadata"], now
        return first

    def forget(self, peer_id: str) -> None:
        """The transport lost this peer."""
        self.peers.pop(peer_id, None)

    def alive(self, now: float) -> list[PeerState]:
        """Peers heard from within the timeout that have not finished."""
        return [p for p in self.peers.values() if now - p.last_seen <= self.timeout and not p.done]

    def is_compatible(self, peer_id: str) -> bool:
        """Whether ``peer_id`` has announced our swarm and arch hash."""
        return peer_id in self.peers

    def candidates(self, now: float) -> list[PeerCandidate]:
        """Push targets a topology may choose from."""
        return [PeerCandidate(p.peer_id, p.round, dict(p.metadata)) for p in self.alive(now)]

    def snapshot(self) -> dict[str, Any]:
        """The view as JSON for checkpoints."""
        return {p.peer_id: {"node_id": p.node_id, "round": p.round} for p in self.peers.values()}

