"""Krum and MultiKrum (Blanchard et al., 2017): score each model by how close it sits to its neighbours.

A model's score is the sum of squared distances to its ``n - f - 2`` nearest other models, among own and
received. With at most ``f`` Byzantine models and ``n > 2f + 2`` in all, the best-scored model is surrounded
by honest ones. Krum keeps that one model; MultiKrum averages the ``m`` best (uniformly: sample counts are
self-reported, and a Byzantine peer could inflate its own).

Fallback: with ``n <= 2f + 2`` models the score cannot tell honest from Byzantine, so the own model is kept and
every received sender is reported as excluded. Ties go to the lower row, so the own model wins a tie.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from quinkgl.aggregation import AggregationResult, ModelUpdate
from quinkgl_agg_robust.params import KrumParams, MultiKrumParams, resolve_f
from quinkgl_agg_robust.stack import ModelStack


def krum_scores(distances: torch.Tensor, f: int) -> torch.Tensor:
    """Each row's sum of squared distances to its ``n - f - 2`` nearest other rows (needs ``n >= f + 3``)."""
    n = distances.shape[0]
    others = distances.clone().fill_diagonal_(float("inf"))
    nearest = torch.topk(others, n - f - 2, dim=1, largest=False).values
    return nearest.sum(dim=1)


def _ranked(stack: ModelStack, f: int) -> list[int] | None:
    """Rows from best to worst Krum score (stable, so own first among equals), or None if too few models."""
    if len(stack) <= 2 * f + 2:
        return None
    distances = stack.distances()  # may drop non-finite models
    if len(stack) <= 2 * f + 2:
        return None
    scores = krum_scores(distances, f)
    return torch.argsort(scores, stable=True).tolist()


class _KrumFamily:
    """What Krum and MultiKrum share: ``f`` from params or the manifest, and the 2f+2 models they need."""

    def __init__(self, params: Any, manifest: Any = None):
        self.params = params
        self.f = resolve_f(self.params.f, manifest)
        self.min_updates = 2 * self.f + 2


class Krum(_KrumFamily):
    """Keep the single model with the best Krum score."""

    def __init__(self, params: KrumParams | None = None, manifest: Any = None):
        super().__init__(params or KrumParams(), manifest)

    def aggregate(self, own: ModelUpdate, received: Sequence[ModelUpdate]) -> AggregationResult:
        """The best-scored model among own + received (the own model when too few arrived)."""
        stack = ModelStack(own, received, lazy=True)
        ranked = _ranked(stack, self.f)
        if ranked is None:
            return stack.update_result(0)
        return stack.update_result(ranked[0])


class MultiKrum(_KrumFamily):
    """Average the ``m`` models with the best Krum scores."""

    def __init__(self, params: MultiKrumParams | None = None, manifest: Any = None):
        super().__init__(params or MultiKrumParams(), manifest)

    def aggregate(self, own: ModelUpdate, received: Sequence[ModelUpdate]) -> AggregationResult:
        """The uniform mean of the ``m`` best-scored models (the own model when too few arrived)."""
        stack = ModelStack(own, received, lazy=True)
        ranked = _ranked(stack, self.f)
        if ranked is None:
            return stack.update_result(0)
        m = self.params.m if self.params.m is not None else len(stack) - self.f
        return stack.weighted_mean(ranked[: max(1, min(m, len(stack)))])
