"""Sybils against AffinityTopology (issue 7, item 5): fake IDs copying the victim's label histogram must not win
its source slots in proportion to their number. Undefended (``SHARE_IDENTICAL`` off) five copies take most
slots; defended, together they weigh like one such peer (docs/security.md, "Sybils")."""

from __future__ import annotations

import random

import pytest

from quinkgl.topology import PeerCandidate
from quinkgl_topo import affinity
from quinkgl_topo.affinity import AffinityTopology
from quinkgl_topo.params import AffinityTopologyParams

OWN = [40, 30, 20, 10, 0, 0, 0, 0]
HONEST = [[38 + i, 33 - i, 18, 11, 3, 1, 0, 0] for i in range(5)]  # similar, not equal (overlap ~0.95)


def sybil_share(fakes: int, rounds: int = 2000) -> float:
    candidates = [PeerCandidate("me", 1, {"label_histogram": OWN})]
    candidates += [PeerCandidate(f"honest-{i}", 1, {"label_histogram": h}) for i, h in enumerate(HONEST)]
    candidates += [PeerCandidate(f"fake-{i}", 1, {"label_histogram": list(OWN)}) for i in range(fakes)]
    topology = AffinityTopology(AffinityTopologyParams(fanout=1))
    rng = random.Random(0)
    picks = [topology.select("me", candidates, r, rng)[0] for r in range(rounds)]
    return sum(p.startswith("fake-") for p in picks) / rounds


@pytest.mark.parametrize("fakes", [5, 20])
def test_copies_of_the_victims_histogram_share_one_weight(fakes, monkeypatch):
    monkeypatch.setattr(affinity, "SHARE_IDENTICAL", False)
    undefended = sybil_share(fakes)
    monkeypatch.setattr(affinity, "SHARE_IDENTICAL", True)
    defended = sybil_share(fakes)
    one = sybil_share(1)  # what a single honest peer with exactly our distribution would get
    print(f"{fakes} copies: undefended {undefended:.3f}, defended {defended:.3f}, one copy {one:.3f}")
    assert undefended > 0.6  # the attack bites: most slots go to the copies
    # k copies weigh like one in the scored slots; exploration slots (10 %) stay uniform over identities
    assert defended <= one + AffinityTopologyParams().exploration
    assert defended < undefended - 0.2


def test_equal_honest_distributions_still_get_chosen():
    candidates = [PeerCandidate("me", 1, {"label_histogram": OWN})]
    candidates += [PeerCandidate(f"p{i}", 1, {"label_histogram": [1, 1, 1, 1, 1, 1, 1, 1]}) for i in range(4)]
    topology = AffinityTopology(AffinityTopologyParams(fanout=2))
    rng = random.Random(1)
    chosen = {p for r in range(200) for p in topology.select("me", candidates, r, rng)}
    assert chosen == {"p0", "p1", "p2", "p3"}
