"""Units behind multi-host networking: announced addresses, relayed addresses, doctor's words, the hello probe."""

from __future__ import annotations

import socket

import multiaddr
import pytest
import trio

from quinkgl_transport_libp2p import host as host_mod
from quinkgl_transport_libp2p.doctor import ADVICE, PeerCheck, hint, outside_reachability
from quinkgl_transport_libp2p.hello import encode, read_message, tcp_probe
from quinkgl_transport_libp2p.peer_exchange import addrs_for_origin, own_addrs, parse_addr

RELAY = "12D3KooWLnBS1GzWwceAjEYAcBoNMcmxUDe4AvRD6F8W63CZYnTV"
PEER = "12D3KooWQAkxEtvDMoC2GFseSVciMoASvjkp5WUKYGPpaWEgdALo"


def test_wildcard_listener_announces_interfaces_not_loopback(monkeypatch):
    found = [multiaddr.Multiaddr(a) for a in ("/ip4/127.0.0.1/tcp/7001", "/ip4/10.213.0.4/tcp/7001")]
    monkeypatch.setattr(host_mod, "get_available_interfaces", lambda port: found)
    factory = host_mod.make_addrs_factory([])
    assert [str(a) for a in factory([multiaddr.Multiaddr("/ip4/0.0.0.0/tcp/7001")])] == ["/ip4/10.213.0.4/tcp/7001"]
    # a machine with nothing but loopback still announces loopback (same-machine peers need an address)
    monkeypatch.setattr(host_mod, "get_available_interfaces", lambda port: found[:1])
    assert [str(a) for a in factory([multiaddr.Multiaddr("/ip4/0.0.0.0/tcp/7001")])] == ["/ip4/127.0.0.1/tcp/7001"]
    # operator-given addresses come first; a concrete listen address is kept as it is
    factory = host_mod.make_addrs_factory([multiaddr.Multiaddr("/ip4/203.0.113.7/tcp/7001")])
    assert [str(a) for a in factory([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/5")])] == [
        "/ip4/203.0.113.7/tcp/7001",
        "/ip4/127.0.0.1/tcp/5",
    ]


def test_relayed_addresses_parse_and_travel_in_announcements():
    relayed = f"/ip4/10.213.0.1/tcp/7001/p2p/{RELAY}/p2p-circuit"
    assert parse_addr(relayed) == (relayed, None)
    assert own_addrs([relayed, "/ip4/10.213.1.2/tcp/7001"], PEER) == [relayed, "/ip4/10.213.1.2/tcp/7001"]
    kept, ignored = addrs_for_origin(PEER, [relayed])
    assert kept == [relayed] and ignored == 0
    for bad in (
        "/ip4/10.213.0.1/tcp/7001/p2p-circuit",
        f"/ip4/10.213.0.1/tcp/7001/p2p/{RELAY}/p2p-circuit/p2p-circuit",
        f"/ip4/010.213.0.1/tcp/7001/p2p/{RELAY}/p2p-circuit",
        "/p2p-circuit",
    ):
        with pytest.raises(ValueError):
            parse_addr(bad)


def test_doctor_words_and_exit_logic():
    refused = PeerCheck("10.0.0.5:7001", "refused", "10.0.0.5:7001 refused the TCP connection")
    ok = PeerCheck("10.0.0.6:7001", "reachable", "", peer_id=PEER, relay=True, dial_back="refused")
    assert "refused" in refused.words() and ADVICE["refused"] in refused.words()
    assert ok.words() == f"10.0.0.6:7001: reachable, peer {PEER} (relay)"
    assert outside_reachability([refused, ok]) == "no"
    assert outside_reachability([refused]) == "unknown"
    text = hint([refused], "swarm.qgl")
    assert "10.0.0.5:7001: refused" in text and "quinkgl doctor --manifest swarm.qgl" in text
    assert "--bootstrap-peer" in hint([])
    assert set(refused.as_dict()) >= {"address", "status", "reason", "advice", "ok"}


def test_tcp_probe_refused_and_ok():
    async def main() -> tuple[str, str]:
        with socket.socket() as listening, socket.socket() as closed:
            listening.bind(("127.0.0.1", 0))
            listening.listen(1)
            closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
            return (
                await tcp_probe("127.0.0.1", listening.getsockname()[1], 2.0),
                await tcp_probe("127.0.0.1", closed.getsockname()[1], 2.0),
            )

    assert trio.run(main) == ("ok", "refused")


def test_hello_messages_are_bounded_json_objects():
    class Stream:
        def __init__(self, data: bytes) -> None:
            self.data = data

        async def read(self, n: int) -> bytes:
            chunk, self.data = self.data[:n], self.data[n:]
            return chunk

    assert trio.run(read_message, Stream(encode({"dial_back": 7001})), 1.0) == {"dial_back": 7001}
    for bad in (b"[1]\n", b"{" + b" " * 2000 + b"}\n", b"not json\n"):
        with pytest.raises(ValueError):
            trio.run(read_message, Stream(bad), 1.0)
