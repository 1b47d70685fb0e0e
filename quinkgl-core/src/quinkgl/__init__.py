"""QuinkGL: decentralized gossip learning.

Importing this package is deliberately cheap: torch, libp2p and the plugin registry are only imported by the
modules that need them (``quinkgl.models``, the runtime, the transport plugin).
"""

__version__ = "0.4.0"

__all__ = ["__version__"]
