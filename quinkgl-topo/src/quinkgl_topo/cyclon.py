"""CyclonTopology: a Cyclon-style partial view with aging (Voulgaris et al., 2005), refreshed from the runtime.

The topology keeps a view of at most ``view_size`` peers, each with an age in rounds. Every round it:

1. drops view entries that are no longer among the candidates (gone, or no longer compatible), ages the rest
   by one and tops the view up with random candidates not in it (age 0);
2. targets the oldest entry (ties broken by the rng) plus ``fanout - 1`` random other entries;
3. shuffles: evicts the oldest entry and ``shuffle_length - 1`` random others, and refills the view with
   random candidates, preferring ones that were not just evicted.

In Cyclon proper the fresh entries come from the contacted neighbour's view; here the runtime's list of known
compatible peers plays that role, so no extra messages are needed. Contacting the oldest entry and evicting it
means no entry sits in the view forever, and random refills let every candidate in, so every peer is
eventually contacted. State lives on the instance; the runtime calls ``select`` once per round.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from quinkgl.datapolicy import collaboration_mode, collaborators
from quinkgl.topology import PeerCandidate
from quinkgl_topo.params import CyclonTopologyParams


class CyclonTopology:
    """Push to the oldest view entry plus random view entries; shuffle the view each round."""

    def __init__(self, params: CyclonTopologyParams | None = None, manifest: Any = None):
        self.params = params or CyclonTopologyParams()
        self.view: dict[str, int] = {}  # peer ID -> age in rounds
        self.collaboration = collaboration_mode(manifest)

    def _refill(self, pool: Sequence[str], rng: random.Random, avoid: Iterable[str] = ()) -> None:
        """Top the view up to ``view_size`` with random pool members, taking ``avoid`` ones only as a last resort."""
        avoid = set(avoid)
        for tier in ([p for p in pool if p not in self.view and p not in avoid], [p for p in pool if p in avoid]):
            room = self.params.view_size - len(self.view)
            if room <= 0:
                return
            for peer_id in rng.sample(tier, min(room, len(tier))):
                self.view[peer_id] = 0

    def select(self, own_id: str, candidates: Sequence[PeerCandidate], round_idx: int, rng: random.Random) -> list[str]:
        """Age the view, target its oldest entry plus random ones, then swap ``shuffle_length`` entries."""
        candidates = collaborators(own_id, candidates, self.collaboration)
        pool = sorted({c.peer_id for c in candidates if c.peer_id != own_id})
        known = set(pool)
        self.view = {peer_id: age + 1 for peer_id, age in sorted(self.view.items()) if peer_id in known}
        self._refill(pool, rng)
        if not self.view:
            return []

        entries = sorted(self.view)  # sorted: deterministic for one rng whatever the insertion order
        eldest_age = max(self.view.values())
        oldest = rng.choice([p for p in entries if self.view[p] == eldest_age])
        others = [p for p in entries if p != oldest]
        targets = [oldest, *rng.sample(others, min(self.params.fanout - 1, len(others)))]

        evicted = [oldest, *rng.sample(others, min(self.params.shuffle_length - 1, len(others)))]
        for peer_id in evicted:
            del self.view[peer_id]
        self._refill(pool, rng, avoid=evicted)
        return targets
