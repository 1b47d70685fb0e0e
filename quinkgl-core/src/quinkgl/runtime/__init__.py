"""The peer runtime: one gossip-learning peer's round loop, transport-neutral, on trio.

``build_peer`` turns a manifest + peer script + options into a ready :class:`Peer`; ``Peer.run()`` executes the
rounds. Torch work (training, evaluation, aggregation, (de)serialisation, checkpoints) runs in worker threads so
the network keeps going; nothing GIL-bound runs on the event loop.
"""

from quinkgl.runtime.options import PeerOptions

__all__ = ["PeerOptions"]
