"""Records that registration hooks return: one per component a plugin provides.

A record names the component (matched case-insensitively), gives the factory that builds it and the attrs class
of its parameters. Factories are called as ``factory(params, manifest)`` and may import heavy libraries; building
a record must not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs


@attrs.frozen
class NoParams:
    """Parameters of a component that takes none."""


def normalise_name(name: str) -> str:
    """The registry key of a component name: case-insensitive, ``-``/``_`` ignored."""
    return name.strip().lower().replace("-", "").replace("_", "")


@attrs.frozen(kw_only=True)
class ComponentSpec:
    """A component a plugin provides: its display name, a factory and its parameter class."""

    kind: ClassVar[str] = "component"

    name: str
    factory: Callable[..., Any]
    params: type = NoParams
    description: str = ""

    @property
    def key(self) -> str:
        return normalise_name(self.name)


@attrs.frozen(kw_only=True)
class AggregatorSpec(ComponentSpec):
    """An aggregation rule; ``factory(params, manifest)`` returns a :class:`quinkgl.aggregation.Aggregator`."""

    kind: ClassVar[str] = "aggregator"


@attrs.frozen(kw_only=True)
class TopologySpec(ComponentSpec):
    """A peer-selection rule; ``factory(params, manifest)`` returns a :class:`quinkgl.topology.Topology`."""

    kind: ClassVar[str] = "topology"


@attrs.frozen(kw_only=True)
class TransportSpec(ComponentSpec):
    """A network transport; ``factory(params, config)`` returns a :class:`quinkgl.transport.Transport`."""

    kind: ClassVar[str] = "transport"


@attrs.frozen(kw_only=True)
class DataPolicySpec(ComponentSpec):
    """What a peer may reveal about its data; ``factory(params, manifest)`` returns a data policy object."""

    kind: ClassVar[str] = "data_policy"


SPEC_TYPES: dict[str, type[ComponentSpec]] = {
    cls.kind: cls for cls in (AggregatorSpec, TopologySpec, TransportSpec, DataPolicySpec)
}
COMPONENT_KINDS: tuple[str, ...] = tuple(SPEC_TYPES)
