"""AffinityTopology and CyclonTopology: valid selections, affinity preference, Cyclon's view, registration."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter

import pytest

from quinkgl.datapolicy import label_distribution
from quinkgl.errors import ManifestError
from quinkgl.manifest.codec import structure_params
from quinkgl.plugins.manager import build_registry
from quinkgl.topology import PeerCandidate
from quinkgl_topo.affinity import AffinityTopology, overlap
from quinkgl_topo.cyclon import CyclonTopology
from quinkgl_topo.params import AffinityTopologyParams, CyclonTopologyParams

OWN = "me"
OWN_HISTOGRAM = [40, 30, 20, 10, 0, 0, 0, 0]
LIKE_US = [38, 33, 18, 11, 0, 1, 0, 0]
UNLIKE_US = [0, 0, 1, 0, 10, 20, 30, 40]


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def build(registry, name: str, **params):
    """Build a topology the way a peer does: through the registry, params from a manifest-like dict."""
    spec = registry.get("topology", name).spec
    return spec.factory(structure_params(params, spec.params, "$.topology.params"), None)


def swarm(n_like: int = 10, n_unlike: int = 10, n_silent: int = 0) -> list[PeerCandidate]:
    """Candidates: peers with label distributions like ours, unlike ours, without a histogram, and ourselves."""
    peers = [PeerCandidate(f"like{i:02d}", 3, {"label_histogram": LIKE_US}) for i in range(n_like)]
    peers += [PeerCandidate(f"unlike{i:02d}", 3, {"label_histogram": UNLIKE_US}) for i in range(n_unlike)]
    peers += [PeerCandidate(f"silent{i:02d}", 3, {}) for i in range(n_silent)]
    return [*peers, PeerCandidate(OWN, 3, {"label_histogram": OWN_HISTOGRAM})]


def affinity(mode: str = "similar", exploration: float = 0.1, fanout: int = 3) -> AffinityTopology:
    topology = AffinityTopology(AffinityTopologyParams(fanout=fanout, mode=mode, exploration=exploration))
    topology.set_own_metadata({"label_histogram": OWN_HISTOGRAM})
    return topology


def picks(topology, candidates, rounds: int = 300, seed: int = 0) -> Counter:
    rng = random.Random(seed)
    counts: Counter = Counter()
    for round_idx in range(rounds):
        counts.update(peer.rstrip("0123456789") for peer in topology.select(OWN, candidates, round_idx, rng))
    return counts


# -- what every topology promises -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["AffinityTopology", "CyclonTopology"])
@pytest.mark.parametrize("fanout", [1, 3, 50])
def test_selection_is_distinct_candidates_never_self_and_within_fanout(registry, name, fanout):
    topology = build(registry, name, fanout=fanout)
    rng = random.Random(7)
    candidates = swarm(n_silent=4)
    ids = {c.peer_id for c in candidates} - {OWN}
    for round_idx in range(100):
        chosen = topology.select(OWN, candidates, round_idx, rng)
        assert set(chosen) <= ids and OWN not in chosen
        assert len(chosen) == len(set(chosen)) and 1 <= len(chosen) <= fanout


@pytest.mark.parametrize("name", ["AffinityTopology", "CyclonTopology"])
def test_no_candidates_or_only_ourselves_selects_nobody(registry, name):
    topology = build(registry, name)
    rng = random.Random(0)
    assert topology.select(OWN, [], 1, rng) == []
    assert topology.select(OWN, [PeerCandidate(OWN)], 2, rng) == []


@pytest.mark.parametrize("name", ["AffinityTopology", "CyclonTopology"])
def test_the_same_rng_gives_the_same_choices_whatever_the_candidate_order(registry, name):
    candidates = swarm(n_silent=3)
    shuffled = list(candidates)
    random.Random(3).shuffle(shuffled)
    runs = []
    for order in (candidates, candidates, shuffled):
        topology, rng = build(registry, name, fanout=2), random.Random(11)
        runs.append([topology.select(OWN, order, r, rng) for r in range(50)])
    assert runs[0] == runs[1] == runs[2]


# -- AffinityTopology -----------------------------------------------------------------------------------------


def test_similar_mode_prefers_peers_with_similar_histograms():
    counts = picks(affinity("similar"), swarm())
    assert counts["like"] > 0.85 * (counts["like"] + counts["unlike"])
    assert counts["unlike"] > 0  # exploration still reaches the rest of the swarm


def test_complementary_mode_prefers_peers_with_different_histograms():
    counts = picks(affinity("complementary"), swarm())
    assert counts["unlike"] > 0.85 * (counts["like"] + counts["unlike"])
    assert counts["like"] > 0


def test_without_affinity_the_choice_is_about_even():
    others = [c for c in swarm() if c.peer_id != OWN]
    # all exploration; and no own histogram anywhere (neither set nor in our candidate entry)
    for topology, candidates in ((affinity(exploration=1.0), swarm()), (AffinityTopology(), others)):
        counts = picks(topology, candidates)
        assert 0.4 < counts["like"] / (counts["like"] + counts["unlike"]) < 0.6


def test_zero_exploration_always_takes_the_best_scored_peers():
    ranked = swarm(n_like=2, n_unlike=5)
    for round_idx in range(20):
        chosen = affinity(exploration=0.0).select(OWN, ranked, round_idx, random.Random(round_idx))
        assert sorted(chosen)[:2] == ["like00", "like01"] and chosen[0].startswith("like")


def test_peers_without_histograms_are_picked_at_random_once_scored_peers_run_out():
    candidates = swarm(n_like=1, n_unlike=0, n_silent=6)
    counts = picks(affinity(exploration=0.0, fanout=3), candidates, rounds=200)
    assert counts["like"] == 200 and counts["silent"] == 400
    per_peer = Counter()
    rng = random.Random(1)
    for r in range(300):
        per_peer.update(affinity(exploration=0.0).select(OWN, candidates, r, rng))
    assert all(per_peer[f"silent{i:02d}"] > 40 for i in range(6))


def test_own_histogram_may_come_from_our_own_candidate_entry():
    topology = AffinityTopology(AffinityTopologyParams(exploration=0.0, fanout=1))
    chosen = topology.select(OWN, swarm(n_like=1, n_unlike=9), 0, random.Random(0))
    assert chosen == ["like00"]


def test_histograms_are_normalised_before_comparison():
    assert label_distribution([2, 2, 0]) == [0.5, 0.5, 0.0]
    assert label_distribution([0, 0]) is None and label_distribution("x") is None
    assert label_distribution([1, -1]) is None and label_distribution([True, 1]) is None
    assert label_distribution([10**400, 1]) is None  # JSON ints are unbounded: too big for a float is unusable
    assert overlap([0.5, 0.5], [0.5, 0.5, 0.0]) == 1.0 and overlap([1.0, 0.0], [0.0, 1.0]) == 0.0


# -- CyclonTopology -------------------------------------------------------------------------------------------


def test_cyclon_view_stays_bounded_and_ages_stay_below_the_view_size():
    topology = CyclonTopology(CyclonTopologyParams(view_size=5, fanout=2, shuffle_length=2))
    rng = random.Random(5)
    candidates = swarm(n_like=15, n_unlike=15)
    for round_idx in range(200):
        topology.select(OWN, candidates, round_idx, rng)
        assert len(topology.view) == 5 and OWN not in topology.view
        assert max(topology.view.values()) < 5  # the oldest entry is contacted and evicted every round


def test_cyclon_eventually_contacts_every_candidate_and_targets_its_oldest_entry():
    topology = CyclonTopology(CyclonTopologyParams(view_size=4, fanout=1, shuffle_length=1))
    rng = random.Random(9)
    candidates = swarm(n_like=15, n_unlike=15)
    contacted: set[str] = set()
    for round_idx in range(300):
        before = dict(topology.view)
        (target,) = topology.select(OWN, candidates, round_idx, rng)
        if before:
            assert before[target] == max(before.values())  # the view aged uniformly: the oldest stays the oldest
        contacted.add(target)
    assert contacted == {c.peer_id for c in candidates} - {OWN}


def test_cyclon_refreshes_its_view_from_the_candidates_it_is_given():
    topology = CyclonTopology(CyclonTopologyParams(view_size=6, fanout=3))
    rng = random.Random(2)
    topology.select(OWN, swarm(n_like=6, n_unlike=0), 0, rng)
    assert set(topology.view) == {f"like{i:02d}" for i in range(6)}
    newcomers = swarm(n_like=2, n_unlike=4)  # four of the old peers are gone, four new ones appeared
    chosen = topology.select(OWN, newcomers, 1, rng)
    assert set(chosen) | set(topology.view) <= {c.peer_id for c in newcomers}
    assert len(topology.view) == 6


# -- registration and params ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["AffinityTopology", "CyclonTopology"])
def test_topologies_are_registered_by_quinkgl_topo(registry, name):
    component = registry.get("topology", name.lower())
    assert component.name == name and component.provider.distribution == "quinkgl-topo"


def test_topology_params_accept_decimal_strings_and_reject_unknown_keys_and_modes(registry):
    spec = registry.get("topology", "AffinityTopology").spec
    params = structure_params({"exploration": "0.25", "mode": "complementary"}, spec.params, "$.topology.params")
    assert params == AffinityTopologyParams(exploration=0.25, mode="complementary")
    bad_params = (({"fanouts": 2}, "fanouts"), ({"mode": "opposite"}, "mode"), ({"exploration": "1.5"}, "exploration"))
    for bad, word in bad_params:
        with pytest.raises(ManifestError, match=word):
            structure_params(bad, spec.params, "$.topology.params")
    cyclon = registry.get("topology", "CyclonTopology").spec
    with pytest.raises(ManifestError, match="view_size"):
        structure_params({"view_size": 0}, cyclon.params, "$.topology.params")


def test_importing_the_plugin_loads_neither_torch_nor_numpy():
    code = (
        "import sys, json\n"
        "import quinkgl_topo.plugin as plugin\n"
        "names = [spec.name for spec in plugin.quinkgl_register_topologies()]\n"
        "print(json.dumps({'names': names, 'heavy': sorted(m for m in ('torch', 'numpy') if m in sys.modules)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == {"names": ["AffinityTopology", "CyclonTopology"], "heavy": []}


def test_affinity_with_alike_histograms_spreads_pushes_over_every_peer():
    # IID peers announce near-identical histograms: a deterministic top-k would starve some peers of updates.
    import random as _random

    from quinkgl.topology import PeerCandidate as _Candidate

    # Four near-identical peers and one whose (noised) histogram is a little further off: top-k would leave the
    # odd one to exploration slots only.
    histograms = {f"p{i}": [600 + i, 600, 600 - i, 600] for i in range(4)}
    histograms["odd"] = [690, 600, 510, 600]
    received = dict.fromkeys(histograms, 0)
    for own in histograms:
        topology = AffinityTopology()
        rng = _random.Random(own)
        for round_idx in range(10):
            candidates = [_Candidate(p, round_idx, {"label_histogram": h}) for p, h in histograms.items()]
            for target in topology.select(own, candidates, round_idx, rng):
                received[target] += 1
    # 4 other peers x 10 rounds choose 3 of 4 targets: uniform would give the odd peer 30 pushes
    assert received["odd"] >= 20, received


# -- collaboration_mode ----------------------------------------------------------------------------------------


class _Manifest:
    """Just the part of a manifest a topology reads: its data policy's params."""

    def __init__(self, mode: str):
        self.data_policy = type("Component", (), {"name": "default", "params": {"collaboration_mode": mode}})()


@pytest.mark.parametrize("name", ["RandomTopology", "AffinityTopology", "CyclonTopology"])
def test_similar_collaboration_mode_never_picks_dissimilar_or_unknown_peers(registry, name):
    spec = registry.get("topology", name).spec
    candidates = swarm(n_like=4, n_unlike=10, n_silent=5)
    chosen: Counter = Counter()
    for mode in ("open", "similar"):
        topology = spec.factory(structure_params({"fanout": 3}, spec.params, "$.topology.params"), _Manifest(mode))
        rng = random.Random(1)
        for round_idx in range(100):
            chosen.update(f"{mode}:{p.rstrip('0123456789')}" for p in topology.select(OWN, candidates, round_idx, rng))
    assert chosen["open:unlike"] > 0 or chosen["open:silent"] > 0  # without the mode, others do get picked
    assert chosen["similar:like"] > 0
    assert chosen["similar:unlike"] == 0 and chosen["similar:silent"] == 0
