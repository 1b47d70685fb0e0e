"""What a peer is told to do: rounds, local work, timing, state."""

from __future__ import annotations

from collections.abc import Mapping

import attrs


@attrs.frozen(kw_only=True)
class PeerOptions:
    """Options of one peer (``quinkgl run`` flags; the simulator sets them per peer)."""

    node_id: str
    rounds: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    local_steps: int | None = None  # batches per round; None with local_epochs None means 1 epoch
    local_epochs: float | None = None
    gossip_interval: float = 12.0  # the longest a round waits for its sources' answers, seconds from round start
    announce_interval: float = 4.0  # discovery and liveness only; no round waits on announcements
    peer_timeout: float = 15.0  # a peer not heard from for this long is no longer a candidate source
    staleness: int = 2  # accept updates at most this many rounds older than ours
    script_args: Mapping[str, str] = attrs.field(factory=dict)
    checkpoint_dir: str | None = None
    strict_manifest: bool = True
    seed: int | None = None
    device: str = "cpu"
    max_eval_batches: int | None = None
    isolated: bool = False  # train alone: never send (a baseline for experiments)
    discovery_wait: float = 10.0  # before the first round, wait this long at most for min_peers compatible peers
    min_peers: int = 1  # peers to wait for (at most discovery_wait) before the first round
    membership_cert: str | None = None  # this peer's membership certificate file (certified swarms)

    def steps_for(self, batches_per_epoch: int) -> int:
        """How many batches one round trains on."""
        if self.local_steps is not None:
            return max(1, self.local_steps)
        epochs = self.local_epochs if self.local_epochs is not None else 1.0
        return max(1, round(epochs * max(batches_per_epoch, 1)))
