"""The topology contract and core's built-in RandomTopology.

Each round a topology picks, among the verified compatible peers the runtime knows, the ones to push the
model to. It is called on the event loop and must be fast and pure (no I/O). A topology that keeps its own
partial view by exchanging messages (Cyclon) also implements :class:`quinkgl.sampling.PeerSampler`; its
``select`` stays pure, the exchanges run through the channel the runtime gives it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs


@attrs.frozen
class PeerCandidate:
    """A compatible peer as a topology sees it: its ID, last round heard of, and announced metadata."""

    peer_id: str
    last_round: int = 0
    metadata: Mapping[str, Any] = attrs.field(factory=dict)


class Topology(Protocol):
    """Chooses push targets each round."""

    def select(self, own_id: str, candidates: Sequence[PeerCandidate], round_idx: int, rng: random.Random) -> list[str]:
        """Return the peer IDs to send this round's model to (a subset of ``candidates``, never ``own_id``).

        ``candidates`` includes the peer itself (``peer_id == own_id``, with its own metadata) so topologies can
        compare others with it; it must never be chosen."""


@attrs.frozen
class RandomTopologyParams:
    """``fanout``: how many peers receive the model each round (all of them if fewer are known)."""

    fanout: int = attrs.field(default=3, validator=attrs.validators.ge(1))


class RandomTopology:
    """Push to ``fanout`` peers drawn uniformly at random each round."""

    def __init__(self, params: RandomTopologyParams | None = None, manifest: Any = None):
        from quinkgl.datapolicy import collaboration_mode

        self.params = params or RandomTopologyParams()
        self.mode = collaboration_mode(manifest)

    def select(self, own_id: str, candidates: Sequence[PeerCandidate], round_idx: int, rng: random.Random) -> list[str]:
        """Sample ``fanout`` distinct peers (other than ourselves), among similar ones under ``similar`` mode."""
        from quinkgl.datapolicy import collaborators

        candidates = collaborators(own_id, candidates, self.mode)
        pool = sorted(c.peer_id for c in candidates if c.peer_id != own_id)
        return rng.sample(pool, min(self.params.fanout, len(pool)))
