"""Watching a whole swarm: an observer collects every peer's announcements into one view (``quinkgl monitor``).

The observer joins the swarm through the manifest's transport in listen-only mode (``options["observer"]``): it
trains nothing, publishes no announcement and accepts no model, so no peer ever has it in its view and it is never
chosen as a source. What it shows comes only from the peers' signed announcements (node ID, round, validation
accuracy, finished), checked exactly as a peer checks them (swarm ID, arch hash, format). Transport-neutral:
renderers (terminal, JSON, web page) read :meth:`SwarmView.snapshot`, which is safe to call from any thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from quinkgl.runtime.peerview import AnnouncementRejected, parse_announcement

log = logging.getLogger("quinkgl.monitor")
MAX_PEERS = 4096  # a bound on what a flood of distinct senders can make the observer hold
MAX_HISTORY = 10_000  # accuracy points kept per peer


@attrs.define
class PeerStatus:
    """The latest an observer knows of one peer."""

    peer_id: str
    node_id: str = ""
    round: int = 0
    done: bool = False
    val_accuracy: float | None = None
    first_heard: float = 0.0
    last_heard: float = 0.0
    connected: bool = True
    accuracy: dict[int, float] = attrs.field(factory=dict)  # completed round -> validation accuracy


def _accuracy(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class SwarmView:
    """Every compatible peer heard of, with an accuracy-per-round history; thread-safe snapshots."""

    def __init__(self, *, swarm_id: str, arch_hash: str, name: str = "", clock: Callable[[], float] = time.time):
        self.swarm_id = swarm_id
        self.arch_hash = arch_hash
        self.name = name
        self.clock = clock
        self.started = clock()
        self.observer_id = ""
        self.peers: dict[str, PeerStatus] = {}
        self.rejected: dict[str, int] = {}
        self._lock = threading.Lock()
        self._version = 0

    @property
    def version(self) -> int:
        """Grows by one with every change a renderer would show (new peer, round, accuracy, finished)."""
        return self._version

    def observe(self, sender: str, raw: bytes) -> bool:
        """Take one announcement (the transport authenticated ``sender``); True if the view changed."""
        try:
            doc = parse_announcement(raw, swarm_id=self.swarm_id, arch_hash=self.arch_hash)
        except AnnouncementRejected as exc:
            with self._lock:
                self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
            return False
        now = self.clock()
        metrics = doc["metrics"]
        accuracy = _accuracy(metrics.get("val_accuracy"))
        measured = metrics.get("round")
        if type(measured) is not int or measured < 0:
            # Peers before this version do not say which round their metrics are of. Between pushing round r and
            # starting r+1 (round == pushed) they may be r's or r-1's: only the unambiguous cases are recorded.
            measured = doc["pushed"] if doc["done"] or doc["pushed"] < doc["round"] else 0
        with self._lock:
            status = self.peers.get(sender)
            if status is None:
                if len(self.peers) >= MAX_PEERS:
                    self.rejected["too_many_peers"] = self.rejected.get("too_many_peers", 0) + 1
                    return False
                status = self.peers[sender] = PeerStatus(sender, first_heard=now)
            before = (status.node_id, status.round, status.done, status.val_accuracy, status.connected)
            status.node_id, status.round, status.done = doc["node_id"], doc["round"], doc["done"]
            status.last_heard, status.connected = now, True
            if accuracy is not None:
                status.val_accuracy = accuracy
                if measured > 0 and (measured in status.accuracy or len(status.accuracy) < MAX_HISTORY):
                    status.accuracy[measured] = accuracy
            changed = before != (status.node_id, status.round, status.done, status.val_accuracy, status.connected)
            if changed:
                self._version += 1
            return changed

    def lost(self, sender: str) -> None:
        """The transport lost its connection to ``sender`` (kept in the view, marked)."""
        with self._lock:
            status = self.peers.get(sender)
            if status is not None and status.connected:
                status.connected = False
                self._version += 1

    def snapshot(self) -> dict[str, Any]:
        """The view as JSON-ready data: swarm, observer, time, and one entry per peer sorted by node ID."""
        now = self.clock()
        with self._lock:
            peers = [
                {
                    "node_id": p.node_id,
                    "peer_id": p.peer_id,
                    "round": p.round,
                    "val_accuracy": p.val_accuracy,
                    "finished": p.done,
                    "connected": p.connected,
                    "last_heard": p.last_heard,
                    "seconds_since_heard": round(max(now - p.last_heard, 0.0), 3),
                    "accuracy": [[r, p.accuracy[r]] for r in sorted(p.accuracy)],
                }
                for p in sorted(self.peers.values(), key=lambda p: (p.node_id, p.peer_id))
            ]
            rejected = dict(self.rejected)
        return {
            "swarm": {"name": self.name, "swarm_id": self.swarm_id, "arch_hash": self.arch_hash},
            "observer": self.observer_id,
            "time": now,
            "started": self.started,
            "peers": peers,
            "finished": sum(1 for p in peers if p["finished"]),
            "rejected": rejected,
        }


async def observe_swarm(
    manifest: Any,
    registry: Any,
    view: SwarmView,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    bootstrap_peers: tuple[str, ...] = (),
    registry_dir: str | None = None,
    on_ready: Callable[[Any], None] | None = None,
    until: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Join the manifest's swarm as a listen-only observer and feed ``view`` until cancelled (or ``until()``).

    ``on_ready(transport)`` runs once listening; the observer's identity is ephemeral (nothing is written)."""
    import trio

    from quinkgl.plugins.requirements import resolve_components
    from quinkgl.transport import TransportConfig

    # The observer needs only the transport: a monitor host without the aggregation plugin still works.
    resolved = resolve_components(manifest, registry, skip_kinds=("aggregator", "topology", "data_policy"))
    spec = resolved.components["transport"].spec
    options: dict[str, Any] = {"observer": True}
    if registry_dir:
        options["registry_dir"] = registry_dir
    config = TransportConfig(
        swarm_id=manifest.swarm_id,
        node_id="monitor",
        host=host,
        port=port,
        state_dir=None,
        bootstrap_peers=tuple(dict.fromkeys([*manifest.bootstrap_peers, *bootstrap_peers])),
        options=options,
    )
    transport = spec.factory(resolved.params["transport"], config)

    def refuse_payload(sender: str, payload: bytes) -> None:
        with view._lock:
            view.rejected["payload_to_observer"] = view.rejected.get("payload_to_observer", 0) + 1

    transport.set_handlers(on_announcement=view.observe, on_payload=refuse_payload, on_peer_lost=view.lost)
    async with transport:
        view.observer_id = transport.peer_id
        log.info("observing swarm %s as %s (listen-only)", manifest.swarm_id, transport.peer_id)
        if on_ready is not None:
            on_ready(transport)
        if until is not None:
            await until()
        else:
            await trio.sleep_forever()
