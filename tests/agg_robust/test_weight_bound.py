"""EntropyWeightedAvg under lying headers: a huge sample count or a fake histogram gets a bounded share."""

from __future__ import annotations

import pytest
import torch

from quinkgl.aggregation import WEIGHT_CAP, ModelUpdate
from quinkgl_agg_robust.entropy import EntropyWeightedAvg


def update(sender: str, value: float, samples: int, histogram: list[int]) -> ModelUpdate:
    return ModelUpdate(sender, 1, samples, {"w": torch.full((4,), value)}, {"label_histogram": histogram})


def skewed(i: int) -> list[int]:
    counts = [5] * 10
    counts[i % 10] = 600
    return counts


def test_2_pow_53_samples_with_a_zero_model_gets_a_bounded_share():
    honest = [update(f"h{i}", 1.0, 600, skewed(i)) for i in range(5)]
    result = EntropyWeightedAvg().aggregate(honest[0], [*honest[1:], update("liar", 0.0, 2**53, skewed(7))])
    share = 1.0 - float(result.tensors["w"][0])  # the liar pulls towards 0 by exactly its share
    assert share == pytest.approx(3 / 8, rel=1e-5)  # 6 models, lower median weight: 3 x w against 5 x w


@pytest.mark.parametrize("n", [2, 4, 10])
def test_a_fake_balanced_histogram_share_is_bounded(n):
    honest = [update(f"h{i}", 1.0, 600, skewed(i)) for i in range(n - 1)]
    liar = update("liar", 0.0, 600, [60] * 10)  # claims a perfectly balanced histogram
    rule = EntropyWeightedAvg()
    result = rule.aggregate(honest[0], [*honest[1:], liar])
    share = 1.0 - float(result.tensors["w"][0])
    assert share <= WEIGHT_CAP / (WEIGHT_CAP + n // 2) + 1e-6
    assert share <= 3 / (3 + n - 1) + 1e-6  # here every honest weight equals the lower median
