"""One peer's round loop (DESIGN §6, §10): train → pull from sources → aggregate → evaluate → callbacks →
checkpoint.

The round protocol is a pull (docs/runtime.md): each round a peer asks ``max(topology fanout, aggregator
min_updates)`` sources, picked by its topology, for their model of the round, and aggregates only their answers.
It closes the round at that quorum or at a deadline learned from observed answer times (capped by
``--gossip-interval``); sources that fail are replaced while the deadline allows, and a source that misses the
deadline is avoided for a few rounds. Anything pushed to the peer is counted as ``unsolicited`` and dropped
before it is decoded. A peer that starts far behind the swarm first catches up from two sources.

The loop runs on trio; every torch call goes through :meth:`Peer._work` (a worker thread, bounded by a shared
limiter so simulated peers do not oversubscribe the cores). Transport handlers only count, queue and return; the
request handler waits (bounded) until this peer has the model it was asked for.
"""

from __future__ import annotations

import collections
import logging
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from quinkgl import wire
from quinkgl.aggregation import ModelUpdate
from quinkgl.errors import QuinkGLError
from quinkgl.membership import MembershipGate, check_own_certificate
from quinkgl.runtime import pull, sources
from quinkgl.runtime.bounded import BoundedSet, RateLimit
from quinkgl.runtime.options import PeerOptions
from quinkgl.runtime.peerview import (
    MAX_ROUND_LEAD,
    AnnouncementRejected,
    PeerView,
    encode_announcement,
    parse_announcement,
)
from quinkgl.runtime.sampling import SamplingService
from quinkgl.runtime.training import BatchStream, evaluate, train_steps
from quinkgl.sampling import PeerSampler
from quinkgl.topology import PeerCandidate
from quinkgl.transport import RequestRefused, TransportError

log = logging.getLogger("quinkgl.peer")
Observer = Callable[[str, dict[str, Any]], None]
MIN_ANNOUNCE_GAP_S = 1.0  # an announcement triggered by a newly discovered peer waits at least this long
PACE_WINDOW = 16  # rounds with answers whose duration (train + pull) sets the pace of a round nobody answered
CATCH_UP_SOURCES = 2  # a late joiner averages at least this many current models before it trains
MAX_REMEMBERED_PEERS = 4096  # ignored / discovered peer IDs remembered (each for at most PEER_MEMORY_TTL seconds)
PEER_MEMORY_TTL = 600.0
IGNORED_WARNINGS_PER_MINUTE = 10


@attrs.define
class PeerCounters:
    """Traffic and rejection counters of one peer."""

    updates_sent: int = 0  # models served to peers that asked for them
    send_failures: int = 0  # requests this peer made that failed (refused, unreachable, too late)
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
    limiter: trio.CapacityLimiter | None = None
    membership_cert: Any = None  # this peer's MembershipCertificate in a certified swarm, else None
    attack: Any = None  # a quinkgl.attacks.Attack for a simulated hostile peer (--byzantine); None for honest peers
    conditions: Any = None  # a quinkgl.simconditions.PeerConditions (simulated churn and speed); None outside it


@attrs.define
class PullOutcome:
    """What one pull gathered: the decoded answers and how many sources were asked / answered."""

    received: list[ModelUpdate] = attrs.field(factory=list)
    asked: int = 0
    answered: int = 0
    behind: int = 0  # sources that refused because they have not reached the asked round (we are ahead of them)


class Peer:
    """A running gossip-learning peer."""

    def __init__(self, parts: PeerParts, observer: Observer | None = None):
        self.p = parts
        self.options = parts.options
        self.observer = observer or (lambda kind, data: None)
        self.swarm_id = parts.manifest.swarm_id
        self.arch_hash = parts.manifest.model.arch_hash
        self.view: PeerView | None = None
        self.counters = PeerCounters()
        self.round = parts.start_round
        self.pushed = parts.start_round  # the newest round whose model this peer serves
        self.completed = parts.start_round
        self.done = False
        self.history: list[dict[str, Any]] = []
        self.rng = random.Random(f"{self.options.seed}:{self.options.node_id}")
        self.metadata = parts.data_policy.metadata(parts.label_counts, self.rng) if parts.label_counts else {}
        self.stream = BatchStream(parts.train_data)
        self.expected = wire.model_spec(parts.model.state_dict())
        self.max_update = wire.max_update_bytes(self.expected)
        self.answer_times = pull.AnswerTimes()
        self.avoided = pull.Avoided()
        self.sources = sources.AnswerRecord()  # who answered before (fake IDs: runtime/sources.py)
        # digests of the models the last rounds started from (runtime/sources.py's distinct_updates)
        self.start_digests: collections.deque[bytes] = collections.deque(maxlen=self.options.staleness + 1)
        self.paces: collections.deque[float] = collections.deque(maxlen=PACE_WINDOW)  # train + pull, answered rounds
        self.announcements_handled = 0  # broadcast by the transport
        self.carried_announcements = 0  # carried by requests and sampling answers (peer sampling)
        self._served: tuple[int, bytes] | None = None  # (round, wire update) of the newest trained model
        self._probes: trio.Nursery | None = None  # where requests to never-answered sources run (_probe)
        self._probing: set[str] = set()  # sources a probe still waits on: not asked again meanwhile
        self._changed = trio.Event()
        self._announce_soon = trio.Event()
        # Bounded: a flood of fresh peer IDs must not grow memory, callbacks or log lines without limit.
        self._ignored_announcers = BoundedSet(MAX_REMEMBERED_PEERS, PEER_MEMORY_TTL)
        self._discovered = BoundedSet(MAX_REMEMBERED_PEERS, PEER_MEMORY_TTL)
        self._ignored_warnings = RateLimit(IGNORED_WARNINGS_PER_MINUTE, 60.0)
        self._callback_error: BaseException | None = None  # a peer-script callback that raised on the loop
        self.sampling: SamplingService | None = None  # a peer-sampling topology's channel (quinkgl.sampling)
        if isinstance(parts.topology, PeerSampler):
            self.sampling = SamplingService(
                parts.topology,
                parts.transport,
                scope=f"{self.swarm_id}\n{self.arch_hash}",
                announcement=self._announcement,
                observe=self._on_carried_announcement,
                knows=lambda peer_id: self.view is not None and self.view.admits(peer_id),
                certified=getattr(parts.manifest, "membership", "open") == "certified",
            )

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

    # -- inbound (called by the transport on the event loop) ---------------------------------------------------

    def _on_announcement(self, sender: str, raw: bytes) -> None:
        """A broadcast announcement (delivered by the transport)."""
        self.announcements_handled += 1
        self._observe(sender, raw)

    def _on_carried_announcement(self, sender: str, raw: bytes) -> None:
        """An announcement carried by a request or a sampling answer (peer sampling)."""
        self.carried_announcements += 1
        self._observe(sender, raw)

    def _observe(self, sender: str, raw: bytes) -> None:
        if self.view is None:
            return  # not started yet; the sender announces again
        now = trio.current_time()
        try:
            doc = parse_announcement(raw, swarm_id=self.swarm_id, arch_hash=self.arch_hash)
            first = self.view.observe(sender, doc, now, own_round=self.round)
        except AnnouncementRejected as exc:
            self.counters.reject(f"announcement_{exc.reason}")
            if self._ignored_announcers.add(sender, now) and self._ignored_warnings.allow(now):
                suppressed = self._ignored_warnings.take_suppressed()
                log.warning(
                    "ignoring peer %s: %s (%s)%s",
                    sender,
                    exc.reason.replace("_", " "),
                    exc,
                    f"; {suppressed} similar warning(s) suppressed" if suppressed else "",
                )
                self._emit("peer_ignored", sender=sender, reason=exc.reason, detail=str(exc))
            return
        if first and self._discovered.add(sender, now):  # once per peer, even if it leaves the view and comes back
            self._announce_soon.set()  # let the newcomer hear of us without waiting a whole announce interval
            self._emit("peer_discovered", sender=sender, node=doc["node_id"])
            try:
                self.p.hooks.quinkgl_on_peer_discovered(peer_id=sender)
            except Exception as exc:  # raised inside a transport callback: surface it from the round loop
                self._callback_error = exc
        self._notify()

    def _on_payload(self, sender: str, payload: bytes) -> None:
        """A pushed update: nobody asked for it, so it is counted and dropped without being decoded."""
        self.counters.reject("unsolicited")

    def _on_peer_lost(self, sender: str) -> None:
        if self.view is not None:
            self.view.forget(sender)
        self._notify()

    async def _on_request(self, sender: str, message: bytes) -> bytes:
        """Serve our model of the asked round once it is trained (or the newest, when we are past it); with a
        peer-sampling topology, answer its requests and read the announcement every request carries."""
        try:
            if self.sampling is not None:
                answer = await self.sampling.handle(sender, message)
                if answer is not None:
                    return answer
                message = self.sampling.unwrap(sender, message)
            wanted, wait = pull.parse_request(message, swarm_id=self.swarm_id)
            if self.view is None or not self.view.admits(sender):
                raise RequestRefused("unknown_peer", "announce a compatible manifest first")
            with trio.move_on_after(min(wait, self.options.gossip_interval)):
                # We are training that round (or are a few rounds behind it, within the staleness tolerance): wait
                # for it. A requester ahead of us is paced by our answer instead of racing further ahead.
                while not self._can_serve(wanted) and self.round >= wanted - 1 - self.options.staleness:
                    if self.done:
                        break
                    await self._changed.wait()
            if self._served is None or not self._can_serve(wanted - self.options.staleness):
                raise RequestRefused("behind", f"asked for round {wanted}, newest here is {self.pushed}")
        except RequestRefused as exc:
            self.counters.reject(f"request_{exc.reason}")
            raise
        self.counters.updates_sent += 1
        return self._served[1]

    def admits(self, peer_id: str) -> bool:
        """Whether this peer exchanges anything with ``peer_id`` (in the view; a member, in a certified swarm).

        Transports may call it before reading any bytes from ``peer_id``. With a peer-sampling topology a first
        contact is let through to the request handler, which reads its announcement before answering."""
        if self.view is None:
            return False
        return self.view.admits(peer_id) or (self.sampling is not None and self.sampling.admits_stranger())

    def _can_serve(self, round_idx: int) -> bool:
        return self._served is not None and self._served[0] >= round_idx

    # -- announcements (discovery and liveness only: no round waits on them) -----------------------------------

    def _announcement(self) -> bytes:
        last = self.history[-1] if self.history else {}
        metrics = {k: last[k] for k in ("val_accuracy", "val_loss", "round") if last.get(k) is not None}
        return encode_announcement(
            swarm_id=self.swarm_id,
            arch_hash=self.arch_hash,
            node_id=self.options.node_id,
            round_idx=self.round,
            pushed=self.pushed,
            done=self.done,
            metrics=metrics,
            metadata=self.metadata,
            cert=self.p.membership_cert.to_dict() if self.p.membership_cert is not None else None,
        )

    async def _announce(self) -> None:
        if self.sampling is not None:
            return  # a peer-sampling peer broadcasts nothing: its requests carry its announcement
        doc = self._announcement()
        try:
            await self.p.transport.announce(doc)
        except Exception as exc:  # a failed announcement is retried on the next tick
            log.debug("announce failed: %s", exc)

    async def _announce_loop(self) -> None:
        while True:
            self._announce_soon = trio.Event()
            await self._announce()
            await trio.sleep(MIN_ANNOUNCE_GAP_S)
            with trio.move_on_after(max(0.0, self.options.announce_interval - MIN_ANNOUNCE_GAP_S)):
                await self._announce_soon.wait()

    # -- pulling models ------------------------------------------------------------------------------------------

    def _source_candidates(self, now: float) -> list[PeerCandidate]:
        """Compatible peers heard from recently (finished ones too: they serve their last model while they
        linger), minus the avoided ones and those a probe still waits on; sorted, so that the topology's seeded
        choice does not depend on the order in which announcements arrived."""
        assert self.view is not None
        if self.sampling is not None:  # the sampler's partial view, with what the peers told us of themselves
            known = self.view.peers
            return [
                PeerCandidate(p, known[p].round, dict(known[p].metadata)) if p in known else PeerCandidate(p)
                for p in sorted(self.sampling.sampler.sampled_peers())
                if self._askable(p) and not (p in known and known[p].done)
            ]
        return [
            PeerCandidate(p.peer_id, p.round, dict(p.metadata))
            for p in sorted(self.view.peers.values(), key=lambda p: p.peer_id)
            if now - p.last_seen <= self.view.timeout and self._askable(p.peer_id)
        ]

    def _askable(self, peer_id: str) -> bool:
        """Not avoided this round, and no probe of ours still waits on it."""
        return not self.avoided.avoids(peer_id, self.round) and peer_id not in self._probing

    def _pick_sources(self, round_idx: int) -> tuple[int, list[str]]:
        """How many answers the round needs, and the sources in the order to ask them: the topology's picks
        first, then the other candidates at random (replacements, and extra sources when the rule needs more
        inputs than the topology's fanout)."""
        if self.sampling is not None:
            self.sampling.round_started()
        candidates = self._source_candidates(trio.current_time())
        me = PeerCandidate(self.peer_id, round_idx, dict(self.metadata))
        picks = [
            t for t in self.p.topology.select(self.peer_id, [me, *candidates], round_idx, self.rng) if t != self.peer_id
        ]
        rest = [c.peer_id for c in candidates if c.peer_id not in picks]
        self.rng.shuffle(rest)
        need = max(len(picks), int(getattr(self.p.aggregator, "min_updates", 0) or 0), 1)
        return need, [*dict.fromkeys(picks), *rest]

    def _deadline(self, pulled: float, cap: float, floor: float) -> float:
        """When a round's pull stops waiting: ``pulled`` (when it began) + the wait learned from recent answer
        times (median + 4·MAD, at least ``floor``), never after ``cap`` (``--gossip-interval`` from the round's
        start) — but at least the floor from ``pulled``, so a round whose training ran long still asks. Without
        any observed answer yet, the cap."""
        learned = self.answer_times.deadline()
        deadline = cap if learned is None else min(cap, pulled + max(floor, learned))
        return max(deadline, pulled + pull.DEADLINE_FLOOR_S)

    async def _pull(
        self,
        round_idx: int,
        need: int,
        order: list[str],
        deadline: Callable[[], float],
        min_round: int,
        spare: int = 0,
    ) -> PullOutcome:
        """Ask sources from ``order`` (``need`` at a time, replacing failures) until ``need`` answered or the
        deadline passes; ``deadline()`` is re-read after every answer (each one teaches the learned deadline).
        Asking a never-answered source opens one of ``spare`` extra slots (runtime/sources.py: fake IDs) and
        runs as a probe (:meth:`_probe`). Sources still pending at the deadline are avoided for the next rounds."""
        outcome = PullOutcome()
        queue = list(order)
        spares = [spare]
        pending: set[str] = set()
        probed: set[str] = set()

        async def ask_next() -> None:
            while queue and len(outcome.received) < need:
                source = queue.pop(0)
                probe = spares[0] > 0 and not self.sources.proven(source)  # it may never answer: keep our pace
                if probe and len(self._probing) >= sources.MAX_PROBES_IN_FLIGHT:
                    continue
                pending.add(source)
                outcome.asked += 1
                if probe:
                    spares[0] -= 1
                    nursery.start_soon(ask_next)
                    probed.add(source)
                    update = await self._probe(source, round_idx, timer.deadline, min_round, outcome)
                else:
                    update = await self._fetch(source, round_idx, timer.deadline, min_round, outcome)
                pending.discard(source)
                timer.deadline = min(timer.deadline, deadline())
                if update is not None:
                    outcome.received.append(update)
                    if len(outcome.received) >= need:
                        nursery.cancel_scope.cancel()  # quorum: the round closes now
                    return

        with trio.move_on_at(deadline()) as timer:
            async with trio.open_nursery() as nursery:
                for _ in range(min(need, len(queue))):
                    nursery.start_soon(ask_next)
        if timer.cancelled_caught:
            for source in pending - probed:  # a probe judges its source itself, at its own deadline
                self._missed(source, round_idx)
        outcome.received.sort(key=lambda u: u.sender)
        return outcome

    def _missed(self, source: str, round_idx: int) -> None:
        self.avoided.missed(source, round_idx)
        self.sources.missed(source)
        log.info("source %s did not answer round %d in time; avoiding it for a while", source, round_idx)

    async def _probe(
        self, source: str, round_idx: int, deadline: float, min_round: int, outcome: PullOutcome
    ) -> ModelUpdate | None:
        """Ask a never-answered source on a spare slot. The request runs in the peer's own nursery until the
        round's deadline, not only until its quorum: a slow newcomer (a late joiner still training the round)
        that answers after the quorum is proven for the next rounds (its answer is not used), and one still
        silent at the deadline (a tarpit, a fake ID) is avoided for 1, 2, 4 … rounds. The pull sees the answer
        if it comes before its quorum."""
        answered = trio.Event()
        result: list[ModelUpdate | None] = [None]

        async def ask() -> None:
            try:
                with trio.move_on_at(deadline) as scope:
                    result[0] = await self._fetch(source, round_idx, deadline, min_round, outcome)
                if scope.cancelled_caught:
                    self._missed(source, round_idx)
            finally:
                self._probing.discard(source)
                answered.set()

        assert self._probes is not None
        self._probing.add(source)
        self._probes.start_soon(ask)
        await answered.wait()
        return result[0]

    async def _fetch(
        self, source: str, round_idx: int, deadline: float, min_round: int, outcome: PullOutcome
    ) -> ModelUpdate | None:
        """One source's answer, decoded and checked; None (counted) when it fails. A source still training the
        round waits for it only part of our time left, then sends its newest model (if not too stale)."""
        asked = trio.current_time()
        request = pull.encode_request(
            swarm_id=self.swarm_id, round_idx=round_idx, wait=pull.WAIT_SHARE * (deadline - asked)
        )
        if self.sampling is not None:
            request = self.sampling.wrap(request)
        try:
            payload = await self.p.transport.request(source, request, timeout=deadline - asked)
        except TransportError as exc:
            self.counters.send_failures += 1
            outcome.behind += "refused the request: behind" in str(exc)  # how both transports word it
            log.info("source %s failed: %s", source, exc)
            return None
        outcome.answered += 1
        self.answer_times.observe(trio.current_time() - asked)
        with trio.CancelScope(shield=True):  # bounded CPU work: finish it even when the round closes meanwhile
            update = await self._decode(source, payload, min_round)
        if update is not None:
            self.avoided.answered(source)
            self.sources.answered(source, trio.current_time())
        return update

    async def _decode(self, source: str, payload: bytes, min_round: int) -> ModelUpdate | None:
        try:
            decoded = await self._work(
                lambda: wire.decode_update(
                    payload, expected=self.expected, swarm_id=self.swarm_id, max_bytes=self.max_update
                )
            )
        except wire.WireRejected as exc:
            self.counters.reject(exc.reason.value)
            log.warning("rejected update from %s: %s (%s)", source, exc.reason.value, exc.detail)
            return None
        header = decoded.header
        if header.sender != source:
            self.counters.reject("sender_mismatch")
            return None
        if header.round < min_round:
            self.counters.reject("stale_round")
            return None
        if header.round > self.round + MAX_ROUND_LEAD:  # round 2**53 must not outrank every real update
            self.counters.reject("far_future_round")
            return None
        self.counters.updates_accepted += 1
        return ModelUpdate(source, header.round, header.num_samples, decoded.tensors, header.metadata)

    # -- before the first round --------------------------------------------------------------------------------

    async def _wait_for_first_peer(self) -> None:
        """Give peers started at the same time a moment to appear, so round 1 is already a shared one."""
        assert self.view is not None
        if self.options.isolated or self.completed >= self.options.rounds:
            return
        with trio.move_on_after(self.options.discovery_wait):
            while len(self.view.alive(trio.current_time())) < self.options.min_peers:
                with trio.move_on_after(1.0):
                    await self._changed.wait()
        if not self.view.alive(trio.current_time()):
            # Never train alone silently: say why nobody was found (transports may offer a diagnosis).
            explain = getattr(self.p.transport, "connectivity_hint", None)
            hint = "no peer of the swarm found yet"
            if explain is not None:
                try:
                    with trio.move_on_after(15):
                        hint = await explain()
                except Exception as exc:
                    hint = f"no peer of the swarm found yet (diagnosis failed: {exc!r})"
            log.warning("%s\n  training alone until peers appear", hint)

    async def _catch_up(self) -> None:
        """A peer far behind the swarm (no checkpoint, or an old one) first averages the newest models of at
        least two peers with the manifest's rule and adopts the swarm's round, instead of training from an old
        model and offering it as current."""
        if self.options.isolated or self.completed >= self.options.rounds:
            return
        assert self.view is not None
        with trio.move_on_after(self.options.announce_interval):  # peers answer a newcomer's announcement at once
            while len(self.view.alive(trio.current_time())) < CATCH_UP_SOURCES:
                await self._changed.wait()
        candidates = self._source_candidates(trio.current_time())
        # the median announced round: one peer racing ahead (or lying about its round) does not set it
        swarm_round = statistics.median_low([c.last_round for c in candidates]) if candidates else 0
        if swarm_round - self.completed <= self.options.staleness:
            return
        order = [c.peer_id for c in sorted(candidates, key=lambda c: abs(c.last_round - swarm_round))]
        started = trio.current_time()
        need = max(CATCH_UP_SOURCES, int(getattr(self.p.aggregator, "min_updates", 0) or 0))
        cap = started + self.options.gossip_interval
        outcome = await self._pull(
            pull.NEWEST, need, order, lambda: cap, min_round=swarm_round - self.options.staleness
        )
        if not outcome.received:
            log.warning("could not catch up with the swarm at round %d: no peer answered", swarm_round)
            return
        first, *others = outcome.received
        if others:
            await self._work(self._aggregate, first, others)
        else:
            await self._work(self.p.model.load_state_dict, dict(first.tensors))
        adopted = min(statistics.median_low([u.round for u in outcome.received]), self.options.rounds)
        self.completed = self.round = self.pushed = adopted
        seconds = trio.current_time() - started
        log.info(
            "caught up with the swarm at round %d from %d peer(s) in %.2f s", adopted, len(outcome.received), seconds
        )
        self._emit("caught_up", round=adopted, peers=[u.sender for u in outcome.received], seconds=round(seconds, 3))

    # -- the round ---------------------------------------------------------------------------------------------

    def _train(self) -> Any:
        steps = self.options.steps_for(_batches_per_epoch(self.p.train_data))
        return train_steps(
            self.p.model, self.p.optimizer, self.stream, steps, self.p.loss_fn, self.options.device, self.p.classify
        )

    def _snapshot(self) -> dict[str, Any]:
        return {name: t.detach().clone() for name, t in self.p.model.state_dict().items()}

    def _encode(self, tensors: dict[str, Any], round_idx: int) -> bytes:
        return wire.encode_update(
            tensors,
            swarm_id=self.swarm_id,
            sender=self.peer_id,
            round=round_idx,
            num_samples=self.p.num_samples,
            metadata=self.metadata,
        )

    def _aggregate(self, own: ModelUpdate, received: list[ModelUpdate]) -> Any:
        result = self.p.aggregator.aggregate(own, received)
        self.p.model.load_state_dict(result.tensors)
        return result

    def _evaluate(self) -> Any:
        return evaluate(
            self.p.model,
            self.p.val_data,
            self.p.loss_fn,
            self.options.device,
            self.p.classify,
            self.options.max_eval_batches,
        )

    def _checkpoint(self, round_idx: int, metrics: dict[str, Any], view: dict[str, Any]) -> None:
        # Runs in a worker thread: ``view`` is a snapshot taken on the event loop, which keeps changing the view.
        store = self.p.store
        if store is None:
            return
        store.save(
            round_idx,
            self.p.model.state_dict(),
            self.p.optimizer.state_dict(),
            metrics,
            view,
            extra={"swarm_id": self.swarm_id, "arch_hash": self.arch_hash, "node_id": self.options.node_id},
        )
        store.metrics_log.append(metrics)

    def _raise_callback_error(self) -> None:
        if self._callback_error is not None:
            raise self._callback_error

    async def _publish(self, own_tensors: dict[str, Any], round_idx: int) -> None:
        """Make this round's model available to the peers that ask for it."""
        attack = self.p.attack  # --byzantine seam (2/2): a hostile peer serves its attack, and pushes it to all
        outgoing = own_tensors if attack is None else await self._work(attack.outgoing, own_tensors)
        payload = await self._work(self._encode, outgoing, round_idx)
        self._served = (round_idx, payload)
        self.pushed = round_idx
        self._notify()
        if attack is not None and attack.push_all and self.view is not None:
            async with trio.open_nursery() as sends:  # honest peers drop these unread (unsolicited)
                for candidate in self.view.candidates(trio.current_time()):
                    sends.start_soon(self._push, candidate.peer_id, payload)

    async def _push(self, target: str, payload: bytes) -> None:
        try:
            await self.p.transport.send(target, payload, timeout=min(10.0, self.options.gossip_interval))
        except Exception as exc:  # a hostile simulated peer's push; nobody asked for it
            log.debug("push to %s failed: %s", target, exc)

    async def _round(self, round_idx: int) -> dict[str, Any]:
        assert self.view is not None
        self._raise_callback_error()
        started = trio.current_time()
        self.round = round_idx
        self._notify()
        if self.p.attack is not None:  # --byzantine seam (1/2): the model the hostile update is measured from
            self.p.attack.begin_round(await self._work(self._snapshot))
        known: tuple[bytes, ...] = ()
        if not self.options.isolated:  # the models recent rounds started from: an answer bit-equal to one of them
            # is a stale copy (a source up to --staleness rounds behind still serves the model we adopted back then)
            self.start_digests.append(await self._work(sources.model_digest, self.p.model.state_dict()))
            known = tuple(self.start_digests)
        trained = await self._work(self._train)
        if self.p.conditions is not None:  # simulator seam: a slow peer's training takes longer
            await self.p.conditions.after_train(self, trio.current_time() - started)
        train_seconds = trio.current_time() - started
        own_tensors = await self._work(self._snapshot)
        outcome, need = PullOutcome(), 0
        if not self.options.isolated:
            await self._publish(own_tensors, round_idx)
            need, order = self._pick_sources(round_idx)
            order, spare = self.sources.queue(order, self.p.transport.connected_peers(), need)
            pulled, cap = trio.current_time(), started + self.options.gossip_interval
            floor = max(pull.DEADLINE_FLOOR_S, train_seconds)  # a source that trains as fast as we do is not late
            outcome = await self._pull(
                round_idx,
                need,
                order,
                lambda: self._deadline(pulled, cap, floor),
                min_round=round_idx - self.options.staleness,
                spare=spare,
            )
            if outcome.received:
                self.paces.append(trio.current_time() - started)
            else:  # pacing: a round nobody answered keeps the swarm's pace (docs/runtime.md, "Pacing and resync")
                pace = statistics.median(self.paces) if self.paces else pulled - started + floor
                # sources behind us: wait for them as long as a round may last instead of running further ahead
                await trio.sleep_until(cap if outcome.behind else min(cap, started + pace))
        self._raise_callback_error()
        received = outcome.received
        if received:  # k senders serving one model (or ours, or our round's start) count once: the cheapest Sybils
            received, duplicates = await self._work(sources.distinct_updates, received, own_tensors, known)
            for _ in range(duplicates):
                self.counters.reject("duplicate_model")
        own = ModelUpdate(self.peer_id, round_idx, self.p.num_samples, own_tensors, self.metadata)
        used: tuple[str, ...] = ()
        samples = self.p.num_samples
        if received:
            result = await self._work(self._aggregate, own, received)
            used = tuple(s for s in result.used if s != self.peer_id)
            samples = sum(u.num_samples for u in (own, *received) if u.sender in result.used)
            log.info(
                "aggregated models from %d peer(s) in round %d: %s (%d samples)",
                len(used),
                round_idx,
                ", ".join(used),
                samples,
            )
            self._emit(
                "aggregated", round=round_idx, peers=list(used), samples=samples, inputs=[u.sender for u in received]
            )
            self.p.hooks.quinkgl_on_aggregation_done(peer_ids=list(used), sample_count=samples)
        elif not self.options.isolated:
            log.info("no source answered in round %d; keeping the local model", round_idx)
        fell_back = not self.options.isolated and len(received) < max(1, self.p.aggregator.min_updates)
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
            "sources_needed": need,
            "sources_asked": outcome.asked,
            "sources_answered": outcome.answered,
            "sources_used": len(used),
            "fell_back": fell_back,
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
            "relayed_bytes": stats.relayed_bytes,
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
        self.p.hooks.quinkgl_on_metrics(record=metrics, counters=self.summary())  # exporters (quinkgl_on_metrics)
        await self._work(self._checkpoint, round_idx, metrics, self.view.snapshot())
        self.completed = round_idx
        self._emit("round_end", **metrics)
        self._resync(round_idx, received)
        return metrics

    def _resync(self, round_idx: int, received: list[ModelUpdate]) -> None:
        """A peer whose answers say it trails the swarm by more than the staleness tolerance (after a partition,
        a stall) adopts the swarm's round: the median (``median_low``) of the answers' rounds, from at least
        :data:`CATCH_UP_SOURCES` answers, so one source alone, or a minority claiming a far round, never moves it.
        Its sources would otherwise refuse it as ``behind`` and its models would reach nobody."""
        if len(received) < CATCH_UP_SOURCES:
            return
        swarm_round = min(statistics.median_low([u.round for u in received]), self.options.rounds)
        if swarm_round - round_idx <= self.options.staleness:
            return
        self.completed = self.round = swarm_round
        self._notify()
        log.info("adopted the swarm's round %d (was %d): the sources answered from ahead", swarm_round, round_idx)
        self._emit("resynced", round=swarm_round, was=round_idx, peers=[u.sender for u in received])

    async def _linger(self) -> None:
        """After the last round keep serving the final model while peers we know are still running (they may
        have picked us as a source), at most ``--gossip-interval``."""
        assert self.view is not None
        if self.options.isolated:
            return
        with trio.move_on_after(self.options.gossip_interval):
            while self._peers_still_running():
                with trio.move_on_after(1.0 if self.sampling is None else 0.25):
                    await self._changed.wait()

    def _peers_still_running(self) -> bool:
        """Announced peers: some peer we know has not announced ``done``. With peer sampling (no broadcast
        announcements) a peer was asked for something within the last two rounds' time (at least 2 s)."""
        assert self.view is not None
        now = trio.current_time()
        if self.sampling is None:
            return bool(self.view.alive(now))
        last_round = self.history[-1]["round_seconds"] if self.history else 0.0
        return now - self.sampling.last_contact < max(2.0, 2 * last_round)

    async def run(self) -> list[dict[str, Any]]:
        """Run the remaining rounds; return the metrics of each round run."""
        self.p.transport.set_handlers(
            on_announcement=self._on_announcement,
            on_payload=self._on_payload,
            on_peer_lost=self._on_peer_lost,
            on_request=self._on_request,
            admits=self.admits,
        )
        try:
            await self._run_rounds()
        finally:
            if self.p.store is not None:
                self.p.store.release_lock()
        self._emit("finished", rounds=self.completed)
        return self.history

    async def _run_rounds(self) -> None:
        refused: QuinkGLError | None = None
        async with self.p.transport:
            # The peer ID is known once the transport runs: a certificate for another peer stops us here (raised
            # after the transport has closed, so it is reported as the reason, not as a failure to close).
            try:
                check_own_certificate(
                    self.p.manifest, self.p.membership_cert, self.peer_id, self.options.membership_cert or ""
                )
            except QuinkGLError as exc:
                refused = exc
            else:
                await self._serve()
        if refused is not None:
            raise refused

    async def _serve(self) -> None:
        """The round loop, inside the running transport."""
        gate = None
        if getattr(self.p.manifest, "membership", "open") == "certified":
            gate = MembershipGate(self.swarm_id, self.p.manifest.creator_pubkey)
        self.view = PeerView(self.peer_id, self.options.peer_timeout, gate=gate)
        async with trio.open_nursery() as nursery:
            self._probes = nursery
            if self.sampling is not None:
                self.sampling.sampler.bind(self.sampling)
                nursery.start_soon(self.sampling.run)
            else:
                nursery.start_soon(self._announce_loop)
            self._emit("started", start_round=self.completed, rounds=self.options.rounds)
            await self._wait_for_first_peer()
            await self._catch_up()
            next_round = self.completed + 1
            while next_round <= self.options.rounds:
                if self.p.conditions is not None and not await self.p.conditions.before_round(self, next_round):
                    next_round += 1  # simulator seam: churn took this peer offline for the round
                    continue
                next_round = max(next_round, self.completed + 1)  # a rejoined peer may have caught up
                await self._round(next_round)
                next_round = self.completed + 1  # a resync may skip rounds (_resync)
            self.done = True
            self._notify()
            await self._announce()
            await self._linger()
            nursery.cancel_scope.cancel()

    def final_checkpoint(self) -> None:
        """Save the model as it stands under the last completed round (after an interruption)."""
        if self.p.store is None or self.view is None:
            return
        try:
            self.p.store.acquire_lock()  # released when the run ended; another process may have taken it since
        except QuinkGLError as exc:
            log.warning("no final checkpoint: %s", exc)
            return
        try:
            last = self.history[-1] if self.history else {"round": self.completed}
            self.p.store.save(
                self.completed,
                self.p.model.state_dict(),
                self.p.optimizer.state_dict(),
                last,
                self.view.snapshot(),
                extra={
                    "swarm_id": self.swarm_id,
                    "arch_hash": self.arch_hash,
                    "node_id": self.options.node_id,
                    "interrupted": True,
                },
            )
        finally:
            self.p.store.release_lock()

    def summary(self) -> dict[str, Any]:
        """Final numbers for the peer's summary line / table."""
        last = self.history[-1] if self.history else {}
        stats = self.p.transport.stats()
        rounds = [m for m in self.history if "fell_back" in m]
        return {
            "node_id": self.options.node_id,
            "peer_id": self.peer_id,
            "rounds": self.completed,
            "val_accuracy": last.get("val_accuracy"),
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
            "relayed_bytes": stats.relayed_bytes,
            "updates_accepted": self.counters.updates_accepted,
            "updates_rejected": self.counters.updates_rejected + sum(stats.rejected.values()),
            "rejected": {**self.counters.rejected, **dict(stats.rejected)},
            "sources_asked": sum(m["sources_asked"] for m in rounds),
            "sources_answered": sum(m["sources_answered"] for m in rounds),
            "sources_used": sum(m["sources_used"] for m in rounds),
            "fell_back": sum(1 for m in rounds if m["fell_back"]),
            "announcements_handled": self.announcements_handled,
            "carried_announcements": self.carried_announcements,
            "requests_served": self.counters.updates_sent,
            "requests_refused": sum(v for k, v in self.counters.rejected.items() if k.startswith("request_")),
            "sampling_exchanges": self.sampling.exchanges if self.sampling is not None else 0,
            "known_peers": len(self.view.peers) if self.view is not None else 0,
        }


def _batches_per_epoch(loader: Any) -> int:
    try:
        return len(loader)
    except TypeError:
        return 100
