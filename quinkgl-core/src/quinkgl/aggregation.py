"""The aggregation contract and core's built-in rule, FedAvg.

An aggregator combines the peer's own model with the updates it received this round. It runs in a worker
thread (torch releases the GIL), so it may take a few milliseconds without stalling the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

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


def weighted_average(updates: Sequence[ModelUpdate], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Average floating tensors with ``weights`` (normalised here); integer buffers are taken from the first.

    The result lives on the first update's device (the own model's); the others are moved there."""
    import torch

    total = float(sum(weights))
    if total <= 0:
        weights, total = [1.0] * len(updates), float(len(updates))
    result: dict[str, torch.Tensor] = {}
    for name, first in updates[0].tensors.items():
        if not first.is_floating_point():
            result[name] = first.clone()  # e.g. BatchNorm's num_batches_tracked: averaging a counter is meaningless
            continue
        # Received updates arrive decoded on the CPU; the own model (first) may live on a GPU: compute there.
        stacked = torch.stack([u.tensors[name].to(first.device, torch.float64) for u in updates])
        scale = torch.tensor([w / total for w in weights], dtype=torch.float64, device=first.device)
        scale = scale.view(-1, *([1] * first.dim()))
        result[name] = (stacked * scale).sum(dim=0).to(first.dtype)
    return result


@attrs.frozen
class FedAvgParams:
    """FedAvg takes no tuning; ``weighting`` chooses sample-count (default) or uniform weights."""

    weighting: str = attrs.field(default="samples", validator=attrs.validators.in_(("samples", "uniform")))


class FedAvg:
    """Federated averaging: the sample-weighted mean of the own model and every received update."""

    min_updates = 0

    def __init__(self, params: FedAvgParams | None = None, manifest: Any = None):
        self.params = params or FedAvgParams()

    def aggregate(self, own: ModelUpdate, received: Sequence[ModelUpdate]) -> AggregationResult:
        """Average own + received, weighted by sample count (or uniformly)."""
        updates = [own, *received]
        if self.params.weighting == "uniform":
            weights = [1.0] * len(updates)
        else:
            weights = [float(max(u.num_samples, 0)) for u in updates]
        return AggregationResult(weighted_average(updates, weights), tuple(u.sender for u in updates))
