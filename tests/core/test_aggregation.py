"""FedAvg and RandomTopology, core's built-in components."""

from __future__ import annotations

import random

import torch

from quinkgl.aggregation import WEIGHT_CAP, FedAvg, FedAvgParams, ModelUpdate, bounded_weights, weighted_mean
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


# -- the weight bound ---------------------------------------------------------------------------------------------


def test_a_claimed_2_pow_53_samples_with_a_zero_model_does_not_take_over_fedavg():
    own, honest = update("me", 1.0, 600), [update(f"h{i}", 1.0, 600) for i in range(3)]
    result = FedAvg().aggregate(own, [*honest, update("liar", 0.0, 2**53)])
    # 5 models, lower median 600: the liar weighs 3 x 600 against 4 x 600, i.e. 3/7 of the mean at most
    assert torch.allclose(result.tensors["w"], torch.full((2, 2), 4 / 7))
    unbounded = (4 * 600) / (4 * 600 + 2**53)
    assert float(result.tensors["w"][0, 0]) > 100 * unbounded


def test_bounded_weights_cap_every_share_at_the_documented_bound():
    for n in range(2, 21):
        for liar in (0.0, 1.0, 2.0**53, float("inf"), float("nan"), -5.0):
            weights = bounded_weights([liar] + [100.0] * (n - 1))
            share = weights[0] / sum(weights)
            assert share <= WEIGHT_CAP / (WEIGHT_CAP + n // 2) + 1e-12
    assert bounded_weights([0.0, 0.0]) == [1.0, 1.0]
    assert bounded_weights([100.0, 300.0, 100.0]) == [100.0, 300.0, 100.0]


def test_weighted_mean_accumulates_on_the_own_models_device_and_dtype():
    own = ModelUpdate("me", 1, 1, {"w": torch.zeros(3, dtype=torch.float16), "n": torch.tensor(2)})
    other = ModelUpdate("a", 1, 1, {"w": torch.full((3,), 2.0, dtype=torch.float64), "n": torch.tensor(9)})
    result = weighted_mean([own, other], [1.0, 1.0])
    assert result["w"].dtype == torch.float16 and result["w"].device == own.tensors["w"].device
    assert torch.equal(result["w"], torch.ones(3, dtype=torch.float16)) and int(result["n"]) == 2
