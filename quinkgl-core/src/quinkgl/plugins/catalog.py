"""First-party components and the distributions that provide them, known even when not installed.

This lets ``quinkgl manifest create --aggregation Krum`` record the right requirement on a machine that has only
core, and lets a missing-plugin error say exactly what to ``pip install``.
"""

from __future__ import annotations

from quinkgl import __version__
from quinkgl.plugins.records import normalise_name

CORE = "quinkgl-core"
AGG_ROBUST = "quinkgl-agg-robust"
TOPO = "quinkgl-topo"
TRANSPORT_LIBP2P = "quinkgl-transport-libp2p"

# (kind, display name) -> distribution
FIRST_PARTY: dict[tuple[str, str], str] = {
    ("aggregator", "FedAvg"): CORE,
    ("aggregator", "EntropyWeightedAvg"): AGG_ROBUST,
    ("aggregator", "Krum"): AGG_ROBUST,
    ("aggregator", "MultiKrum"): AGG_ROBUST,
    ("aggregator", "TrimmedMean"): AGG_ROBUST,
    ("aggregator", "Median"): AGG_ROBUST,
    ("aggregator", "CenteredClipping"): AGG_ROBUST,
    ("topology", "RandomTopology"): CORE,
    ("topology", "AffinityTopology"): TOPO,
    ("topology", "CyclonTopology"): TOPO,
    ("transport", "memory"): CORE,
    ("transport", "libp2p"): TRANSPORT_LIBP2P,
    ("data_policy", "default"): CORE,
}
_BY_KEY = {(kind, normalise_name(name)): (name, dist) for (kind, name), dist in FIRST_PARTY.items()}


def first_party(kind: str, name: str) -> tuple[str, str] | None:
    """``(display name, distribution)`` of a first-party component, or None."""
    return _BY_KEY.get((kind, normalise_name(name)))


def first_party_names(kind: str) -> list[str]:
    """Display names of the first-party components of ``kind``."""
    return [name for (k, name) in FIRST_PARTY if k == kind]


def compatible_specifier(version: str = __version__) -> str:
    """The version range plugins of a 0.x release accept: same minor (``>=0.4,<0.5``)."""
    major, minor = (int(part) for part in version.split(".")[:2])
    if major == 0:
        return f">={major}.{minor},<{major}.{minor + 1}"
    return f">={major}.{minor},<{major + 1}"
