"""Plugins: hook contracts, component records and the registry built from entry points.

Plugin authors need only ``hookimpl`` and the record classes::

    from quinkgl.plugins import hookimpl, AggregatorSpec
"""

from quinkgl.plugins.hookspecs import hookimpl, hookspec
from quinkgl.plugins.records import AggregatorSpec, DataPolicySpec, NoParams, TopologySpec, TransportSpec

__all__ = ["AggregatorSpec", "DataPolicySpec", "NoParams", "TopologySpec", "TransportSpec", "hookimpl", "hookspec"]
