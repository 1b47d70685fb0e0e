"""The aggregation contract and core's built-in rule, FedAvg.

An aggregator combines the peer's own model with the updates it received this round. It runs in a worker
thread (torch releases the GIL), so it may take a few milliseconds without stalling the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    import torch


@attrs.frozen
class ModelUpdate:
    """One peer's model for a round: who sent it, how many samples it trained on, its tensors and metadata."""

    sender: str
    round: int
    num_samples: int
    tensors: Mapping[str, torch.Tensor]
    metadata: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class AggregationResult:
    """The aggregated tensors and which senders contributed (``own`` included) or were left out."""

    tensors: dict[str, torch.Tensor]
    used: tuple[str, ...]
    excluded: tuple[str, ...] = ()


class Aggregator(Protocol):
    """Combines the own model with received updates."""

    min_updates: int  # how many received updates the rule wants before aggregating (0 = any)

    def aggregate(self, own: ModelUpdate, received: Sequence[ModelUpdate]) -> AggregationResult:
        """Return the new model; ``received`` is never empty when called by the runtime."""


WEIGHT_CAP = 3.0
"""A sender's weight is capped at this many times the lower median of the round's weights (see bounded_weights)."""


def bounded_weights(weights: Sequence[float], cap: float = WEIGHT_CAP) -> list[float]:
    """Clamp claimed weights so that no single sender can take over a weighted mean.

    Negative, NaN or zero weights count as 0. Every weight is then capped at ``cap`` × the lower median ``m`` of
    the round's weights (own included). At least ``floor(n / 2) + 1`` of the ``n`` weights are ``>= m``, so one
    sender's share of the mean is at most ``cap / (cap + floor(n / 2))`` whatever it claims: 3/4 with n = 2, 3/5
    with n = 4 or 5, 3/8 with n = 10 (and ``1/n`` when the others claim as much). All-zero weights after the
    cap mean uniform weights.
    """
    clean = [float(w) if w > 0 else 0.0 for w in weights]  # NaN > 0 is False
    if not clean:
        return clean
    limit = cap * sorted(clean)[(len(clean) - 1) // 2]
    bounded = [min(w, limit) for w in clean]
    if not sum(bounded) > 0:
        return [1.0] * len(clean)
    return bounded


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a sum of models is accumulated in: float64 for float64 models, float32 otherwise."""
    import torch

    return torch.float64 if dtype == torch.float64 else torch.float32


def weighted_mean(
    updates: Sequence[ModelUpdate], weights: Sequence[float], like: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The weighted mean of ``updates`` (weights normalised here; all-zero weights mean uniform).

    Shaped, typed and placed like ``like`` (default: the first update, i.e. the own model): each floating tensor
    is accumulated in place, one model at a time, in float32 (float64 for float64 models) on that tensor's
    device, so received CPU tensors meet a CUDA model without an n-fold stack. Integer buffers (e.g. BatchNorm's
    ``num_batches_tracked``; averaging a counter is meaningless) are copied from ``like``. The weights are used as
    given: callers that take claimed weights from the network pass them through :func:`bounded_weights`.
    """
    import torch

    reference = like if like is not None else updates[0].tensors
    values = [float(w) if w > 0 else 0.0 for w in weights]
    total = sum(values)
    if not total > 0 or total == float("inf"):
        values, total = [1.0] * len(updates), float(len(updates))
    shares = [w / total for w in values]
    result: dict[str, torch.Tensor] = {}
    for name, first in reference.items():
        if not first.is_floating_point():
            result[name] = first.clone()
            continue
        acc = torch.zeros(first.shape, dtype=accumulation_dtype(first.dtype), device=first.device)
        for update, share in zip(updates, shares, strict=False):
            if share:
                acc.add_(update.tensors[name].detach().to(first.device), alpha=share)
        result[name] = acc.to(first.dtype)
    return result


def weighted_average(updates: Sequence[ModelUpdate], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Deprecated name of :func:`weighted_mean` (kept for plugins written against 0.3)."""
    return weighted_mean(updates, weights)


@attrs.frozen
class FedAvgParams:
    """FedAvg takes no tuning; ``weighting`` chooses sample-count (default) or uniform weights."""

    weighting: str = attrs.field(default="samples", validator=attrs.validators.in_(("samples", "uniform")))


class FedAvg:
    """Federated averaging: the sample-weighted mean of the own model and every received update.

    Sample counts are claimed by the senders, so they pass through :func:`bounded_weights`: one sender's weight is
    at most ``WEIGHT_CAP`` × the round's lower median count.
    """

    min_updates = 0

    def __init__(self, params: FedAvgParams | None = None, manifest: Any = None):
        self.params = params or FedAvgParams()

    def aggregate(self, own: ModelUpdate, received: Sequence[ModelUpdate]) -> AggregationResult:
        """Average own + received, weighted by sample count (or uniformly)."""
        updates = [own, *received]
        if self.params.weighting == "uniform":
            weights = [1.0] * len(updates)
        else:
            weights = bounded_weights([float(max(u.num_samples, 0)) for u in updates])
        return AggregationResult(weighted_mean(updates, weights), tuple(u.sender for u in updates))
