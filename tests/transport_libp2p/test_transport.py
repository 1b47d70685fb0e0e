"""Libp2pTransport on loopback: discovery, bootstrap, announcements, payloads, refusals, security, identity."""

from __future__ import annotations

import hashlib
import os
import stat
import time

import pytest
import trio
from transport_libp2p.p2p_helpers import OTHER_SWARM, SWARM, make_transport, port_of, raw_host, run

from quinkgl.transport import TransportError

pytestmark = pytest.mark.network


def _connections(transport, peer_id: str) -> int:
    from libp2p.peer.id import ID

    return len(transport.host.get_network().get_connections(ID.from_base58(peer_id)))


# --------------------------------------------------------------------------------------------------------------
# Discovery through the per-user registry
# --------------------------------------------------------------------------------------------------------------


def test_three_peers_find_each_other_through_the_registry(registry):
    async def main():
        peers = [make_transport(registry_dir=registry, name=f"p{i}") for i in range(3)]
        a, b, c = (t for t, _ in peers)
        async with a, b, c:
            ids = [a.peer_id, b.peer_id, c.peer_id]
            assert len(set(ids)) == 3
            for t in (a, b, c):
                await t.wait_connected([p for p in ids if p != t.peer_id], timeout=10)
            # the tie-break leaves exactly one connection per pair
            for t in (a, b, c):
                for p in ids:
                    if p != t.peer_id:
                        assert _connections(t, p) == 1
            # one registry file per running peer, naming swarm, peer, addresses and PID
            files = sorted(registry.glob("*.json"))
            assert {f.stem for f in files} == set(ids)
            import json

            entry = json.loads(files[0].read_text())
            assert entry["swarm_id"] == SWARM and entry["pid"] == os.getpid() and entry["addrs"]
        assert not list(registry.glob("*.json")), "entries are removed on exit"

    run(main)


def test_peer_of_another_swarm_is_not_dialled_from_the_registry(registry):
    async def main():
        a, _ = make_transport(registry_dir=registry, name="a")
        x, _ = make_transport(registry_dir=registry, swarm_id=OTHER_SWARM, name="x")
        async with a, x:
            # B joins after X was registered: by the time A and B have found each other, both have scanned
            # the registry with X in it several times.
            b, _ = make_transport(registry_dir=registry, name="b")
            async with b:
                await a.wait_connected([b.peer_id], timeout=10)
                await b.wait_connected([a.peer_id], timeout=10)
                assert x.peer_id not in a.connected_peers()
                assert x.peer_id not in b.connected_peers()
                assert x.connected_peers() == []

    run(main)


# --------------------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------------------


def test_bootstrap_with_host_port_and_no_peer_id():
    async def main():
        a, _ = make_transport(name="a")
        async with a:
            b, _ = make_transport(name="b", bootstrap=(f"127.0.0.1:{port_of(a)}",))
            async with b:
                # __aenter__ makes one bounded attempt at every bootstrap peer
                assert a.peer_id in b.connected_peers()
                assert b.bootstrap_peers() == {f"127.0.0.1:{port_of(a)}": a.peer_id}
                await a.wait_connected([b.peer_id], timeout=5)
                assert _connections(b, a.peer_id) == 1

    run(main)


def test_bootstrap_with_full_multiaddr_and_pinned_host_port():
    async def main():
        a, _ = make_transport(name="a")
        async with a:
            full = a.listen_addrs[0]
            assert full.endswith(f"/p2p/{a.peer_id}")
            b, _ = make_transport(name="b", bootstrap=(full,))
            c, _ = make_transport(name="c", bootstrap=(f"127.0.0.1:{port_of(a)}/p2p/{a.peer_id}",))
            async with b, c:
                assert a.peer_id in b.connected_peers()
                assert a.peer_id in c.connected_peers()

    run(main)


def test_bootstrap_pinned_to_the_wrong_peer_is_refused():
    async def main():
        a, _ = make_transport(name="a")
        decoy, _ = make_transport(name="decoy")
        async with a, decoy:
            b, _ = make_transport(name="b", bootstrap=(f"127.0.0.1:{port_of(a)}/p2p/{decoy.peer_id}",))
            async with b:
                assert b.connected_peers() == []
                assert b.bootstrap_peers() == {}

    run(main)


# --------------------------------------------------------------------------------------------------------------
# Announcements
# --------------------------------------------------------------------------------------------------------------


def test_announcements_reach_every_peer_with_the_authenticated_sender(registry):
    async def main():
        (a, ia), (b, ib), (c, ic) = (make_transport(registry_dir=registry, name=n) for n in "abc")
        async with a, b, c:
            for t in (a, b, c):
                await t.wait_connected([p.peer_id for p in (a, b, c) if p is not t], timeout=10)
            await a.wait_announce_ready(b.peer_id, timeout=10)
            await a.wait_announce_ready(c.peer_id, timeout=10)
            doc = b'{"round": 3, "swarm": "demo"}'
            await a.announce(doc)
            await ib.wait_for(lambda: ib.announcements)
            await ic.wait_for(lambda: ic.announcements)
            assert ib.announcements == [(a.peer_id, doc)]
            assert ic.announcements == [(a.peer_id, doc)]
            assert ia.announcements == []  # own messages are not echoed back
            # a burst well beyond GossipSub's default 10 msg/s spam limit and 32-message buffer arrives whole
            for i in range(100):
                await a.announce(b'{"i": %d}' % i)
            await ib.wait_for(lambda: len(ib.announcements) == 101)
            assert [d for _, d in ib.announcements[1:]] == [b'{"i": %d}' % i for i in range(100)]

    run(main)


def test_oversized_announcement_is_refused_not_silently_dropped(registry):
    async def main():
        a, _ = make_transport(registry_dir=registry)
        async with a:
            with pytest.raises(TransportError, match="exceeds the limit"):
                await a.announce(b"x" * (64 * 1024 + 1))

    run(main)


# --------------------------------------------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------------------------------------------


def test_50mb_payload_arrives_intact(registry):
    payload = os.urandom(50 * 1024 * 1024)

    async def main():
        (a, _), (b, ib) = (
            make_transport(registry_dir=registry, name="a"),
            make_transport(registry_dir=registry, name="b"),
        )
        async with a, b:
            await a.wait_connected([b.peer_id], timeout=10)
            started = time.monotonic()
            await a.send(b.peer_id, payload, timeout=60)
            elapsed = time.monotonic() - started
            assert len(ib.payloads) == 1  # send returns only after the receiver's SHA-256 acknowledgement
            sender, received = ib.payloads[0]
            assert sender == a.peer_id
            assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload).hexdigest()
            sa, sb = a.stats(), b.stats()
            assert (sa.payloads_sent, sa.bytes_sent) == (1, len(payload))
            assert (sb.payloads_received, sb.bytes_received) == (1, len(payload))
            assert sb.rejected == {}
            print(f"50 MiB in {elapsed:.2f} s = {len(payload) / elapsed / 1e6:.0f} MB/s")

    run(main, timeout=120)


def test_payload_over_the_receivers_limit_is_refused_and_counted(registry):
    async def main():
        a, _ = make_transport(registry_dir=registry, name="a")
        b, ib = make_transport(registry_dir=registry, name="b", max_payload_bytes=1024 * 1024)
        async with a, b:
            await a.wait_connected([b.peer_id], timeout=10)
            with pytest.raises(TransportError, match="too_large"):
                await a.send(b.peer_id, b"\0" * (2 * 1024 * 1024), timeout=10)
            assert b.stats().rejected == {"payload_too_large": 1}
            assert ib.payloads == []
            # the sender's own cap is enforced before anything is sent
            with pytest.raises(TransportError, match="max_payload_bytes"):
                await b.send(a.peer_id, b"\0" * (1024 * 1024 + 1), timeout=10)
            # the connection still works for payloads within the limit
            await a.send(b.peer_id, b"ok" * 1000, timeout=10)
            assert ib.payloads == [(a.peer_id, b"ok" * 1000)]

    run(main)


def _header(length: int, swarm_id: str = SWARM) -> bytes:
    from quinkgl_transport_libp2p import framing

    return framing.encode_header(framing.swarm_tag(swarm_id), length)


async def _raw_exchange(target, chunks: list[bytes]) -> bytes:
    """Open /quinkgl/model/1.0.0 to ``target`` from a bare host, write ``chunks``, half-close, read until it ends."""
    import multiaddr
    from libp2p.network.stream.exceptions import StreamError
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from quinkgl_transport_libp2p import framing

    async with raw_host() as client:
        await client.connect(info_from_p2p_addr(multiaddr.Multiaddr(target.listen_addrs[0])))
        stream = await client.new_stream(ID.from_base58(target.peer_id), [framing.PROTOCOL_ID])
        for chunk in chunks:
            await stream.write(chunk)
        await stream.close_write()  # like a killed sender: a clean EOF
        answer = b""
        while True:  # the receiver answers, then closes or resets once it has counted the transfer
            try:
                data = await stream.read(1024)
            except StreamError:
                break
            if not data:
                break
            answer += data
        return answer


def test_truncated_transfer_is_detected_counted_and_the_transport_keeps_working(registry):
    async def main():
        a, _ = make_transport(registry_dir=registry, name="a")
        b, ib = make_transport(registry_dir=registry, name="b")
        async with a, b:
            # a length prefix announcing 1000 bytes, 10 bytes of payload, then EOF
            answer = await _raw_exchange(b, [_header(1000), b"0123456789"])
            assert answer[:1] == b"\x00"  # the header was accepted; the rest never came
            assert b.stats().rejected == {"payload_truncated": 1}
            assert ib.payloads == []
            # only the header, then EOF
            await _raw_exchange(b, [_header(1000)])
            assert b.stats().rejected == {"payload_truncated": 2}
            await a.wait_connected([b.peer_id], timeout=10)
            await a.send(b.peer_id, b"still fine", timeout=10)
            assert ib.payloads == [(a.peer_id, b"still fine")]

    run(main)


def test_garbage_and_wrong_swarm_on_the_model_protocol_are_counted(registry):
    async def main():
        b, ib = make_transport(registry_dir=registry, name="b")
        async with b:
            answer = await _raw_exchange(b, [os.urandom(4) + b"\xff" * 60])
            assert answer == bytes([3])  # bad_header
            assert b.stats().rejected == {"payload_bad_header": 1, "rpc_malformed": 1}
            answer = await _raw_exchange(b, [_header(10, swarm_id=OTHER_SWARM), b"x" * 42])
            assert answer == bytes([2])  # wrong_swarm
            # a digest that does not match the payload
            await _raw_exchange(b, [_header(4), b"abcd", b"\0" * 32])
            assert b.stats().rejected == {
                "payload_bad_header": 1,
                "rpc_malformed": 1,
                "payload_wrong_swarm": 1,
                "payload_digest_mismatch": 1,
            }
            assert ib.payloads == []

    run(main)


def test_send_to_unreachable_peers_raises_within_the_timeout():
    async def main():
        import multiaddr
        from libp2p.crypto.ed25519 import create_new_key_pair
        from libp2p.peer.id import ID

        a, _ = make_transport(name="a")
        async with a:
            stranger = ID.from_pubkey(create_new_key_pair().public_key).to_base58()
            started = time.monotonic()
            with pytest.raises(TransportError):
                await a.send(stranger, b"x", timeout=2)  # no known address at all
            assert time.monotonic() - started < 2.5

            # a black hole: something accepts TCP on loopback and never says a word
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:

                async def swallow(stream):
                    await trio.sleep_forever()

                nursery.start_soon(trio.serve_listeners, swallow, listeners)
                silent = ID.from_pubkey(create_new_key_pair().public_key)
                a.host.get_peerstore().add_addrs(silent, [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")], 0)
                started = time.monotonic()
                with pytest.raises(TransportError, match="timed out"):
                    await a.send(silent.to_base58(), b"x", timeout=1.0)
                elapsed = time.monotonic() - started
                assert 0.9 < elapsed < 2.0
                nursery.cancel_scope.cancel()

            # a peer that was there and has stopped
            b, _ = make_transport(name="b", bootstrap=(a.listen_addrs[0],))
            async with b:
                b_id = b.peer_id
                await a.wait_connected([b_id], timeout=5)
            started = time.monotonic()
            with pytest.raises(TransportError):
                await a.send(b_id, b"x", timeout=3)
            assert time.monotonic() - started < 3.5

    run(main)


def test_a_restarted_peer_rejoins_through_the_registry_with_the_same_peer_id(registry, tmp_path):
    async def main():
        a, _ = make_transport(registry_dir=registry, name="a")
        async with a:
            b, _ = make_transport(registry_dir=registry, state_dir=tmp_path / "b", name="b")
            async with b:
                b_id = b.peer_id
                await a.wait_connected([b_id], timeout=10)
            b2, ib2 = make_transport(registry_dir=registry, state_dir=tmp_path / "b", name="b")
            async with b2:
                assert b2.peer_id == b_id  # (usually on another port: the old address must not be used)
                await a.wait_connected([b_id], timeout=10)
                await a.send(b_id, b"welcome back", timeout=10)
                assert ib2.payloads == [(a.peer_id, b"welcome back")]

    run(main)


def test_peer_lost_is_reported(registry):
    async def main():
        a, ia = make_transport(registry_dir=registry, name="a")
        async with a:
            b, _ = make_transport(registry_dir=registry, name="b")
            async with b:
                b_id = b.peer_id
                await a.wait_connected([b_id], timeout=10)
            await ia.wait_for(lambda: b_id in ia.lost)
            assert b_id not in a.connected_peers()

    run(main)


# --------------------------------------------------------------------------------------------------------------
# Security, identity, listener traps
# --------------------------------------------------------------------------------------------------------------


def test_plaintext_only_dialer_is_refused():
    async def main():
        import multiaddr
        from libp2p.peer.peerinfo import info_from_p2p_addr

        from quinkgl_transport_libp2p.bootstrap import dial_unknown

        a, _ = make_transport(name="a")
        async with a, raw_host(plaintext=True) as insecure:
            with pytest.raises(Exception):  # noqa: B017 - py-libp2p raises unrelated types for a refused handshake
                with trio.fail_after(10):
                    await insecure.connect(info_from_p2p_addr(multiaddr.Multiaddr(a.listen_addrs[0])))
            assert insecure.get_connected_peers() == []
            assert a.connected_peers() == []
            # and our side will not speak plaintext to a plaintext-only listener either
            port = int(str(insecure.get_transport_addrs()[0]).split("/")[-1])
            with pytest.raises(TransportError):
                with trio.fail_after(10):
                    await dial_unknown(a.host, "127.0.0.1", port)
            assert a.connected_peers() == []

    run(main)


def test_peer_id_is_stable_across_restarts_with_the_same_state_dir(tmp_path):
    state = tmp_path / "peer-state"

    async def main():
        first, _ = make_transport(state_dir=state)
        async with first:
            peer_id = first.peer_id
        key = state / "libp2p-identity.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        again, _ = make_transport(state_dir=state)
        async with again:
            assert again.peer_id == peer_id
        other, _ = make_transport(state_dir=tmp_path / "elsewhere")
        async with other:
            assert other.peer_id != peer_id
        ephemeral1, _ = make_transport()
        ephemeral2, _ = make_transport()
        async with ephemeral1, ephemeral2:
            assert ephemeral1.peer_id != ephemeral2.peer_id

    run(main)


def test_second_transport_on_the_same_fixed_port_fails_clearly():
    from quinkgl_transport_libp2p.host import PortInUseError

    async def main():
        first, _ = make_transport(name="first")
        async with first:
            port = port_of(first)
            second, _ = make_transport(name="second", port=port)
            with pytest.raises(PortInUseError, match=f"127.0.0.1:{port}.*already in use"):
                async with second:
                    pass
            assert isinstance(PortInUseError("x"), TransportError)
        # once the first one is gone, the port is usable
        third, _ = make_transport(name="third", port=port)
        async with third:
            assert port_of(third) == port

    run(main)
