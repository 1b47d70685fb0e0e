"""CyclonTopology: Cyclon peer sampling (Voulgaris et al., 2005) running inside a peer.

In a runtime with peer sampling (:mod:`quinkgl.sampling`, docs/peer-sampling.md) the topology is a
:class:`~quinkgl.sampling.PeerSampler`: it keeps a :class:`~quinkgl_topo.cyclon_protocol.CyclonView` of at most
``view_size`` signed descriptors and, once per round, shuffles ``shuffle_length`` of them with its oldest
neighbour through the runtime's sampling channel (request/response over the transport). While its view is
empty it introduces itself to its bootstrap contacts. ``select`` then picks ``fanout`` random peers of the view
as the round's sources. Nothing else tells it about the swarm: no announcements, no full membership.

Unbound (no channel: a runtime without peer sampling, or a unit test) it falls back to a Cyclon-style aged view
over the candidates it is given each round:

1. drop view entries that are no longer among the candidates, age the rest by one and top the view up with
   random candidates not in it (age 0);
2. target the oldest entry (ties broken by the rng) plus ``fanout - 1`` random other entries;
3. shuffle: evict the oldest entry and ``shuffle_length - 1`` random others, and refill the view with random
   candidates, preferring ones that were not just evicted.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

from quinkgl.datapolicy import collaboration_mode, collaborators
from quinkgl.sampling import SamplingChannel
from quinkgl.topology import PeerCandidate
from quinkgl.transport import RequestRefused, TransportError
from quinkgl_topo.cyclon_protocol import (
    MAX_ADDRS,
    CyclonView,
    Descriptor,
    ShuffleRejected,
    decode_shuffle,
    encode_shuffle,
    make_descriptor,
)
from quinkgl_topo.params import CyclonTopologyParams

log = logging.getLogger("quinkgl.cyclon")
SHUFFLE = b"S"  # body kinds: a shuffle, or a newcomer's introduction (answered with the answerer's descriptor)
INTRO = b"I"
DESCRIPTOR_REFRESH_S = 60.0  # our own descriptor is re-signed this often (or when our addresses change)


class CyclonTopology:
    """Cyclon peer sampling (bound to a sampling channel), or an aged view over the candidates (unbound)."""

    def __init__(self, params: CyclonTopologyParams | None = None, manifest: Any = None):
        self.params = params or CyclonTopologyParams()
        self.view: dict[str, int] = {}  # unbound only: peer ID -> age in rounds
        self.collaboration = collaboration_mode(manifest)
        self.sampling_interval = self.params.shuffle_interval
        self.channel: SamplingChannel | None = None
        self.cyclon: CyclonView | None = None
        self._own_descriptor: Descriptor | None = None

    # -- peer sampling (quinkgl.sampling.PeerSampler) ------------------------------------------------------------

    def bind(self, channel: SamplingChannel) -> None:
        """Start the protocol: the runtime's transport runs and our peer ID is known."""
        self.channel = channel
        self.cyclon = CyclonView(
            self._own,
            view_size=self.params.view_size,
            shuffle_length=min(self.params.shuffle_length, self.params.view_size),
            rng=random.Random(),
            verify=channel.verify,
        )

    def _own(self) -> Descriptor:
        assert self.channel is not None
        addrs = tuple(self.channel.addrs)
        now_ms = int(time.time() * 1000)
        cached = self._own_descriptor
        stale = cached is None or now_ms - cached.issued > DESCRIPTOR_REFRESH_S * 1000
        if cached is None or stale or cached.addrs != addrs[:MAX_ADDRS]:
            cached = self._own_descriptor = make_descriptor(self.channel.own_id, addrs, now_ms, self.channel.sign)
        return cached

    def sampled_peers(self) -> list[str]:
        return self.cyclon.peers() if self.cyclon is not None else []

    def _encode(self, kind: bytes, entries: list[Descriptor]) -> bytes:
        """A body within the channel's request cap: entries are dropped from the end until it fits."""
        assert self.channel is not None
        body = kind + encode_shuffle(entries)
        while len(body) > self.channel.max_body_bytes and len(entries) > 1:
            entries = entries[:-1]
            body = kind + encode_shuffle(entries)
        return body

    def _learn(self, entries: Sequence[Descriptor], via: str) -> None:
        """Hand the transport the addresses of descriptors the view took in (their signatures were checked)."""
        assert self.channel is not None and self.cyclon is not None
        for descriptor in entries:
            if self.cyclon.entries.get(descriptor.peer_id) is not None and descriptor.addrs:
                held = self.cyclon.entries[descriptor.peer_id]
                if held.signature == descriptor.signature:
                    self.channel.learn_addrs(descriptor.peer_id, descriptor.addrs, via)

    async def step(self) -> None:
        """One shuffle with the oldest neighbour; with an empty view, an introduction to each bootstrap contact."""
        channel, view = self.channel, self.cyclon
        if channel is None or view is None:
            return
        if not view.entries:
            for contact in channel.bootstrap:
                await self._exchange(contact, INTRO, view.start_intro(contact))
            return
        started = view.start_shuffle()
        if started is not None:
            target, sent = started
            await self._exchange(target, SHUFFLE, sent)

    async def _exchange(self, target: str, kind: bytes, sent: list[Descriptor]) -> None:
        assert self.channel is not None and self.cyclon is not None
        try:
            raw = await self.channel.request(target, self._encode(kind, sent), timeout=self.params.shuffle_timeout)
            answer = decode_shuffle(raw, max_entries=self.cyclon.shuffle_length)
        except (TransportError, ShuffleRejected) as exc:
            log.debug("shuffle with %s failed: %s", target, exc)
            self.cyclon.shuffle_failed(target)  # it stays out of the view: how departed peers disappear
            return
        self.cyclon.finish_shuffle(target, answer)
        self._learn(answer, via=target)

    async def answer(self, sender: str, body: bytes) -> bytes:
        """Answer a shuffle (or a newcomer's introduction: our own descriptor first) and merge what came."""
        view = self.cyclon
        if view is None:
            raise RequestRefused("not_ready")
        kind, payload = body[:1], body[1:]
        if kind not in (SHUFFLE, INTRO):
            raise RequestRefused("bad_shuffle", "unknown message kind")
        try:
            received = decode_shuffle(payload, max_entries=view.shuffle_length)
        except ShuffleRejected as exc:
            raise RequestRefused("bad_shuffle", str(exc)) from None
        answer = view.answer_shuffle(sender, received)
        self._learn(received, via=sender)
        if kind == INTRO:
            answer = [self._own(), *answer[: view.shuffle_length - 1]]
        return encode_shuffle(answer)

    # -- source selection -----------------------------------------------------------------------------------------

    def _refill(self, pool: Sequence[str], rng: random.Random, avoid: Iterable[str] = ()) -> None:
        """Top the view up to ``view_size`` with random pool members, taking ``avoid`` ones only as a last resort."""
        avoid = set(avoid)
        for tier in ([p for p in pool if p not in self.view and p not in avoid], [p for p in pool if p in avoid]):
            room = self.params.view_size - len(self.view)
            if room <= 0:
                return
            for peer_id in rng.sample(tier, min(room, len(tier))):
                self.view[peer_id] = 0

    def select(self, own_id: str, candidates: Sequence[PeerCandidate], round_idx: int, rng: random.Random) -> list[str]:
        """Bound: ``fanout`` random peers of the Cyclon view. Unbound: age the aged view, target its oldest entry
        plus random ones, then swap ``shuffle_length`` entries."""
        candidates = collaborators(own_id, candidates, self.collaboration)
        if self.cyclon is not None:
            in_view = self.cyclon.entries
            pool = sorted({c.peer_id for c in candidates if c.peer_id != own_id and c.peer_id in in_view})
            return rng.sample(pool, min(self.params.fanout, len(pool)))
        pool = sorted({c.peer_id for c in candidates if c.peer_id != own_id})
        known = set(pool)
        self.view = {peer_id: age + 1 for peer_id, age in sorted(self.view.items()) if peer_id in known}
        self._refill(pool, rng)
        if not self.view:
            return []

        entries = sorted(self.view)  # sorted: deterministic for one rng whatever the insertion order
        eldest_age = max(self.view.values())
        oldest = rng.choice([p for p in entries if self.view[p] == eldest_age])
        others = [p for p in entries if p != oldest]
        targets = [oldest, *rng.sample(others, min(self.params.fanout - 1, len(others)))]

        evicted = [oldest, *rng.sample(others, min(self.params.shuffle_length - 1, len(others)))]
        for peer_id in evicted:
            del self.view[peer_id]
        self._refill(pool, rng, avoid=evicted)
        return targets
