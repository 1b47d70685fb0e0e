"""One peer's round loop (DESIGN §6): train → push → wait → aggregate → evaluate → callbacks → checkpoint.

The loop runs on trio; every torch call goes through :meth:`Peer._work` (a worker thread, bounded by a shared
limiter so simulated peers do not oversubscribe the cores). Inbound traffic arrives through transport handlers
that only queue and return; a decoder task turns payloads into checked updates in a worker thread.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable, Optional

import attrs
import trio

from quinkgl import wire
from quinkgl.aggregation import ModelUpdate
from quinkgl.runtime.inbox import Inbox
from quinkgl.runtime.options import PeerOptions
from quinkgl.runtime.peerview import AnnouncementRejected, PeerView, encode_announcement, parse_announcement
from quinkgl.runtime.training import BatchStream, evaluate, train_steps
from quinkgl.topology import PeerCandidate

log = logging.getLogger("quinkgl.peer")
Observer = Callable[[str, dict[str, Any]], None]
MAX_PENDING_PER_SENDER = 2  # a sender has at most this many undecoded updates queued; more are dropped, counted


@attrs.define
class PeerCounters:
    """Traffic and rejection counters of one peer."""

    updates_sent: int = 0
    send_failures: int = 0
    updates_accepted: int = 0
    rejected: dict[str, int] = attrs.field(factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    @property
    def updates_rejected(self) -> int:
        return sum(self.rejected.values())


@attrs.define(kw_only=True)
class PeerParts:
    """Everything :func:`quinkgl.runtime.build.build_peer` assembles for a peer."""

    manifest: Any
    options: PeerOptions
    hooks: Any  # a pluggy hook relay with the peer-script hooks
    model: Any
    optimizer: Any
    train_data: Any
    val_data: Any
    num_samples: int
    label_counts: list[int]
    aggregator: Any
    topology: Any
    data_policy: Any
    transport: Any
    loss_fn: Any
    classify: bool
    store: Any = None  # CheckpointStore or None
    start_round: int = 0
    limiter: Optional[trio.CapacityLimiter] = None
    attack: Any = None  # a quinkgl.attacks.Attack for a simulated hostile peer (--byzantine); None for honest peers


class Peer:
    """A running gossip-learning peer."""

    def __init__(self, parts: PeerParts, observer: Optional[Observer] = None):
        self.p = parts
        self.options = parts.options
        self.observer = observer or (lambda kind, data: None)
        self.swarm_id = parts.manifest.swarm_id
        self.arch_hash = parts.manifest.model.arch_hash
        self.view: Optional[PeerView] = None
        self.inbox = Inbox()
        self.counters = PeerCounters()
        self.round = parts.start_round
        self.pushed = parts.start_round
        self.completed = parts.start_round
        self.done = False
        self.history: list[dict[str, Any]] = []
        self.rng = random.Random(f"{self.options.seed}:{self.options.node_id}")
        self.metadata = parts.data_policy.metadata(parts.label_counts, self.rng) if parts.label_counts else {}
        self.stream = BatchStream(parts.train_data)
        self.expected = wire.model_spec(parts.model.state_dict())
        self.max_update = wire.max_update_bytes(self.expected)
        self._changed = trio.Event()
        self._payloads_send, self._payloads_recv = trio.open_memory_channel(64)
        self._pending: dict[str, int] = {}  # undecoded payloads per sender: memory stays bounded under a flood
        self._decoding = 0
        self._ignored_announcers: set[str] = set()
        self._discovered: set[str] = set()
        self._callback_error: Optional[BaseException] = None  # a peer-script callback that raised on the loop

    # -- helpers -------------------------------------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        return self.p.transport.peer_id

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _work(self, function: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(function, *args, limiter=self.p.limiter)

    def _emit(self, kind: str, **data: Any) -> None:
        self.observer(kind, {"node_id": self.options.node_id, "peer_id": self.peer_id, **data})

    # -- inbound (called by the transport on the event loop; must not block) ----------------------------------

    def _on_announcement(self, sender: str, raw: bytes) -> None:
        if self.view is None:
            return  # not started yet; the sender announces again within a second
        try:
            doc = parse_announcement(raw, swarm_id=self.swarm_id, arch_hash=self.arch_hash)
        except AnnouncementRejected as exc:
            self.counters.reject(f"announcement_{exc.reason}")
            if sender not in self._ignored_announcers:
                self._ignored_announcers.add(sender)
                log.warning("ignoring peer %s: %s (%s)", sender, exc.reason.replace("_", " "), exc)
                self._emit("peer_ignored", sender=sender, reason=exc.reason, detail=str(exc))
            return
        if self.view.observe(sender, doc, trio.current_time()) and sender not in self._discovered:
            self._discovered.add(sender)  # once per peer, even if it drops out of the view and comes back
            self._emit("peer_discovered", sender=sender, node=doc["node_id"])
            try:
                self.p.hooks.quinkgl_on_peer_discovered(peer_id=sender)
            except Exception as exc:  # raised inside a transport callback: surface it from the round loop
                self._callback_error = exc
        self._notify()

    def _on_payload(self, sender: str, payload: bytes) -> None:
        if self._pending.get(sender, 0) >= MAX_PENDING_PER_SENDER:
            self.counters.reject("sender_flooding")
            return
        try:
            self._payloads_send.send_nowait((sender, payload))
        except trio.WouldBlock:
            self.counters.reject("inbox_full")
            return
        self._pending[sender] = self._pending.get(sender, 0) + 1

    def _on_peer_lost(self, sender: str) -> None:
        if self.view is not None:
            self.view.forget(sender)
        self._notify()

    async def _decode_loop(self) -> None:
        async for sender, payload in self._payloads_recv:
            self._decoding += 1
            try:
                await self._accept(sender, payload)
            finally:
                self._decoding -= 1
                self._pending[sender] -= 1
                if not self._pending[sender]:
                    del self._pending[sender]
                self._notify()

    async def _accept(self, sender: str, payload: bytes) -> None:
        if self.view is None or not self.view.is_compatible(sender):
            self.counters.reject("unknown_peer")
            return
        try:
            decoded = await self._work(
                lambda: wire.decode_update(payload, expected=self.expected, swarm_id=self.swarm_id,
                                           max_bytes=self.max_update)
            )
        except wire.WireRejected as exc:
            self.counters.reject(exc.reason.value)
            log.warning("rejected update from %s: %s (%s)", sender, exc.reason.value, exc.detail)
            return
        if decoded.header.sender != sender:
            self.counters.reject("sender_mismatch")
            return
        header = decoded.header
        update = ModelUpdate(sender, header.round, header.num_samples, decoded.tensors, header.metadata)
        reason = self.inbox.offer(update, min_round=self.round - self.options.staleness)
        if reason:
            self.counters.reject(reason)
        else:
            self.counters.updates_accepted += 1

    # -- announcements -----------------------------------------------------------------------------------------

    async def _announce(self) -> None:
        last = self.history[-1] if self.history else {}
        metrics = {k: last[k] for k in ("val_accuracy", "val_loss") if last.get(k) is not None}
        doc = encode_announcement(
            swarm_id=self.swarm_id, arch_hash=self.arch_hash, node_id=self.options.node_id, round_idx=self.round,
            pushed=self.pushed, done=self.done, metrics=metrics, metadata=self.metadata,
        )
        try:
            await self.p.transport.announce(doc)
        except Exception as exc:  # a failed announcement is retried on the next tick
            log.debug("announce failed: %s", exc)

    async def _announce_loop(self) -> None:
        while True:
            await self._announce()
            await trio.sleep(self.options.announce_interval)

    # -- the round ---------------------------------------------------------------------------------------------

    async def _send(self, target: str, payload: bytes) -> None:
        try:
            await self.p.transport.send(target, payload, timeout=self.options.send_timeout)
            self.counters.updates_sent += 1
        except Exception as exc:
            self.counters.send_failures += 1
            log.warning("sending round %d to %s failed: %s", self.round, target, exc)
            if self.view is not None:
                self.view.forget(target)  # until it announces itself again
                self._notify()

    async def _wait_for_peers(self, round_idx: int, deadline: float) -> None:
        assert self.view is not None
        with trio.move_on_at(deadline):
            while self.view.waiting_for(round_idx, trio.current_time()) or self._decoding or (
                self._payloads_recv.statistics().current_buffer_used
            ):
                # Re-check at least every second: a silent peer times out of the view without any event.
                with trio.move_on_after(1.0):
                    await self._changed.wait()

    async def _wait_for_first_peer(self) -> None:
        """Give peers started at the same time a moment to appear, so round 1 is already a shared one."""
        assert self.view is not None
        if self.options.isolated or self.completed >= self.options.rounds:
            return
        with trio.move_on_after(self.options.discovery_wait):
            while not self.view.alive(trio.current_time()):
                with trio.move_on_after(1.0):
                    await self._changed.wait()

    def _train(self) -> Any:
        steps = self.options.steps_for(_batches_per_epoch(self.p.train_data))
        return train_steps(self.p.model, self.p.optimizer, self.stream, steps, self.p.loss_fn, self.options.device,
                           self.p.classify)

    def _snapshot(self) -> dict[str, Any]:
        return {name: t.detach().clone() for name, t in self.p.model.state_dict().items()}

    def _encode(self, tensors: dict[str, Any], round_idx: int) -> bytes:
        return wire.encode_update(tensors, swarm_id=self.swarm_id, sender=self.peer_id, round=round_idx,
                                  num_samples=self.p.num_samples, metadata=self.metadata)

    def _aggregate(self, own: ModelUpdate, received: list[ModelUpdate]) -> Any:
        result = self.p.aggregator.aggregate(own, received)
        self.p.model.load_state_dict(result.tensors)
        return result

    def _evaluate(self) -> Any:
        return evaluate(self.p.model, self.p.val_data, self.p.loss_fn, self.options.device, self.p.classify,
                        self.options.max_eval_batches)

    def _checkpoint(self, round_idx: int, metrics: dict[str, Any]) -> None:
        store = self.p.store
        if store is None:
            return
        assert self.view is not None
        store.save(round_idx, self.p.model.state_dict(), self.p.optimizer.state_dict(), metrics,
                   self.view.snapshot(),
                   extra={"swarm_id": self.swarm_id, "arch_hash": self.arch_hash, "node_id": self.options.node_id})
        store.metrics_log.append(metrics)

    def _raise_callback_error(self) -> None:
        if self._callback_error is not None:
            raise self._callback_error

    async def _round(self, round_idx: int) -> dict[str, Any]:
        assert self.view is not None
        self._raise_callback_error()
        started = trio.current_time()
        self.round = round_idx
        self._notify()
        if self.p.attack is not None:  # --byzantine seam (1/2): the model the hostile update is measured from
            self.p.attack.begin_round(await self._work(self._snapshot))
        trained = await self._work(self._train)
        train_seconds = trio.current_time() - started
        own_tensors = await self._work(self._snapshot)
        if not self.options.isolated:
            outgoing = own_tensors if self.p.attack is None else await self._work(self.p.attack.outgoing, own_tensors)
            payload = await self._work(self._encode, outgoing, round_idx)
            me = PeerCandidate(self.peer_id, round_idx, dict(self.metadata))
            candidates = [me, *self.view.candidates(trio.current_time())]
            targets = [t for t in self.p.topology.select(self.peer_id, candidates, round_idx, self.rng)
                       if t != self.peer_id]
            if self.p.attack is not None and self.p.attack.push_all:  # --byzantine seam (2/2): push to everyone
                targets = [c.peer_id for c in candidates if c.peer_id != self.peer_id]
            async with trio.open_nursery() as sends:
                for target in targets:
                    sends.start_soon(self._send, target, payload)
        self.pushed = round_idx
        await self._announce()
        if not self.options.isolated:
            await self._wait_for_peers(round_idx, started + self.options.gossip_interval)
        self._raise_callback_error()
        received, stale = self.inbox.take(min_round=round_idx - self.options.staleness)
        for _ in range(stale):
            self.counters.reject("stale_round")
        own = ModelUpdate(self.peer_id, round_idx, self.p.num_samples, own_tensors, self.metadata)
        used: tuple[str, ...] = ()
        samples = self.p.num_samples
        if received:
            result = await self._work(self._aggregate, own, received)
            used = tuple(s for s in result.used if s != self.peer_id)
            samples = sum(u.num_samples for u in (own, *received) if u.sender in result.used)
            log.info("aggregated models from %d peer(s) in round %d: %s (%d samples)", len(used), round_idx,
                     ", ".join(used), samples)
            self._emit("aggregated", round=round_idx, peers=list(used), samples=samples)
            self.p.hooks.quinkgl_on_aggregation_done(peer_ids=list(used), sample_count=samples)
        else:
            log.info("no updates received in round %d; keeping the local model", round_idx)
        eval_started = trio.current_time()
        evaluated = await self._work(self._evaluate)
        eval_seconds = trio.current_time() - eval_started
        stats = self.p.transport.stats()
        metrics = {
            "round": round_idx,
            "loss": trained.loss,
            "accuracy": trained.accuracy,
            "val_loss": evaluated.loss,
            "val_accuracy": evaluated.accuracy,
            "peers": len(self.view.alive(trio.current_time())),
            "aggregated_from": list(used),
            "samples": samples,
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
            "updates_sent": self.counters.updates_sent,
            "updates_accepted": self.counters.updates_accepted,
            "updates_rejected": self.counters.updates_rejected + sum(stats.rejected.values()),
            "train_seconds": round(train_seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            "round_seconds": round(trio.current_time() - started, 3),
            "time": time.time(),
        }
        self.history.append(metrics)
        self.p.hooks.quinkgl_on_round_end(round_idx=round_idx, metrics=metrics)
        await self._work(self._checkpoint, round_idx, metrics)
        self.completed = round_idx
        self._emit("round_end", **metrics)
        return metrics

    async def run(self) -> list[dict[str, Any]]:
        """Run the remaining rounds; return the metrics of each round run."""
        self.p.transport.set_handlers(on_announcement=self._on_announcement, on_payload=self._on_payload,
                                      on_peer_lost=self._on_peer_lost)
        async with self.p.transport:
            self.view = PeerView(self.peer_id, self.options.peer_timeout)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._decode_loop)
                nursery.start_soon(self._announce_loop)
                self._emit("started", start_round=self.completed, rounds=self.options.rounds)
                await self._wait_for_first_peer()
                for round_idx in range(self.completed + 1, self.options.rounds + 1):
                    await self._round(round_idx)
                self.done = True
                await self._announce()
                nursery.cancel_scope.cancel()
        self._emit("finished", rounds=self.completed)
        return self.history

    def final_checkpoint(self) -> None:
        """Save the model as it stands under the last completed round (after an interruption)."""
        if self.p.store is None or self.view is None:
            return
        last = self.history[-1] if self.history else {"round": self.completed}
        self.p.store.save(self.completed, self.p.model.state_dict(), self.p.optimizer.state_dict(), last,
                          self.view.snapshot(), extra={"swarm_id": self.swarm_id, "arch_hash": self.arch_hash,
                                                       "node_id": self.options.node_id, "interrupted": True})

    def summary(self) -> dict[str, Any]:
        """Final numbers for the peer's summary line / table."""
        last = self.history[-1] if self.history else {}
        stats = self.p.transport.stats()
        return {
            "node_id": self.options.node_id,
            "peer_id": self.peer_id,
            "rounds": self.completed,
            "val_accuracy": last.get("val_accuracy"),
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
            "updates_accepted": self.counters.updates_accepted,
            "updates_rejected": self.counters.updates_rejected + sum(stats.rejected.values()),
            "rejected": {**self.counters.rejected, **dict(stats.rejected)},
        }


def _batches_per_epoch(loader: Any) -> int:
    try:
        return len(loader)
    except TypeError:
        return 100

