"""Parameters of the ``libp2p`` transport as they appear in a manifest's ``transport.params``.

These are swarm-wide protocol settings, so they are integers and booleans (manifests avoid floats in hashed
content). Machine-local settings (registry directory, whether to use the registry at all) come from
``TransportConfig.options`` instead; see the package README.

Pure attrs: importing this module never imports libp2p.
"""

from __future__ import annotations

import attrs


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


@attrs.frozen(kw_only=True)
class Libp2pParams:
    """Swarm-wide settings of the libp2p transport."""

    #: Largest announcement document accepted (bytes). GossipSub drops messages of 1 MiB or more silently,
    #: so this is capped well below that.
    max_announcement_bytes: int = attrs.field(default=64 * 1024, validator=[_positive])
    #: Seconds a receiver waits for the next byte of a model transfer before giving up ("stalled").
    stream_idle_timeout_s: int = attrs.field(default=10, validator=[_positive])
    #: Seconds allowed for one bootstrap or discovery dial (TCP + Noise + Yamux).
    dial_timeout_s: int = attrs.field(default=5, validator=[_positive])
    #: Concurrent inbound model transfers accepted from one peer; more are refused as "busy".
    max_inbound_transfers_per_peer: int = attrs.field(default=2, validator=[_positive])
    #: Find peers of the same swarm on this machine through the per-user registry directory.
    local_discovery: bool = True

    def __attrs_post_init__(self) -> None:
        if self.max_announcement_bytes > 512 * 1024:
            raise ValueError("max_announcement_bytes must be <= 524288 (GossipSub drops messages >= 1 MiB)")
