"""Parameter classes of the topologies, as manifests carry them in ``topology.params``.

Kept apart from the topologies so that registering the plugin builds no topology code. Decimals arrive as
strings (``{"exploration": "0.2"}``); core's converter turns them into floats.
"""

from __future__ import annotations

import attrs

AFFINITY_MODES = ("similar", "complementary")


@attrs.frozen
class AffinityTopologyParams:
    """``fanout``: peers per round; ``mode``: prefer ``similar`` or ``complementary`` label histograms;
    ``exploration``: chance that a slot goes to a uniformly random peer instead, keeping the graph connected;
    ``temperature``: how sharply better matches are preferred when sampling (lower = greedier)."""

    fanout: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    mode: str = attrs.field(default="similar", validator=attrs.validators.in_(AFFINITY_MODES))
    exploration: float = attrs.field(default=0.1, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)])
    temperature: float = attrs.field(default=0.1, validator=attrs.validators.gt(0.0))


@attrs.frozen
class CyclonTopologyParams:
    """``view_size``: entries in the partial view; ``fanout``: sources per round (random peers of the view);
    ``shuffle_length``: descriptors swapped with the oldest neighbour in each shuffle (one per round);
    ``shuffle_interval``: seconds between introductions to the bootstrap contacts while the view is empty;
    ``shuffle_timeout``: seconds a shuffle waits for its answer (no answer: the neighbour leaves the view)."""

    view_size: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    fanout: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    shuffle_length: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    shuffle_interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0.0))
    shuffle_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0.0))
