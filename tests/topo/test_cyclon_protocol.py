"""Cyclon peer sampling as a protocol: partial views from shuffles alone, signed descriptors, capped messages."""

from __future__ import annotations

import random

import pytest

from quinkgl import keys
from quinkgl_topo.cyclon_overlay import Overlay, uniform_in_degree_std
from quinkgl_topo.cyclon_protocol import (
    MAX_SHUFFLE_BYTES,
    CyclonView,
    Descriptor,
    ShuffleRejected,
    decode_shuffle,
    encode_shuffle,
    make_descriptor,
)

N, VIEW, SHUFFLE = 300, 12, 5


@pytest.fixture(scope="module")
def converged() -> Overlay:
    """300 peers that each start knowing ONE other peer (a ring), after 40 shuffle cycles."""
    overlay = Overlay(N, view_size=VIEW, shuffle_length=SHUFFLE, seed=3)
    for _ in range(40):
        overlay.cycle()
    return overlay


def test_views_fill_up_from_one_bootstrap_peer_and_the_overlay_is_one_component(converged):
    stats = converged.stats()
    assert stats.full_views == N
    assert stats.components == 1
    assert stats.dead_links == 0


def test_in_degree_is_more_balanced_than_uniform_sampling_over_full_membership(converged):
    stats = converged.stats()
    assert stats.in_degree_mean == pytest.approx(VIEW)
    assert stats.in_degree_std < uniform_in_degree_std(N, VIEW, seed=3)


def test_departed_peers_vanish_from_every_view_within_a_bounded_number_of_cycles():
    overlay = Overlay(N, view_size=VIEW, shuffle_length=SHUFFLE, seed=4)
    for _ in range(30):
        overlay.cycle()
    gone = [f"peer-{i:05d}" for i in range(0, N, 10)]
    overlay.leave(gone)
    assert overlay.stats().dead_links > 0
    bound = 4 * VIEW  # cycles
    for _ in range(bound):
        overlay.cycle()
        if overlay.stats().dead_links == 0:
            break
    assert all(overlay.holders_of(peer) == 0 for peer in gone), f"still held after {bound} cycles"
    stats = overlay.stats()
    assert stats.components == 1 and stats.min_view >= VIEW - 1


# -- one peer's side, with real Ed25519 signatures ------------------------------------------------------------


class Keyed:
    """A peer whose ID is its public key text, so anyone can check its descriptors from the ID alone."""

    def __init__(self, addr: str):
        self.key = keys.generate_private_key()
        self.peer_id = keys.public_key_text(self.key)
        self.addr = addr

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)

    def descriptor(self, issued: int = 1, addr: str | None = None) -> Descriptor:
        return make_descriptor(self.peer_id, (addr or self.addr,), issued, self.sign)


def ed25519_verify(peer_id: str, data: bytes, signature: bytes) -> bool:
    return keys.verify(peer_id, keys.PUBKEY_PREFIX + signature.hex(), data)


def view_of(peer: Keyed, view_size: int = 4, shuffle_length: int = 2) -> CyclonView:
    return CyclonView(
        peer.descriptor, view_size=view_size, shuffle_length=shuffle_length, rng=random.Random(0), verify=ed25519_verify
    )


def test_a_peer_cannot_forge_another_peers_address():
    me, victim, attacker = Keyed("/ip4/10.0.0.1/tcp/1"), Keyed("/ip4/10.0.0.2/tcp/1"), Keyed("/ip4/6.6.6.6/tcp/1")
    view = view_of(me)
    body = Descriptor(victim.peer_id, ("/ip4/6.6.6.6/tcp/1",), 5, b"")
    forged = Descriptor(victim.peer_id, body.addrs, 5, attacker.sign(body.signed_bytes()))
    view.seed([forged])
    assert victim.peer_id not in view.entries
    assert view.stats.rejected_signature == 1
    view.seed([victim.descriptor(issued=5)])
    assert view.entries[victim.peer_id].addrs == ("/ip4/10.0.0.2/tcp/1",)
    # A newer signed descriptor moves the peer; an older one (a replay) does not move it back.
    view.seed([victim.descriptor(issued=9, addr="/ip4/10.0.0.3/tcp/1")])
    view.seed([victim.descriptor(issued=7)])
    assert view.entries[victim.peer_id].addrs == ("/ip4/10.0.0.3/tcp/1",)


def test_a_shuffle_swaps_entries_and_a_silent_target_is_dropped():
    a, b = Keyed("/a"), Keyed("/b")
    others = [Keyed(f"/o{i}") for i in range(6)]
    view_a, view_b = view_of(a), view_of(b)
    view_a.seed([b.descriptor(), *(o.descriptor() for o in others[:3])])
    view_b.seed(o.descriptor() for o in others[3:])
    view_a.ages[b.peer_id] = 10  # b is the oldest entry: it is the one contacted
    target, sent = view_a.start_shuffle()
    assert target == b.peer_id and b.peer_id not in view_a.entries
    assert sent[0].peer_id == a.peer_id and len(sent) == 2  # a fresh self-descriptor + shuffle_length - 1
    raw_request = encode_shuffle(sent)
    answer = view_b.answer_shuffle(a.peer_id, decode_shuffle(raw_request, max_entries=2))
    assert a.peer_id in view_b.entries  # b learnt a from a's own signed descriptor
    view_a.finish_shuffle(target, decode_shuffle(encode_shuffle(answer), max_entries=2))
    assert {d.peer_id for d in answer} <= set(view_a.entries)
    assert len(view_a.entries) <= 4 and len(view_b.entries) <= 4
    # The next target never answers: it stays out of the view.
    target, _ = view_a.start_shuffle()
    view_a.shuffle_failed(target)
    assert target not in view_a.entries and view_a.stats.failed == 1
    # An answer nobody asked for is ignored.
    before = dict(view_a.entries)
    view_a.finish_shuffle(others[5].peer_id, [others[5].descriptor()])
    assert view_a.entries == before


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"\xff\x00", "not JSON"),
        (b"[]", "not a cyclon/1"),
        (b'{"v":"cyclon/1","entries":[1]}', "not an object"),
        (b'{"v":"cyclon/1","entries":[{"p":"x","a":["a\\nb"],"i":1,"g":0,"s":""}]}', "bad address"),
        (b'{"v":"cyclon/1","entries":[{"p":"x","a":[],"i":-1,"g":0,"s":""}]}', "bad issue time"),
        (b'{"v":"cyclon/1","entries":[{"p":"x","a":[],"i":1,"g":true,"s":""}]}', "bad age"),
        (b'{"v":"cyclon/1","entries":[{"p":"x","a":[],"i":1,"g":0,"s":"!!"}]}', "base64"),
        (b" " * (MAX_SHUFFLE_BYTES + 1), "exceeds"),
    ],
)
def test_malformed_or_oversized_shuffles_are_rejected(raw, why):
    with pytest.raises(ShuffleRejected, match=why):
        decode_shuffle(raw, max_entries=8)


def test_more_entries_than_the_shuffle_length_are_rejected():
    peers = [Keyed(f"/p{i}") for i in range(4)]
    raw = encode_shuffle([p.descriptor() for p in peers])
    assert len(decode_shuffle(raw, max_entries=4)) == 4
    with pytest.raises(ShuffleRejected, match="at most 3"):
        decode_shuffle(raw, max_entries=3)
