"""The label-histogram fingerprint: one release per peer, Gaussian noise calibrated to the stated (ε, δ)."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from quinkgl.datapolicy import (
    PRIVACY_DELTA,
    PRIVACY_EPSILON,
    DefaultDataPolicy,
    DefaultDataPolicyParams,
    noise_std,
    release_epsilon,
)

pytest.importorskip("opacus")
LEVELS = [level for level, eps in PRIVACY_EPSILON.items() if eps is not None]


def analytic_gaussian_delta(std: float, epsilon: float, sensitivity: float = 1.0) -> float:
    """δ(ε) of the Gaussian mechanism, exactly (Balle & Wang 2018, Thm. 8) — independent of Opacus."""
    from scipy.stats import norm

    a, b = sensitivity / (2 * std), epsilon * std / sensitivity
    return float(norm.cdf(a - b) - math.exp(epsilon) * norm.cdf(-a - b))


@pytest.mark.parametrize("level", LEVELS)
def test_noise_scale_meets_the_stated_epsilon_and_is_not_wasteful(level):
    epsilon = PRIVACY_EPSILON[level]
    std = noise_std(level)
    # Opacus's own accounting of that noise stays within the budget, and close to it (not needlessly noisy).
    assert release_epsilon(std) <= epsilon * 1.01
    assert release_epsilon(std) >= epsilon * 0.9
    # The exact analytic bound agrees: at ε the mechanism's δ is within the stated δ.
    assert analytic_gaussian_delta(std, epsilon) <= PRIVACY_DELTA * 1.05
    # ... and 20 % less noise would break the budget, so the scale is really tied to ε.
    assert analytic_gaussian_delta(std * 0.8, epsilon) > PRIVACY_DELTA


def test_stronger_levels_add_more_noise_and_none_adds_none():
    assert noise_std("none") == 0.0
    assert 0 < noise_std("low") < noise_std("medium") < noise_std("high")
    exact = DefaultDataPolicy(DefaultDataPolicyParams(privacy_level="none")).metadata([5, 0, 7])
    assert exact == {"label_histogram": [5, 0, 7]}


def test_released_noise_has_the_calibrated_spread():
    std = noise_std("high")
    counts = [10_000] * 10
    deviations = []
    for _ in range(300):
        released = DefaultDataPolicy(DefaultDataPolicyParams(privacy_level="high")).metadata(counts)
        deviations += [value - 10_000 for value in released["label_histogram"]]
    assert abs(statistics.fmean(deviations)) < 0.15 * std
    assert 0.9 * std < statistics.pstdev(deviations) < 1.1 * std


def test_the_histogram_is_released_once_and_reannounced_unchanged():
    policy = DefaultDataPolicy(DefaultDataPolicyParams(privacy_level="high"))
    first = policy.metadata([300] * 10, random.Random(1))
    again = policy.metadata([300] * 10, random.Random(2))
    assert first == again
    first["label_histogram"][0] = -1  # callers get copies: the release itself cannot be altered
    assert policy.metadata([300] * 10) == again


def test_noise_does_not_come_from_the_public_seed():
    releases = {
        tuple(
            DefaultDataPolicy(DefaultDataPolicyParams(privacy_level="high")).metadata(
                [300] * 10, random.Random("seed:peer-1")
            )["label_histogram"]
        )
        for _ in range(3)
    }
    assert len(releases) > 1


def test_no_fingerprint_shares_nothing():
    assert DefaultDataPolicy(DefaultDataPolicyParams(fingerprint="none")).metadata([3, 4]) == {}
