"""Entry point of quinkgl-topo (group ``quinkgl``): registers AffinityTopology and CyclonTopology.

Only the attrs parameter classes are imported here; each factory imports its topology when a peer builds it.
"""

from __future__ import annotations

from quinkgl.plugins import TopologySpec, hookimpl
from quinkgl_topo.params import AffinityTopologyParams, CyclonTopologyParams


def _affinity(params, manifest):
    from quinkgl_topo.affinity import AffinityTopology

    return AffinityTopology(params, manifest)


def _cyclon(params, manifest):
    from quinkgl_topo.cyclon import CyclonTopology

    return CyclonTopology(params, manifest)


@hookimpl
def quinkgl_register_topologies():
    return [
        TopologySpec(
            name="AffinityTopology",
            factory=_affinity,
            params=AffinityTopologyParams,
            description="prefer peers with similar (or complementary) label histograms",
        ),
        TopologySpec(
            name="CyclonTopology",
            factory=_cyclon,
            params=CyclonTopologyParams,
            description="Cyclon peer sampling: a partial view filled by shuffles; sources drawn from it",
        ),
    ]
