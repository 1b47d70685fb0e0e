"""FedAvg and RandomTopology, core's built-in components."""

from __future__ import annotations

import random

import torch

from quinkgl.aggregation import FedAvg, FedAvgParams, ModelUpdate
from quinkgl.topology import PeerCandidate, RandomTopology, RandomTopologyParams


def update(sender, value, samples, counter=0):
    return ModelUpdate(sender, 1, samples, {"w": torch.full((2, 2), float(value)), "n": torch.tensor(counter)})


def test_fedavg_weights_by_samples_and_keeps_integer_buffers():
    result = FedAvg().aggregate(update("me", 0.0, 100, counter=7), [update("a", 1.0, 300), update("b", 2.0, 100)])
    assert torch.allclose(result.tensors["w"], torch.full((2, 2), (0 * 100 + 1 * 300 + 2 * 100) / 500))
    assert int(result.tensors["n"]) == 7 and result.used == ("me", "a", "b")
    uniform = FedAvg(FedAvgParams(weighting="uniform")).aggregate(update("me", 0.0, 100), [update("a", 3.0, 900)])
    assert torch.allclose(uniform.tensors["w"], torch.full((2, 2), 1.5))


def test_random_topology_picks_fanout_distinct_peers_never_itself():
    topology = RandomTopology(RandomTopologyParams(fanout=3))
    candidates = [PeerCandidate(f"p{i}") for i in range(6)] + [PeerCandidate("me")]
    rng = random.Random(0)
    seen = set()
    for round_idx in range(50):
        chosen = topology.select("me", candidates, round_idx, rng)
        assert len(chosen) == len(set(chosen)) == 3 and "me" not in chosen
        seen.update(chosen)
    assert seen == {f"p{i}" for i in range(6)}
    assert topology.select("me", candidates[:2], 0, rng) and len(topology.select("me", candidates[:2], 0, rng)) == 2
