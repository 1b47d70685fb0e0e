"""pluggy entry point of quinkgl-transport-libp2p: registers the ``libp2p`` transport.

Importing this module must stay cheap: libp2p (≈0.6 s, ≈70 MB) is imported only when the factory runs.
"""

from __future__ import annotations

from typing import Any

from quinkgl.plugins.hookspecs import hookimpl
from quinkgl.plugins.records import TransportSpec

from .params import Libp2pParams


def create_libp2p_transport(params: Libp2pParams | None, config: Any) -> Any:
    """Build a :class:`quinkgl_transport_libp2p.transport.Libp2pTransport` (imports libp2p now)."""
    from .transport import create_transport

    return create_transport(params, config)


@hookimpl
def quinkgl_register_transports() -> TransportSpec:
    return TransportSpec(
        name="libp2p",
        factory=create_libp2p_transport,
        params=Libp2pParams,
        description=(
            "py-libp2p 0.8.1 over TCP: Noise-only encryption, Yamux, GossipSub announcements, "
            "/quinkgl/model/1.0.0 model transfers with SHA-256 acknowledgement, same-machine peer registry, "
            "host:port bootstrap"
        ),
    )
