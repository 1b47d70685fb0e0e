"""Coordinatewise rules: each parameter is aggregated on its own across own + received models.

TrimmedMean drops the ``k`` largest and ``k`` smallest values of every coordinate and averages the rest, where
``k = floor(trim_ratio * n)`` when ``trim_ratio`` is set, else ``f`` (default: the manifest's ``byzantine_f``).
Median takes the coordinatewise median (the mean of the two middle values when n is even).

Fallbacks: TrimmedMean with ``n <= 2k`` has nothing left after trimming, and Median with ``n < 3`` has no
majority (the median of two values is their mean, which one Byzantine model moves at will); both then keep
the own model and report every received sender as excluded.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from quinkgl.aggregation import AggregationResult, ModelUpdate

from quinkgl_agg_robust.distances import column_block
from quinkgl_agg_robust.params import MedianParams, TrimmedMeanParams, resolve_f
from quinkgl_agg_robust.stack import ModelStack

MEDIAN_MIN_MODELS = 3


def _by_blocks(matrix: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply a columnwise ``reduce`` of sorted columns block by block (a sort holds values and int64 indices, so
    sorting the whole matrix at once would cost three more n × d copies)."""
    n, d = matrix.shape
    width = column_block(n, d)
    out = torch.empty(d, dtype=matrix.dtype, device=matrix.device)
    for start in range(0, d, width):
        ordered = torch.sort(matrix[:, start : start + width], dim=0).values
        out[start : start + width] = reduce(ordered)
    return out


def trimmed_mean(matrix: torch.Tensor, k: int) -> torch.Tensor:
    """The mean of each column after dropping its ``k`` largest and ``k`` smallest values (needs n > 2k)."""
    n = matrix.shape[0]
    if k == 0:
        return matrix.mean(dim=0)
    return _by_blocks(matrix, lambda ordered: ordered[k : n - k].mean(dim=0))


def coordinatewise_median(matrix: torch.Tensor) -> torch.Tensor:
    """The median of each column; for even n the mean of the two middle values (torch.median takes the lower)."""
    n = matrix.shape[0]
    if n % 2:
        return matrix.median(dim=0).values
    return _by_blocks(matrix, lambda ordered: (ordered[(n - 1) // 2] + ordered[n // 2]) / 2)


class TrimmedMean:
    """Coordinatewise trimmed mean."""

    def __init__(self, params: TrimmedMeanParams | None = None, manifest: Any = None):
        self.params = params or TrimmedMeanParams()
        self.f = resolve_f(self.params.f, manifest)
        # With a ratio the trim depends on n; 2 received models is the least that lets a ratio trim anything.
        self.min_updates = 2 * self.f if self.params.trim_ratio is None else 2

    def trim_count(self, n: int) -> int:
        """How many values to drop from each end of a coordinate when ``n`` models are present."""
        if self.params.trim_ratio is not None:
            return math.floor(self.params.trim_ratio * n)
        return self.f

    def aggregate(self, own: ModelUpdate, received: Sequence[ModelUpdate]) -> AggregationResult:
        """The trimmed mean of own + received (the own model when trimming would leave nothing)."""
        stack = ModelStack(own, received)
        k = self.trim_count(len(stack))
        if len(stack) <= 2 * k:
            return stack.keep_own()
        return stack.result(trimmed_mean(stack.matrix, k), range(len(stack)))


class Median:
    """Coordinatewise median."""

    min_updates = MEDIAN_MIN_MODELS - 1

    def __init__(self, params: MedianParams | None = None, manifest: Any = None):
        self.params = params or MedianParams()

    def aggregate(self, own: ModelUpdate, received: Sequence[ModelUpdate]) -> AggregationResult:
        """The coordinatewise median of own + received (the own model with fewer than three models)."""
        stack = ModelStack(own, received)
        if len(stack) < MEDIAN_MIN_MODELS:
            return stack.keep_own()
        return stack.result(coordinatewise_median(stack.matrix), range(len(stack)))
