"""Data policies: what a peer may reveal about its local data, attached to its updates and announcements.

The default policy can share a *label histogram* (used by EntropyWeightedAvg and AffinityTopology) with Laplace
noise whose scale follows the privacy level: the raw counts never leave the peer.
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

import attrs

# privacy level -> Laplace scale as a fraction of the total count (0 = exact counts)
PRIVACY_NOISE = {"none": 0.0, "low": 0.01, "medium": 0.05, "high": 0.15}


@attrs.frozen
class DefaultDataPolicyParams:
    """``fingerprint``: what to share (``none`` | ``label_histogram``); ``privacy_level``: how much noise;
    ``collaboration_mode``: ``open`` (aggregate with any compatible peer) or ``similar`` (prefer peers with
    similar label distributions, where the topology supports it)."""

    fingerprint: str = attrs.field(default="label_histogram", validator=attrs.validators.in_(("none", "label_histogram")))
    privacy_level: str = attrs.field(default="medium", validator=attrs.validators.in_(tuple(PRIVACY_NOISE)))
    collaboration_mode: str = attrs.field(default="open", validator=attrs.validators.in_(("open", "similar")))


class DefaultDataPolicy:
    """Shares a noised label histogram (or nothing) according to its params."""

    def __init__(self, params: DefaultDataPolicyParams | None = None, manifest: Any = None):
        self.params = params or DefaultDataPolicyParams()

    def metadata(self, label_counts: Sequence[int], rng: random.Random) -> dict[str, Any]:
        """The metadata this peer may attach to updates, given its true label counts."""
        if self.params.fingerprint == "none" or not label_counts:
            return {}
        total = max(sum(label_counts), 1)
        scale = PRIVACY_NOISE[self.params.privacy_level] * total
        noised = []
        for count in label_counts:
            # Laplace(0, scale) as the difference of two exponentials; clipped at zero, rounded to ints.
            noise = rng.expovariate(1 / scale) - rng.expovariate(1 / scale) if scale > 0 else 0.0
            noised.append(max(0, round(count + noise)))
        return {"label_histogram": noised}


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
