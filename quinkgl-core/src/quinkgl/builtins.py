"""Core's own plugin: the components that ship with quinkgl-core, registered directly (not via entry points)."""

from __future__ import annotations

from quinkgl.plugins.hookspecs import hookimpl
from quinkgl.plugins.records import AggregatorSpec, DataPolicySpec, TopologySpec, TransportSpec


def _fedavg(params, manifest):
    from quinkgl.aggregation import FedAvg

    return FedAvg(params, manifest)


def _random_topology(params, manifest):
    from quinkgl.topology import RandomTopology

    return RandomTopology(params, manifest)


def _default_data_policy(params, manifest):
    from quinkgl.datapolicy import DefaultDataPolicy

    return DefaultDataPolicy(params, manifest)


@hookimpl
def quinkgl_register_aggregators():
    from quinkgl.aggregation import FedAvgParams

    return AggregatorSpec(
        name="FedAvg", factory=_fedavg, params=FedAvgParams, description="sample-weighted average of all models"
    )


@hookimpl
def quinkgl_register_topologies():
    from quinkgl.topology import RandomTopologyParams

    return TopologySpec(
        name="RandomTopology",
        factory=_random_topology,
        params=RandomTopologyParams,
        description="push to `fanout` random peers each round",
    )


@hookimpl
def quinkgl_register_data_policies():
    from quinkgl.datapolicy import DefaultDataPolicyParams

    return DataPolicySpec(
        name="default",
        factory=_default_data_policy,
        params=DefaultDataPolicyParams,
        description="share a noised label histogram (or nothing)",
    )


def _memory_transport(params, config):
    from quinkgl.transports.memory import memory_transport

    return memory_transport(params, config)


@hookimpl
def quinkgl_register_transports():
    from quinkgl.transports.memory import MemoryParams

    return TransportSpec(
        name="memory",
        factory=_memory_transport,
        params=MemoryParams,
        description="in-process transport for simulations and tests",
    )
