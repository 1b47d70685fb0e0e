"""Peer exchange: announcements carry their publisher's addresses, so peers sharing only a bootstrap peer meet.

The pure parts (envelope / address-block codec, address book) run without a network; the rest runs three
transports on 127.0.0.1 with the registry disabled, and a hand-made GossipSub publisher for forged envelopes.
"""

from __future__ import annotations

import hashlib
import os
import struct
from contextlib import asynccontextmanager

import pytest
from transport_libp2p.p2p_helpers import SWARM, make_transport, port_of, raw_host, run

from quinkgl_transport_libp2p import framing
from quinkgl_transport_libp2p.peer_exchange import (
    HEADER_SIZE,
    MAX_ADDR_BLOCK,
    MAX_ADDRS,
    STAMP,
    AddressBook,
    EnvelopeError,
    _default_stamps,
    addrs_for_origin,
    decode_addr_block,
    decode_envelope,
    encode_addr_block,
    encode_envelope,
    own_addrs,
)

TAG = framing.swarm_tag(SWARM)
PID = "12D3KooWEtc2cssnh6jszy7FyXV59Vd2XZmKNguH3ZmBaV3BRhR6"
OTHER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"


def _hdr() -> bytes:
    """Magic, swarm tag and a fresh stamp: an envelope's first bytes, before the block length."""
    return b"QGA3" + TAG + STAMP.pack(*_default_stamps.next())


def _block(*texts: bytes, count: int | None = None) -> bytes:
    """An address block written by hand (any count, any bytes)."""
    out = bytes([len(texts) if count is None else count])
    for raw in texts:
        out += struct.pack(">H", len(raw)) + raw
    return out


# ------------------------------------------------------------------------------------------------------------
# Codec and address book (no network)
# ------------------------------------------------------------------------------------------------------------


def test_envelope_round_trip_and_published_addresses():
    listen = [
        f"/ip4/192.0.2.7/tcp/4001/p2p/{PID}",
        f"/ip4/127.0.0.1/tcp/4001/p2p/{PID}",
        "/ip4/0.0.0.0/tcp/4001",  # undialable: left out
        f"/ip4/198.51.100.1/tcp/1/p2p/{OTHER}",  # names another peer: left out
        "/ip4/203.0.113.9/udp/4001",  # not TCP: left out
    ] + [f"/ip4/10.0.0.{i}/tcp/4001" for i in range(1, 20)]
    addrs = own_addrs(listen, PID)
    assert len(addrs) == MAX_ADDRS
    assert addrs[:3] == ["/ip4/192.0.2.7/tcp/4001", "/ip4/127.0.0.1/tcp/4001", "/ip4/10.0.0.1/tcp/4001"]

    data = encode_envelope(TAG, encode_addr_block(addrs), b"document")
    assert data[:4] == b"QGA3" and data[4:36] == TAG
    assert decode_envelope(data, TAG, 1024) == (addrs, b"document")
    assert decode_envelope(encode_envelope(TAG, encode_addr_block([]), b""), TAG, 1024) == ([], b"")
    # the worst case block still fits the bound
    longest = "/dns6/" + ".".join(["a" * 63] * 3) + ".abc" + f"/tcp/65535/p2p/{PID}"
    assert len(encode_addr_block([longest] * MAX_ADDRS)) <= MAX_ADDR_BLOCK


def _reason(data: bytes, max_bytes: int = 1024) -> str:
    with pytest.raises(EnvelopeError) as info:
        decode_envelope(data, TAG, max_bytes)
    return info.value.reason


@pytest.mark.parametrize(
    ("block", "label"),
    [
        (_block(count=MAX_ADDRS + 1), "too many addresses"),
        (_block(b"/ip4/127.0.0.1/tcp/1", count=2), "count larger than the entries"),
        (_block(b"/ip4/127.0.0.1/tcp/1") + b"\x00", "trailing bytes"),
        (_block(b"/ip4/127.0.0.1/tcp/1")[:-3], "truncated address"),
        (_block(b""), "empty address"),
        (_block(b"/ip4/127.0.0.1/tcp/1", b"/ip4/127.0.0.1/tcp/1"), "duplicate"),
        (_block(b"/ip4/127.0.0.1/udp/1"), "not TCP"),
        (_block(b"/ip4/300.0.0.1/tcp/1"), "not an IP"),
        (_block(b"/ip4/127.0.0.1/tcp/0"), "port 0"),
        (_block(b"/ip4/127.0.0.1/tcp/01"), "not canonical"),
        (_block(b"/dns4/bad_name!/tcp/1"), "not a DNS name"),
        (_block("/dns4/caf\u00e9.example/tcp/1".encode()), "not ASCII"),
        (_block(b"/ip4/127.0.0.1/tcp/1/p2p/not-a-peer-id"), "bad peer ID"),
        (b"", "empty block"),
    ],
)
def test_malformed_address_blocks_are_refused(block, label):
    with pytest.raises(EnvelopeError) as info:
        decode_addr_block(block)
    assert info.value.reason == "bad_addrs", label
    assert _reason(_hdr() + struct.pack(">H", len(block)) + block + b"doc") == "bad_addrs", label


def test_malformed_envelopes_are_refused_by_reason():
    good_block = encode_addr_block(["/ip4/127.0.0.1/tcp/1"])
    assert _reason(b"QGA1" + TAG + b"doc") == "bad_envelope"  # the version without an address block
    old = b"QGA2" + TAG + struct.pack(">H", 0) + b"doc" + b"\0" * 24
    assert _reason(old) == "bad_envelope"  # the version without a stamp
    assert _reason(_hdr()) == "bad_envelope"  # no block length
    assert _reason(encode_envelope(framing.swarm_tag("other"), good_block, b"doc")) == "wrong_swarm"
    # a block length pointing past the end of the message, or over the bound
    assert _reason(_hdr() + struct.pack(">H", 500) + good_block) == "bad_addrs"
    assert _reason(_hdr() + struct.pack(">H", MAX_ADDR_BLOCK + 1) + b"\x00" * (MAX_ADDR_BLOCK + 1)) == ("bad_addrs")
    assert _reason(encode_envelope(TAG, good_block, b"x" * 1025)) == "too_large"
    assert _reason(_hdr() + b"\x00" * (2 + MAX_ADDR_BLOCK + 2000)) == "too_large"
    assert HEADER_SIZE == 62


def test_addresses_naming_another_peer_are_not_filed_under_the_origin():
    kept, ignored = addrs_for_origin(
        PID,
        [
            "/ip4/192.0.2.1/tcp/1",
            f"/ip4/192.0.2.2/tcp/2/p2p/{PID}",
            f"/ip4/192.0.2.3/tcp/3/p2p/{OTHER}",
            "/ip4/0.0.0.0/tcp/4",
            "/ip4/192.0.2.1/tcp/1",
        ],
    )
    assert kept == ["/ip4/192.0.2.1/tcp/1", "/ip4/192.0.2.2/tcp/2"]
    assert ignored == 2


def test_address_book_ttl_cap_and_order():
    book = AddressBook(ttl_s=10, max_per_peer=3, max_peers=2)
    assert book.learn("p", ["/ip4/192.0.2.1/tcp/1", "/ip4/192.0.2.2/tcp/2"], now=0)
    assert not book.learn("p", ["/ip4/192.0.2.1/tcp/1", "/ip4/192.0.2.2/tcp/2"], now=1)
    # a newer announcement comes first; older addresses stay until they expire, within the cap
    assert book.learn("p", ["/ip4/192.0.2.9/tcp/9", "/ip4/192.0.2.8/tcp/8"], now=5)
    assert book.addrs("p", now=5) == ["/ip4/192.0.2.9/tcp/9", "/ip4/192.0.2.8/tcp/8", "/ip4/192.0.2.1/tcp/1"]
    assert book.addrs("p", now=12) == ["/ip4/192.0.2.9/tcp/9", "/ip4/192.0.2.8/tcp/8"]
    assert book.remaining_ttl("p", now=12) == pytest.approx(3)
    assert book.addrs("p", now=16) == [] and "p" not in book
    # bounded number of peers: the least recently refreshed one goes
    for i, peer in enumerate("abc"):
        book.learn(peer, [f"/ip4/192.0.2.{i + 1}/tcp/1"], now=20 + i)
    assert "a" not in book and len(book) == 2


# ------------------------------------------------------------------------------------------------------------
# On loopback
# ------------------------------------------------------------------------------------------------------------


def _connections(transport, peer_id: str) -> int:
    from libp2p.peer.id import ID

    return len(transport.host.get_network().get_connections(ID.from_base58(peer_id)))


def _count_rejections_into(transport, inbox) -> None:
    """Wake ``inbox`` waiters on every rejection too (set before the transport starts; rejections deliver
    nothing, so this is what a test can wait on instead of sleeping)."""
    original = transport._reject

    def reject(reason: str) -> None:
        original(reason)
        inbox._poke()

    transport._reject = reject


def test_peers_sharing_only_a_bootstrap_peer_reach_each_other_by_peer_exchange():
    async def main():
        b, ib = make_transport(name="b")
        async with b:
            seed = (f"127.0.0.1:{port_of(b)}",)  # host:port only, no peer ID
            (a, ia), (c, ic) = make_transport(name="a", bootstrap=seed), make_transport(name="c", bootstrap=seed)
            async with a, c:
                await b.wait_connected([a.peer_id, c.peer_id], timeout=10)
                assert c.peer_id not in a.connected_peers() and a.peer_id not in c.connected_peers()
                for x, y in ((a, b), (c, b), (b, a), (b, c)):
                    await x.wait_announce_ready(y.peer_id, timeout=10)
                await a.announce(b"from a")
                await c.announce(b"from c")
                await ia.wait_for(lambda: (c.peer_id, b"from c") in ia.announcements)
                await ic.wait_for(lambda: (a.peer_id, b"from a") in ic.announcements)
                # the application sees only the document and its authenticated origin
                assert (c.peer_id, b"from c") in ib.announcements

                # A learned C's addresses from C's announcement (forwarded by B), and vice versa
                c_addrs = [addr.removesuffix(f"/p2p/{c.peer_id}") for addr in c.listen_addrs]
                assert a.exchanged_addrs(c.peer_id) == c_addrs
                assert c.exchanged_addrs(a.peer_id) == [x.removesuffix(f"/p2p/{a.peer_id}") for x in a.listen_addrs]
                from libp2p.peer.id import ID

                assert [str(m) for m in a.host.get_peerstore().addrs(ID.from_base58(c.peer_id))] == c_addrs
                assert c.peer_id not in a.connected_peers()

                payload = os.urandom(3 * 1024 * 1024 + 17)
                await a.send(c.peer_id, payload, timeout=10)
                await ic.wait_for(lambda: len(ic.payloads) == 1)
                assert ic.payloads[0][0] == a.peer_id
                assert hashlib.sha256(ic.payloads[0][1]).digest() == hashlib.sha256(payload).digest()

                back = os.urandom(1024 * 1024)
                await c.send(a.peer_id, back, timeout=10)
                await ia.wait_for(lambda: len(ia.payloads) == 1)
                assert ia.payloads[0] == (c.peer_id, back)
                # one connection per pair: C's send reused the connection A opened
                assert _connections(a, c.peer_id) == 1 and _connections(c, a.peer_id) == 1
                for t in (a, b, c):
                    assert t.stats().rejected == {}

    run(main)


def test_concurrent_sends_share_one_dial():
    async def main():
        import functools

        import trio

        b, _ = make_transport(name="b")
        async with b:
            seed = (f"127.0.0.1:{port_of(b)}",)
            (a, ia), (c, ic) = make_transport(name="a", bootstrap=seed), make_transport(name="c", bootstrap=seed)
            async with a, c:
                await c.wait_announce_ready(b.peer_id, timeout=10)
                await b.wait_announce_ready(a.peer_id, timeout=10)
                await c.announce(b"here")
                await ia.wait_for(lambda: (c.peer_id, b"here") in ia.announcements)
                dials = []
                dial = a._dialler.dial_known_addrs

                async def counting_dial(host, target):
                    dials.append(target)
                    await dial(host, target)

                a._dialler.dial_known_addrs = counting_dial
                async with trio.open_nursery() as nursery:  # two: the receiver admits two transfers per peer
                    for i in range(2):
                        nursery.start_soon(functools.partial(a.send, c.peer_id, bytes([i]) * 1000, timeout=10))
                await ic.wait_for(lambda: len(ic.payloads) == 2)
                assert sorted(p for _, p in ic.payloads) == [bytes([i]) * 1000 for i in range(2)]
                assert len(dials) == 1
                assert _connections(a, c.peer_id) == 1 and _connections(c, a.peer_id) == 1

    run(main)


@asynccontextmanager
async def forger(target):
    """A bare GossipSub publisher on the swarm topic, connected to ``target``, that publishes any bytes
    (no topic validator of its own, so malformed envelopes leave it). Its messages are properly signed."""
    import multiaddr
    from libp2p.peer.peerinfo import PeerInfo

    from quinkgl_transport_libp2p.announce import Announcer

    async with raw_host() as host:
        announcer = Announcer(
            host, swarm_id=SWARM, max_bytes=64 * 1024, deliver=lambda s, d: None, reject=lambda r: None
        )
        announcer.pubsub.remove_topic_validator(announcer.topic)
        async with announcer.running():
            target_id = target.host.get_id()
            await host.connect(PeerInfo(target_id, [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port_of(target)}")]))
            await announcer.wait_for_peer(target_id, timeout=10)

            async def publish(data: bytes) -> None:
                await announcer.pubsub.publish(announcer.topic, data)

            yield host.get_id().to_base58(), publish


def test_forged_address_blocks_are_rejected_counted_and_not_delivered():
    async def main():
        b, ib = make_transport(name="b")
        _count_rejections_into(b, ib)
        async with b, forger(b) as (forger_id, publish):
            addr = b"/ip4/127.0.0.1/tcp/9"
            forged = [
                _block(addr, count=3),  # claims more entries than it has
                _block(addr) + b"junk",  # trailing bytes inside the block
                _block(b"/ip4/127.0.0.1/tcp/9/../../etc"),  # not a multiaddr of ours
            ]
            for block in forged:
                await publish(_hdr() + struct.pack(">H", len(block)) + block + b"forged")
            await publish(_hdr() + struct.pack(">H", 4000) + b"\x01")  # block length beyond the data
            await ib.wait_for(lambda: b.stats().rejected.get("announce_bad_addrs", 0) == 4)
            # a well-formed one from the same publisher still arrives; none of the forged ones ever did
            await publish(encode_envelope(TAG, encode_addr_block(["/ip4/127.0.0.1/tcp/9"]), b"fine"))
            await ib.wait_for(lambda: len(ib.announcements) == 1)
            assert ib.announcements == [(forger_id, b"fine")]
            assert b.exchanged_addrs(forger_id) == ["/ip4/127.0.0.1/tcp/9"]
            assert b.stats().rejected == {"announce_bad_addrs": 4}

    run(main)


def test_an_address_claiming_another_peer_id_is_ignored():
    async def main():
        from quinkgl.transport import TransportError

        b, ib = make_transport(name="b")
        c, _ = make_transport(name="c")
        async with b, c, forger(b) as (forger_id, publish):
            d, id_ = make_transport(name="d", bootstrap=(f"127.0.0.1:{port_of(b)}",))
            async with d:
                await b.wait_announce_ready(d.peer_id, timeout=10)
                # The forger files a black-hole address under C's peer ID, and lists C's real address as its
                # own.
                block = encode_addr_block([f"/ip4/127.0.0.1/tcp/9/p2p/{c.peer_id}", f"/ip4/127.0.0.1/tcp/{port_of(c)}"])
                await publish(encode_envelope(TAG, block, b"doc"))
                await id_.wait_for(lambda: len(id_.announcements) == 1)
                await ib.wait_for(lambda: len(ib.announcements) == 1)
                for t, inbox in ((b, ib), (d, id_)):
                    assert inbox.announcements == [(forger_id, b"doc")]  # the document is still delivered
                    assert t.exchanged_addrs(c.peer_id) == []  # nothing is ever filed under another peer
                    assert t.exchanged_addrs(forger_id) == [f"/ip4/127.0.0.1/tcp/{port_of(c)}"]
                    assert t.stats().rejected == {"announce_addr_ignored": 1}

                # A dial to an exchanged address expects the announcing peer: Noise refuses C's identity there.
                with pytest.raises(TransportError, match="unreachable"):
                    await d.send(forger_id, b"x", timeout=5)
                assert c.peer_id not in d.connected_peers()
                assert forger_id not in d.connected_peers()

    run(main)
