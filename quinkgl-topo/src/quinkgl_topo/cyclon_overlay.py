"""A protocol-only Cyclon overlay: N peers shuffling in one process, no training, for measuring the overlay.

Used by ``bench/bench_cyclon.py`` and the tests: it answers the questions peer sampling is judged by — do views
stay full, is the in-degree balanced (compared with uniform sampling over full membership), is the overlay one
connected component, and how many cycles until a departed peer has vanished from every view.
Descriptors are signed with a cheap stand-in (the protocol's signature checks are tested with real Ed25519
keys separately); the stand-in still lets a verifier reject forged descriptors.
"""

from __future__ import annotations

import hashlib
import random
import statistics
from collections.abc import Iterable

import attrs

from quinkgl_topo.cyclon_protocol import CyclonView, Descriptor, encode_shuffle, make_descriptor


def _stand_in_sign(peer_id: str, data: bytes) -> bytes:
    return hashlib.blake2b(data, key=peer_id.encode()[:64], digest_size=16).digest()


def _stand_in_verify(peer_id: str, data: bytes, signature: bytes) -> bool:
    return _stand_in_sign(peer_id, data) == signature


@attrs.frozen
class OverlayStats:
    """One snapshot of the overlay."""

    peers: int
    full_views: int  # peers whose view holds view_size entries
    min_view: int
    in_degree_mean: float
    in_degree_std: float
    components: int  # weakly connected components among live peers
    dead_links: int  # view entries pointing at departed peers


class Overlay:
    """``n`` peers, each with a :class:`CyclonView`, bootstrapped from a ring lattice (each knows its successors)."""

    def __init__(
        self,
        n: int,
        *,
        view_size: int,
        shuffle_length: int,
        seed: int = 0,
        bootstrap: int = 1,
        measure_bytes: bool = False,
    ):
        self.rng = random.Random(seed)
        self.measure_bytes = measure_bytes  # encode every message to count its bytes (slower)
        self.messages = 0  # shuffle requests + answers delivered, since start
        self.bytes = 0
        self.view_size = view_size
        self.clock = 0
        self.alive: dict[str, CyclonView] = {}
        ids = [f"peer-{i:05d}" for i in range(n)]
        for peer_id in ids:
            self.alive[peer_id] = self._view(peer_id, shuffle_length)
        for index, peer_id in enumerate(ids):
            successors = [ids[(index + k) % n] for k in range(1, bootstrap + 1) if ids[(index + k) % n] != peer_id]
            self.alive[peer_id].seed(self.alive[s]._own() for s in successors)

    def _view(self, peer_id: str, shuffle_length: int) -> CyclonView:
        def own() -> Descriptor:
            return make_descriptor(
                peer_id, (f"/memory/{peer_id}",), self.clock, lambda data: _stand_in_sign(peer_id, data)
            )

        return CyclonView(
            own,
            view_size=self.view_size,
            shuffle_length=shuffle_length,
            rng=random.Random(f"{peer_id}:{self.rng.random()}"),
            verify=_stand_in_verify,
        )

    def cycle(self) -> None:
        """Every live peer starts one shuffle, in random order; a departed target counts as a failed shuffle."""
        self.clock += 1
        order = list(self.alive)
        self.rng.shuffle(order)
        for peer_id in order:
            view = self.alive.get(peer_id)
            if view is None:
                continue
            started = view.start_shuffle()
            if started is None:
                continue
            target, sent = started
            partner = self.alive.get(target)
            if partner is None:
                view.shuffle_failed(target)
                continue
            answer = partner.answer_shuffle(peer_id, sent)
            view.finish_shuffle(target, answer)
            self.messages += 2
            if self.measure_bytes:
                self.bytes += len(encode_shuffle(sent)) + len(encode_shuffle(answer))

    def leave(self, peer_ids: Iterable[str]) -> None:
        """Peers depart without a word, as a crashed or killed peer does."""
        for peer_id in peer_ids:
            self.alive.pop(peer_id, None)

    def holders_of(self, peer_id: str) -> int:
        """How many live views still name ``peer_id``."""
        return sum(peer_id in view.entries for view in self.alive.values())

    def stats(self) -> OverlayStats:
        in_degree = dict.fromkeys(self.alive, 0)
        dead = 0
        parent = {p: p for p in self.alive}

        def find(p: str) -> str:
            while parent[p] != p:
                parent[p] = parent[parent[p]]
                p = parent[p]
            return p

        for peer_id, view in self.alive.items():
            for other in view.entries:
                if other in in_degree:
                    in_degree[other] += 1
                    parent[find(peer_id)] = find(other)
                else:
                    dead += 1
        sizes = [len(v.entries) for v in self.alive.values()]
        degrees = list(in_degree.values())
        return OverlayStats(
            peers=len(self.alive),
            full_views=sum(s == self.view_size for s in sizes),
            min_view=min(sizes),
            in_degree_mean=statistics.fmean(degrees),
            in_degree_std=statistics.pstdev(degrees),
            components=len({find(p) for p in self.alive}),
            dead_links=dead,
        )


def uniform_in_degree_std(n: int, view_size: int, seed: int = 0) -> float:
    """In-degree std when every peer samples ``view_size`` peers uniformly from full membership (RandomTopology)."""
    rng = random.Random(seed)
    ids = list(range(n))
    degree = [0] * n
    for peer in ids:
        for other in rng.sample([i for i in ids if i != peer], view_size):
            degree[other] += 1
    return statistics.pstdev(degree)
