"""CenteredClipping (Karimireddy et al., 2021), anchored on the own model for small gossip fan-in.

Start from the own model ``v`` and repeat ``iterations`` times: ``v += mean_i clip(x_i - v, tau)`` over own +
received, where ``clip(z, tau) = z × min(1, tau / |z|)`` (L2 norm of the whole flattened model). However far a
Byzantine model lies, it moves ``v`` by at most ``tau / n`` per iteration.

``tau`` unset means adaptive: the median distance of the models from the own model, the own model's zero
included (the lower median for even n). That tolerates up to ``(n - 1) // 2`` outliers; with a single received
model it is 0: one neighbour alone cannot be told apart from an attacker. With a radius of 0 nothing can move
the own model, so it is kept and the received senders are reported as excluded; otherwise every model that
passed the finite/shape check is reported as used, since each contributes its clipped difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from quinkgl.aggregation import AggregationResult, ModelUpdate
from quinkgl_agg_robust.params import CenteredClippingParams
from quinkgl_agg_robust.stack import ModelStack


def adaptive_radius(matrix: torch.Tensor) -> float:
    """The (lower) median L2 distance of the rows from row 0, row 0's own zero included."""
    return float(torch.linalg.vector_norm(matrix - matrix[:1], dim=1).median())


def centered_clip(matrix: torch.Tensor, tau: float, iterations: int) -> torch.Tensor:
    """Centred clipping of the rows of ``matrix`` with radius ``tau``, starting from row 0."""
    v = matrix[0].clone()
    for _ in range(iterations):
        diffs = matrix - v
        norms = torch.linalg.vector_norm(diffs, dim=1, keepdim=True)
        # where() keeps tau / norms only where norms > tau >= 0, so a zero difference never divides by zero.
        scale = torch.where(norms > tau, tau / norms, torch.ones_like(norms))
        v = v + (diffs * scale).mean(dim=0)
    return v


class CenteredClipping:
    """Self-anchored centred clipping."""

    def __init__(self, params: CenteredClippingParams | None = None, manifest: Any = None):
        self.params = params or CenteredClippingParams()
        # The adaptive radius is zero with one received model, so such a round would change nothing.
        self.min_updates = 2 if self.params.tau is None else 1

    def aggregate(self, own: ModelUpdate, received: Sequence[ModelUpdate]) -> AggregationResult:
        """Clip every model's pull on the own model to ``tau`` and move by the mean pull, a few times."""
        stack = ModelStack(own, received)
        tau = self.params.tau if self.params.tau is not None else adaptive_radius(stack.matrix)
        if tau == 0 or len(stack) == 1:
            return stack.keep_own()
        row = centered_clip(stack.matrix, tau, self.params.iterations)
        return stack.result(row, range(len(stack)))
