"""Parity with an independent implementation: PyPI ``byzfl`` (test extra only, an oracle) on the same inputs.

Where the definitions differ the tests pin both (see quinkgl-agg-robust/README.md, "Definitions"):
- Krum's score: ByzFL sums the distances to the ``n - f - 1`` nearest other models, the paper (and we) to the
  ``n - f - 2`` nearest; so our ``f`` selects what ByzFL's ``f + 1`` selects, and ByzFL's ``f`` is our ``f - 1``.
- MultiKrum: ByzFL averages the ``n - f`` best of its scores; ours averages ``m`` (default ``n - f``) of ours.
- Median of an even count: both take the mean of the two middle values (torch.median would take the lower).
"""

from __future__ import annotations

import pytest
import torch

from quinkgl.aggregation import ModelUpdate
from quinkgl_agg_robust.coordinatewise import Median, TrimmedMean, coordinatewise_median, trimmed_mean
from quinkgl_agg_robust.distances import pairwise_sq_distances
from quinkgl_agg_robust.krum import Krum, MultiKrum, krum_scores
from quinkgl_agg_robust.params import KrumParams, MultiKrumParams, TrimmedMeanParams

byzfl = pytest.importorskip("byzfl")

CASES = [(n, f, seed) for n, f in ((5, 1), (7, 2), (8, 1), (11, 3), (12, 4), (20, 5)) for seed in range(3)]


def matrix(n: int, seed: int, dtype=torch.float64, d: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    honest = torch.randn(d, generator=gen) + 0.1 * torch.randn(n, d, generator=gen)
    honest[-2:] = 5 * torch.randn(2, d, generator=gen)  # two outliers
    return honest.to(dtype)


def updates(rows: torch.Tensor) -> tuple[ModelUpdate, list[ModelUpdate]]:
    models = [ModelUpdate(f"p{i}", 1, 10, {"w": row.reshape(8, -1).clone()}) for i, row in enumerate(rows)]
    return models[0], models[1:]


def oracle(rule, rows: torch.Tensor) -> torch.Tensor:
    """ByzFL on numpy float64 (its torch path converts everything to float32)."""
    return torch.as_tensor(rule(rows.numpy()))


def row_of(rows: torch.Tensor, vector: torch.Tensor) -> int:
    matches = [i for i in range(len(rows)) if torch.allclose(rows[i], vector, rtol=0, atol=1e-12)]
    assert len(matches) == 1
    return matches[0]


@pytest.mark.parametrize("n,f,seed", CASES)
def test_krum_selects_what_byzfl_selects_with_one_more_neighbour_excluded(n, f, seed):
    rows = matrix(n, seed)
    ours = int(torch.argmin(krum_scores(pairwise_sq_distances(rows), f)))
    assert ours == row_of(rows, oracle(byzfl.Krum(f=f + 1), rows))  # our n-f-2 neighbours == ByzFL's n-(f+1)-1
    result = Krum(KrumParams(f=f)).aggregate(*updates(rows))
    assert torch.allclose(result.tensors["w"].reshape(-1), rows[ours])
    assert result.used == ("p0",) + (() if ours == 0 else (f"p{ours}",))
    # and the other way round: ByzFL's own f is our scoring with f - 1
    theirs = row_of(rows, oracle(byzfl.Krum(f=f), rows))
    assert theirs == int(torch.argmin(krum_scores(pairwise_sq_distances(rows), f - 1)))


@pytest.mark.parametrize("n,f,seed", CASES)
def test_multikrum_averages_what_byzfl_averages(n, f, seed):
    rows = matrix(n, seed)
    theirs = oracle(byzfl.MultiKrum(f=f + 1), rows)  # the n - f - 1 best by n - f - 2 neighbours
    ours = MultiKrum(MultiKrumParams(f=f, m=n - f - 1)).aggregate(*updates(rows))
    assert torch.allclose(ours.tensors["w"].reshape(-1), theirs, rtol=1e-12, atol=1e-12)
    assert len(ours.used) + len(ours.excluded) == n


@pytest.mark.parametrize("n,f,seed", CASES)
def test_trimmed_mean_matches_byzfl(n, f, seed):
    rows = matrix(n, seed)
    theirs = oracle(byzfl.TrMean(f=f), rows)
    assert torch.allclose(trimmed_mean(rows, f), theirs, rtol=1e-12, atol=1e-12)
    ours = TrimmedMean(TrimmedMeanParams(f=f)).aggregate(*updates(rows))
    assert torch.allclose(ours.tensors["w"].reshape(-1), theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [3, 4, 5, 8, 11, 20])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_median_matches_byzfl_for_odd_and_even_counts(n, dtype):
    rows = matrix(n, n, dtype)
    theirs = oracle(byzfl.Median(), rows).to(dtype)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert torch.allclose(coordinatewise_median(rows), theirs, rtol=tol, atol=tol)
    ours = Median().aggregate(*updates(rows))
    assert torch.allclose(ours.tensors["w"].reshape(-1), theirs, rtol=tol, atol=tol)
    if n % 2 == 0:  # pinned: the mean of the two middle values, not torch.median's lower one
        assert not torch.allclose(torch.median(rows, dim=0).values, theirs)


@pytest.mark.parametrize("n,f,seed", CASES[:6])
def test_float32_models_agree_within_float_tolerance(n, f, seed):
    rows = matrix(n, seed, torch.float32, d=4096)
    assert torch.allclose(trimmed_mean(rows, f), byzfl.TrMean(f=f)(rows), rtol=1e-5, atol=1e-6)
    assert torch.allclose(coordinatewise_median(rows), byzfl.Median()(rows), rtol=1e-5, atol=1e-6)
    ours = int(torch.argmin(krum_scores(pairwise_sq_distances(rows), f)))
    assert ours == row_of(rows, byzfl.Krum(f=f + 1)(rows))
