"""AffinityTopology: push to the peers whose label distribution is closest to (or furthest from) our own.

Affinity between two label histograms is their overlap ``Σ_c min(p_c, q_c)`` after normalising each to sum 1
(1 = identical distributions, 0 = disjoint classes). In ``similar`` mode a peer's score is the overlap, in
``complementary`` mode ``1 - overlap``. Each of the ``fanout`` slots goes, with probability ``exploration``, to
a uniformly random remaining peer (so every peer stays reachable and the gossip graph connected), otherwise to
a scored peer drawn with probability ∝ ``exp(score / temperature)``. Sampling rather than always taking the
best matters: with a deterministic top-k, peers whose histograms are all alike (IID data) would all push to the
same few peers and some would never receive a model; with sampling, near-equal scores give near-uniform
choices while clearly better matches still win most slots (a 0.5 overlap difference is ×150 at 0.1).
Peers without a usable histogram are never scored: they get exploration slots, and the slots left once every
scored peer is taken.

Identities are free in an open swarm, and a histogram is a claim: ``k`` fake IDs announcing one histogram (say,
a copy of the victim's, to score 1 in ``similar`` mode) would weigh ``k`` times. Candidates announcing the same
label *distribution* therefore share one weight (each gets ``1/k`` of it): together they are drawn as often as
one such peer would be (docs/security.md, "Sybils"). Honest peers with exactly equal distributions are rare
and lose nothing but that share.

The own histogram is not part of the Topology call. It comes from ``set_own_metadata`` (the data policy's
metadata, which the runtime announces) or, if the runtime lists this peer among the candidates, from that
entry. Without it no peer can be scored and the selection is uniformly random, like RandomTopology.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from quinkgl.datapolicy import collaboration_mode, collaborators, label_distribution, overlap
from quinkgl.topology import PeerCandidate
from quinkgl_topo.params import AffinityTopologyParams

__all__ = ["AffinityTopology", "overlap"]

SHARE_IDENTICAL = True  # candidates with one label distribution share one weight (tests switch it off)


class AffinityTopology:
    """Prefer peers by label-histogram affinity, with random exploration."""

    def __init__(self, params: AffinityTopologyParams | None = None, manifest: Any = None):
        self.params = params or AffinityTopologyParams()
        self.own_distribution: list[float] | None = None
        self.collaboration = collaboration_mode(manifest)

    def set_own_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Tell the topology this peer's own announced metadata (its ``label_histogram``, if any)."""
        self.own_distribution = label_distribution(metadata.get("label_histogram"))

    def score(self, own: Sequence[float], metadata: Mapping[str, Any]) -> float | None:
        """A candidate's preference score given the own distribution (higher is better), or None if unscored."""
        theirs = label_distribution(metadata.get("label_histogram")) if isinstance(metadata, Mapping) else None
        if theirs is None:
            return None
        shared = overlap(own, theirs)
        return shared if self.params.mode == "similar" else 1.0 - shared

    def select(self, own_id: str, candidates: Sequence[PeerCandidate], round_idx: int, rng: random.Random) -> list[str]:
        """Pick up to ``fanout`` distinct peers (never ourselves), best affinity first, some at random."""
        own = self.own_distribution
        candidates = collaborators(own_id, candidates, self.collaboration)
        metadata: dict[str, Mapping[str, Any]] = {}
        for candidate in candidates:
            if candidate.peer_id == own_id:
                if own is None:
                    own = label_distribution(candidate.metadata.get("label_histogram"))
                continue
            metadata.setdefault(candidate.peer_id, candidate.metadata)
        remaining = sorted(metadata)  # sorted: the same candidates in any order give the same picks for one rng
        scores: dict[str, float] = {}
        share: dict[str, float] = {}  # 1 / how many candidates announce the same distribution
        if own is not None:
            groups: dict[tuple[float, ...], list[str]] = {}
            for peer_id in remaining:
                value = self.score(own, metadata[peer_id])
                if value is not None:
                    scores[peer_id] = value
                    dist = label_distribution(metadata[peer_id].get("label_histogram")) or []
                    groups.setdefault(tuple(round(x, 9) for x in dist), []).append(peer_id)
            for members in groups.values():
                for peer_id in members:
                    share[peer_id] = 1.0 / len(members) if SHARE_IDENTICAL else 1.0

        picks: list[str] = []
        while remaining and len(picks) < self.params.fanout:
            scored = [p for p in remaining if p in scores]
            if scored and rng.random() >= self.params.exploration:
                top = max(scores[p] for p in scored)  # shift by the max: exp() cannot overflow
                weights = [share[p] * math.exp((scores[p] - top) / self.params.temperature) for p in scored]
                choice = rng.choices(scored, weights=weights)[0]
            else:
                choice = rng.choice(remaining)
            picks.append(choice)
            remaining.remove(choice)
        return picks
