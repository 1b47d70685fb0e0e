"""The ``libp2p`` transport for QuinkGL peers (py-libp2p 0.8.1).

Importing the package is cheap and does not import libp2p; the transport itself lives in
:mod:`quinkgl_transport_libp2p.transport` (imported by the plugin's factory). Modules:

``params``     swarm-wide parameters (``Libp2pParams``)
``identity``   the persisted Ed25519 identity key
``host``       host construction: Noise only, Yamux, one connection per peer, announced addresses, port checks
``bootstrap``  ``host:port`` / ``host:port/p2p/<id>`` / multiaddr bootstrap, dialling without a peer ID
``discovery``  same-machine per-user peer registry
``framing``    the ``/quinkgl/model/1.0.0`` stream protocol
``announce``   GossipSub announcements
``transport``  ``Libp2pTransport``, tying it together
``plugin``     the pluggy entry point
"""

from __future__ import annotations

from .params import Libp2pParams

__all__ = ["Libp2pParams", "__version__"]
__version__ = "0.4.0"
