"""Coordinatewise rules: each parameter is aggregated on its own across own + received models.

TrimmedMean drops the ``k`` largest and ``k`` smallest values of every coordinate and averages the rest, where
``k = floor(trim_ratio * n)`` when ``trim_ratio`` is set, else ``f`` (default: the manifest's ``byzantine_f``).
Median takes the coordinatewise median (the mean of the two middle values when n is even).

Fallbacks: TrimmedMean with ``n <= 2k`` has nothing left after trimming, and Median with ``n < 3`` has no
majority (the median of two values is their mean, which one Byzantine model moves at will); both then keep
the own model and report every received sender as excluded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from quinkgl.aggregation import AggregationResult, ModelUpdate
from quinkgl_agg_robust.params import MedianParams, TrimmedMeanParams, resolve_f
from quinkgl_agg_robust.stack import ModelStack

MEDIAN_MIN_MODELS = 3


SORT_BLOCK = 32768  # columns per block: (n + 1) × 32768 float32 values stay in the CPU caches


@functools.lru_cache(maxsize=64)
def sorting_network(n: int, outputs: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort for ``n`` wires, pruned to the comparators that reach ``outputs``.

    Built for the next power of two; a comparator that touches a wire ``>= n`` would compare with +inf and never
    swap, so it is dropped. Walking the network backwards keeps only comparators that feed a wanted output.
    """
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    needed, kept = set(outputs), []
    for a, b in reversed(pairs):
        if a in needed or b in needed:
            kept.append((a, b))
            needed.update((a, b))
    return tuple(reversed(kept))


def _sorted_rows(
    source: torch.Tensor | ModelStack,
    outputs: Sequence[int],
    reduce: Callable[[list[torch.Tensor], torch.Tensor], None],
) -> torch.Tensor:
    """Sort every column of ``matrix`` with a comparator network, block by block, and ``reduce`` each block.

    ``torch.sort`` along dim 0 sorts each short column on its own and is slow; a sorting network is elementwise
    ``minimum``/``maximum`` over whole rows, vectorised across the columns of a cache-sized block. A block buffer
    of (n + 1) rows is the only extra memory. ``reduce(rows, out)`` writes the block's result into ``out`` from
    the sorted rows (only the rows named in ``outputs`` are guaranteed to be in their sorted place). ``source`` is
    a matrix, or a :class:`ModelStack` whose blocks are copied straight from the models' tensors (no n × d copy).
    """
    if isinstance(source, ModelStack):
        n, d, dtype, device = len(source), source.columns, source.dtype, source.device
    else:
        (n, d), dtype, device = source.shape, source.dtype, source.device
    network = sorting_network(n, tuple(outputs))
    width = max(1, min(SORT_BLOCK, d, max(1024, d // 4)))
    out = torch.empty(d, dtype=dtype, device=device)
    buffer = torch.empty((n + 1, width), dtype=dtype, device=device)
    for start in range(0, d, width):
        columns = min(width, d - start)
        work = buffer[:, :columns]
        if isinstance(source, ModelStack):
            source.copy_columns(start, start + columns, work[:n])
        else:
            work[:n].copy_(source[:, start : start + columns])
        rows, spare = list(work[:n].unbind(0)), work[n]
        for a, b in network:
            low, high = rows[a], rows[b]
            torch.minimum(low, high, out=spare)
            torch.maximum(low, high, out=high)
            rows[a], spare = spare, low
        reduce(rows, out[start : start + columns])
    return out


def trimmed_mean(matrix: torch.Tensor | ModelStack, k: int) -> torch.Tensor:
    """The mean of each column after dropping its ``k`` largest and ``k`` smallest values (needs n > 2k)."""
    n = len(matrix)

    def mean_of_middle(rows: list[torch.Tensor], out: torch.Tensor) -> None:  # k = 0: the plain mean
        out.copy_(rows[k])
        for row in rows[k + 1 : n - k]:
            out.add_(row)
        out.div_(n - 2 * k)

    # Which rows hold the middle does not matter, only which values: with k = 0 no comparator is needed at all.
    return _sorted_rows(matrix, range(k, n - k) if k else (), mean_of_middle)


def coordinatewise_median(matrix: torch.Tensor | ModelStack) -> torch.Tensor:
    """The median of each column; for even n the mean of the two middle values (torch.median takes the lower)."""
    n = len(matrix)
    low, high = (n - 1) // 2, n // 2

    def middle(rows: list[torch.Tensor], out: torch.Tensor) -> None:
        if low == high:
            out.copy_(rows[low])
        else:
            torch.add(rows[low], rows[high], out=out).div_(2)

    return _sorted_rows(matrix, sorted({low, high}), middle)


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
        stack = ModelStack(own, received, lazy=True)
        stack.drop_non_finite()
        k = self.trim_count(len(stack))
        if len(stack) <= 2 * k:
            return stack.keep_own()
        return stack.result(trimmed_mean(stack, k), range(len(stack)))


class Median:
    """Coordinatewise median."""

    min_updates = MEDIAN_MIN_MODELS - 1

    def __init__(self, params: MedianParams | None = None, manifest: Any = None):
        self.params = params or MedianParams()

    def aggregate(self, own: ModelUpdate, received: Sequence[ModelUpdate]) -> AggregationResult:
        """The coordinatewise median of own + received (the own model with fewer than three models)."""
        stack = ModelStack(own, received, lazy=True)
        stack.drop_non_finite()
        if len(stack) < MEDIAN_MIN_MODELS:
            return stack.keep_own()
        return stack.result(coordinatewise_median(stack), range(len(stack)))
