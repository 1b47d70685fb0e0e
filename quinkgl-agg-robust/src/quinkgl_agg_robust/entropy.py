"""EntropyWeightedAvg: a FedAvg that trusts peers with balanced label distributions more.

Each model's weight is ``num_samples × (floor + (1 - floor) × H(p) / ln C)``, where ``p`` is its
``metadata["label_histogram"]`` normalised to sum 1, ``H(p) = -Σ p_c ln p_c`` its Shannon entropy (0 ln 0 = 0)
and ``C`` the number of classes, so ``H / ln C`` runs from 0 (one class) to 1 (uniform). A model trained on one
class drags the average towards that class; a balanced one does not. ``floor`` keeps single-class peers in with
a small weight rather than none.

A model without a usable histogram (missing, not a list of non-negative numbers, all zeros, or fewer than two
classes) is weighted by its sample count alone, as FedAvg would. This rule is for non-IID data, not for
Byzantine peers, but the counts and histograms are claims: the final weights pass through core's
:func:`quinkgl.aggregation.bounded_weights`, so one sender's weight is at most 3× the round's lower median weight
whatever it claims (a share of at most 3 / (3 + floor(n / 2)) of the n models' mean).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from quinkgl.aggregation import AggregationResult, ModelUpdate, bounded_weights
from quinkgl.datapolicy import label_distribution
from quinkgl_agg_robust.params import EntropyWeightedAvgParams
from quinkgl_agg_robust.stack import ModelStack

MAX_SAMPLES = 2**63


def normalised_entropy(histogram: Any) -> float | None:
    """``H(p) / ln C`` of a label histogram in [0, 1], or None when it is not a usable histogram."""
    p = label_distribution(histogram)
    if p is None or len(p) < 2:
        return None
    entropy = -sum(share * math.log(share) for share in p if share > 0)
    return min(1.0, max(0.0, entropy / math.log(len(p))))


def entropy_weight(num_samples: int, metadata: Mapping[str, Any], floor: float) -> float:
    """The weight of one model: sample count × floored normalised entropy (sample count alone without one)."""
    # The wire format allows any non-negative int; float() of one beyond 1e308 would raise, so cap it first.
    samples = float(min(max(num_samples, 0), MAX_SAMPLES))
    balance = normalised_entropy(metadata.get("label_histogram")) if isinstance(metadata, Mapping) else None
    if balance is None:
        return samples
    return samples * (floor + (1.0 - floor) * balance)


class EntropyWeightedAvg:
    """Sample- and label-balance-weighted average of own + received."""

    min_updates = 0

    def __init__(self, params: EntropyWeightedAvgParams | None = None, manifest: Any = None):
        self.params = params or EntropyWeightedAvgParams()

    def weights(self, updates: Sequence[ModelUpdate]) -> list[float]:
        """The weight of each update, in order, after the weight bound."""
        return bounded_weights([entropy_weight(u.num_samples, u.metadata, self.params.floor) for u in updates])

    def aggregate(self, own: ModelUpdate, received: Sequence[ModelUpdate]) -> AggregationResult:
        """Average own + received with entropy weights (uniform if every weight is zero)."""
        stack = ModelStack(own, received)
        return stack.weighted_mean(range(len(stack)), self.weights(stack.updates))
