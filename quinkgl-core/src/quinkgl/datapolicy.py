"""Data policies: what a peer may reveal about its local data, attached to its updates and announcements.

The default policy can share a *label histogram* (used by EntropyWeightedAvg and AffinityTopology). The raw
counts never leave the peer: the histogram is released **once** per peer process through the Gaussian mechanism,
with noise calibrated to the privacy level's (ε, δ) budget by Opacus's PRV accountant (:func:`noise_std`). Every
later announcement or update re-sends that same release, which costs no further budget (post-processing).
"""

from __future__ import annotations

import functools
import math
import random
import warnings
from collections.abc import Sequence
from typing import Any

import attrs

# privacy level -> ε of the one release (δ = PRIVACY_DELTA); None = exact counts (no privacy).
PRIVACY_EPSILON: dict[str, float | None] = {"none": None, "low": 8.0, "medium": 2.0, "high": 0.5}
PRIVACY_DELTA = 1e-5
# collaboration_mode "similar": the least overlap Σ_c min(p_c, q_c) of two label distributions to collaborate.
SIMILARITY_THRESHOLD = 0.5
# Adding or removing one training sample changes one bin of the histogram by 1: L2 sensitivity 1.
HISTOGRAM_SENSITIVITY = 1.0


@functools.cache
def noise_std(level: str) -> float:
    """Standard deviation of the Gaussian noise that makes one histogram release (ε, δ)-DP for ``level``.

    Calibrated with Opacus's PRV accountant for a single, non-subsampled Gaussian release (sample rate 1, one
    step); 0.0 for ``none``. Cached: the calibration runs once per level and process.
    """
    epsilon = PRIVACY_EPSILON[level]
    if epsilon is None:
        return 0.0
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns about log(0) inside the PRV grid at sample rate 1
        multiplier = get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=PRIVACY_DELTA,
            sample_rate=1.0,
            steps=1,
            accountant="prv",
            epsilon_tolerance=0.005,
        )
    return float(multiplier) * HISTOGRAM_SENSITIVITY


def release_epsilon(std: float, delta: float = PRIVACY_DELTA) -> float:
    """The ε that Opacus's PRV accountant gives one Gaussian histogram release with noise ``std`` at ``delta``."""
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = [(std / HISTOGRAM_SENSITIVITY, 1.0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta=delta))


@attrs.frozen
class DefaultDataPolicyParams:
    """``fingerprint``: what to share (``none`` | ``label_histogram``); ``privacy_level``: the (ε, δ) budget of
    the histogram's one release (see :data:`PRIVACY_EPSILON`); ``collaboration_mode``: ``open`` (learn from any
    compatible peer) or ``similar`` (every topology that takes the manifest — RandomTopology, AffinityTopology,
    CyclonTopology — chooses only among peers whose label histogram overlaps this peer's by at least
    :data:`SIMILARITY_THRESHOLD`; see :func:`collaborators`)."""

    fingerprint: str = attrs.field(
        default="label_histogram", validator=attrs.validators.in_(("none", "label_histogram"))
    )
    privacy_level: str = attrs.field(default="medium", validator=attrs.validators.in_(tuple(PRIVACY_EPSILON)))
    collaboration_mode: str = attrs.field(default="open", validator=attrs.validators.in_(("open", "similar")))


class DefaultDataPolicy:
    """Shares a noised label histogram (or nothing) according to its params, released once per label count."""

    def __init__(self, params: DefaultDataPolicyParams | None = None, manifest: Any = None):
        self.params = params or DefaultDataPolicyParams()
        self._released: dict[tuple[int, ...], dict[str, Any]] = {}

    def metadata(self, label_counts: Sequence[int], rng: random.Random | None = None) -> dict[str, Any]:
        """The metadata this peer may attach to updates, given its true label counts.

        The noise comes from the operating system's CSPRNG, never from ``rng``: a peer's seed is no secret (it is a
        command-line option), and noise an observer can regenerate protects nothing. Asking again for the same
        counts returns the same release, so re-announcing it spends no extra privacy budget.
        """
        if self.params.fingerprint == "none" or not label_counts:
            return {}
        key = tuple(int(c) for c in label_counts)
        if key not in self._released:
            std = noise_std(self.params.privacy_level)
            noise = random.SystemRandom()
            noised = [max(0, round(count + noise.gauss(0.0, std))) if std > 0 else count for count in key]
            self._released[key] = {"label_histogram": noised}
        return {k: list(v) for k, v in self._released[key].items()}


def collaboration_mode(manifest: Any) -> str:
    """The manifest's data-policy ``collaboration_mode`` (``open`` when absent, or when there is no manifest)."""
    params = getattr(getattr(manifest, "data_policy", None), "params", None) or {}
    mode = params.get("collaboration_mode", "open") if isinstance(params, dict) else "open"
    return mode if mode in ("open", "similar") else "open"


def overlap(p: Sequence[float], q: Sequence[float]) -> float:
    """``Σ min(p_c, q_c)`` of two distributions (missing classes count as zero): 1 identical, 0 disjoint."""
    return sum(min(a, b) for a, b in zip(p, q, strict=False))  # classes beyond the shorter one contribute min(x, 0) = 0


def collaborators(own_id: str, candidates: Sequence[Any], mode: str) -> list[Any]:
    """The candidates a topology may choose from under ``mode``: all of them when ``open``; when ``similar``,
    ourselves plus the peers whose announced label histogram overlaps ours by at least
    :data:`SIMILARITY_THRESHOLD` (peers without a usable histogram, or all when ours is unknown, are left out:
    ``similar`` is a promise not to learn from dissimilar data)."""
    if mode != "similar":
        return list(candidates)
    own = next((label_distribution(c.metadata.get("label_histogram")) for c in candidates if c.peer_id == own_id), None)
    kept = []
    for candidate in candidates:
        if candidate.peer_id == own_id:
            kept.append(candidate)
            continue
        theirs = label_distribution(candidate.metadata.get("label_histogram"))
        if own is not None and theirs is not None and overlap(own, theirs) >= SIMILARITY_THRESHOLD:
            kept.append(candidate)
    return kept


def label_distribution(histogram: Any) -> list[float] | None:
    """A histogram of non-negative counts normalised to sum 1, or None if it is not a usable histogram."""
    # Histograms arrive from other peers as JSON: anything but finite non-negative numbers is unusable, and
    # float() guards against integers too large for a float.
    if not isinstance(histogram, (list, tuple)) or not histogram:
        return None
    counts: list[float] = []
    for value in histogram:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        try:
            count = float(value)
        except OverflowError:
            return None
        if not math.isfinite(count) or count < 0:
            return None
        counts.append(count)
    total = sum(counts)
    if not 0 < total < math.inf:
        return None
    return [count / total for count in counts]
