"""Pure parts of the libp2p transport: framing, registry, bootstrap address parsing, identity, params."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys

import pytest
import trio
import trio.testing

from quinkgl_transport_libp2p import framing
from quinkgl_transport_libp2p.bootstrap import BootstrapAddrError, parse_bootstrap_addr
from quinkgl_transport_libp2p.discovery import PeerRegistry, resolve_registry_dir, should_dial
from quinkgl_transport_libp2p.identity import load_or_create_identity
from quinkgl_transport_libp2p.params import Libp2pParams

TAG = framing.swarm_tag("sha256:" + "ab" * 32)
PID = "12D3KooWEtc2cssnh6jszy7FyXV59Vd2XZmKNguH3ZmBaV3BRhR6"


class _Adapter:
    """A trio stream as framing.ByteStream; ``close_write`` mimics a half-close."""

    def __init__(self, stream):
        self.stream = stream

    async def read(self, n):
        return await self.stream.receive_some(n)

    async def write(self, data):
        await self.stream.send_all(data)


def _pair():
    left, right = trio.testing.memory_stream_pair()
    return _Adapter(left), _Adapter(right), left, right


# ------------------------------------------------------------------------------------------------------------
# framing
# ------------------------------------------------------------------------------------------------------------


def test_framing_round_trip_and_ack():
    payload = os.urandom(3 * framing.WRITE_CHUNK + 123)

    async def main():
        a, b, _, _ = _pair()
        results = {}
        async with trio.open_nursery() as nursery:

            async def receiver():
                results["got"] = await framing.receive_payload(b, tag=TAG, max_bytes=len(payload), idle_timeout=5)

            nursery.start_soon(receiver)
            results["ack"] = await framing.send_payload(a, payload, tag=TAG)
        assert results["got"] == payload
        assert results["ack"] == hashlib.sha256(payload).hexdigest()

    trio.run(main)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"XXXX" + bytes(44), "bad_header"),
        (framing.encode_header(framing.swarm_tag("other"), 1), "wrong_swarm"),
        (framing.encode_header(TAG, 101), "too_large"),
    ],
)
def test_framing_refuses_before_reading_the_payload(header, reason):
    async def main():
        a, b, left, _ = _pair()
        await left.send_all(header)
        with pytest.raises(framing.FrameError) as info:
            await framing.receive_payload(b, tag=TAG, max_bytes=100, idle_timeout=5)
        assert info.value.reason == reason
        status = await a.read(10)
        assert status == bytes([framing.REASON_STATUS[reason]])

    trio.run(main)


def test_framing_detects_truncation_and_a_wrong_digest():
    async def main():
        _a, b, left, _ = _pair()
        await left.send_all(framing.encode_header(TAG, 10) + b"12345")
        await left.send_eof()
        with pytest.raises(framing.FrameError) as info:
            await framing.receive_payload(b, tag=TAG, max_bytes=100, idle_timeout=5)
        assert info.value.reason == "truncated"

        _a, b, left, _ = _pair()
        await left.send_all(framing.encode_header(TAG, 4) + b"abcd" + bytes(32))
        with pytest.raises(framing.FrameError) as info:
            await framing.receive_payload(b, tag=TAG, max_bytes=100, idle_timeout=5)
        assert info.value.reason == "digest_mismatch"

    trio.run(main)


def test_framing_stalled_sender_hits_the_idle_deadline():
    async def main():
        _, b, left, _ = _pair()
        await left.send_all(framing.encode_header(TAG, 10) + b"123")
        with pytest.raises(framing.FrameError) as info:
            await framing.receive_payload(b, tag=TAG, max_bytes=100, idle_timeout=0.2)
        assert info.value.reason == "stalled"

    trio.run(main)


def test_sender_reports_a_refusal():
    async def main():
        a, b, _, right = _pair()
        async with trio.open_nursery() as nursery:

            async def refuse():
                await framing.read_exactly(b, framing.HEADER_SIZE, idle_timeout=5, what="header")
                await right.send_all(bytes([framing.REASON_STATUS["busy"]]))

            nursery.start_soon(refuse)
            with pytest.raises(framing.SendRefused, match="busy"):
                await framing.send_payload(a, b"data", tag=TAG)

    trio.run(main)


# ------------------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------------------


def test_registry_lists_live_peers_of_the_same_swarm_and_removes_stale_entries(tmp_path):
    me = PeerRegistry(tmp_path, swarm_id="s1", peer_id="A")
    same = PeerRegistry(tmp_path, swarm_id="s1", peer_id="B")
    other = PeerRegistry(tmp_path, swarm_id="s2", peer_id="C")
    for reg in (me, same, other):
        reg.register([f"/ip4/127.0.0.1/tcp/1/p2p/{reg.peer_id}"])
    assert stat.S_IMODE(tmp_path.joinpath("A.json").stat().st_mode) == 0o600
    assert [e.peer_id for e in me.swarm_peers()] == ["B"]
    assert sorted(e.peer_id for e in me.entries()) == ["B", "C"]

    # an entry whose process has exited is stale and gets removed
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    stale = json.loads(tmp_path.joinpath("B.json").read_text())
    stale.update(peer_id="D", pid=dead.pid, pid_start=None)
    tmp_path.joinpath("D.json").write_text(json.dumps(stale))
    assert [e.peer_id for e in me.swarm_peers()] == ["B"]
    assert not tmp_path.joinpath("D.json").exists()

    # garbage files are ignored, not fatal
    tmp_path.joinpath("junk.json").write_text("{not json")
    assert [e.peer_id for e in me.swarm_peers()] == ["B"]

    same.unregister()
    assert me.swarm_peers() == []


def test_registry_directory_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("QUINKGL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("QUINKGL_PEER_REGISTRY", raising=False)
    assert resolve_registry_dir({}) == tmp_path / "state" / "peers"
    monkeypatch.setenv("QUINKGL_PEER_REGISTRY", str(tmp_path / "env"))
    assert resolve_registry_dir({}) == tmp_path / "env"
    assert resolve_registry_dir({"registry_dir": str(tmp_path / "opt")}) == tmp_path / "opt"


def test_tie_break_picks_exactly_one_dialler():
    assert should_dial("A", "B") != should_dial("B", "A")


# ------------------------------------------------------------------------------------------------------------
# bootstrap addresses
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "peer", "is_name"),
    [
        ("127.0.0.1:4001", "127.0.0.1", 4001, None, False),
        ("[::1]:4001", "::1", 4001, None, False),
        ("localhost:4001", "localhost", 4001, None, True),
        (f"127.0.0.1:4001/p2p/{PID}", "127.0.0.1", 4001, PID, False),
        ("/ip4/127.0.0.1/tcp/4001", "127.0.0.1", 4001, None, False),
        (f"/ip4/127.0.0.1/tcp/4001/p2p/{PID}", "127.0.0.1", 4001, PID, False),
        (f"/ip6/::1/tcp/9/p2p/{PID}", "::1", 9, PID, False),
        ("/dns4/peer.example.org/tcp/4001", "peer.example.org", 4001, None, True),
    ],
)
def test_bootstrap_forms(text, host, port, peer, is_name):
    target = parse_bootstrap_addr(text)
    assert (target.host, target.port, target.peer_id, target.is_name) == (host, port, peer, is_name)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "::1:4001",
        "/ip4/127.0.0.1/udp/4001",
        "/ip4/notanip/tcp/1",
        "127.0.0.1:4001/p2p/not-base58!",
        "/ip4/127.0.0.1/tcp/4001/p2p",
    ],
)
def test_bad_bootstrap_addresses_are_clear_errors(text):
    with pytest.raises(BootstrapAddrError):
        parse_bootstrap_addr(text)


def test_bootstrap_names_resolve_through_the_os_resolver():
    from quinkgl_transport_libp2p.bootstrap import resolve

    ips = trio.run(resolve, parse_bootstrap_addr("localhost:4001"))
    assert set(ips) & {"127.0.0.1", "::1"}


# ------------------------------------------------------------------------------------------------------------
# identity and params
# ------------------------------------------------------------------------------------------------------------


def test_identity_is_created_once_with_mode_0600_and_reused(tmp_path):
    seed, persisted = load_or_create_identity(tmp_path / "s")
    assert persisted and len(seed) == 32
    path = tmp_path / "s" / "libp2p-identity.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_or_create_identity(tmp_path / "s") == (seed, True)
    other, persisted = load_or_create_identity(None)
    assert not persisted and other != seed


def test_params_validate():
    assert Libp2pParams().max_announcement_bytes == 64 * 1024
    with pytest.raises(ValueError):
        Libp2pParams(max_announcement_bytes=1024 * 1024)
    with pytest.raises(ValueError):
        Libp2pParams(dial_timeout_s=0)


class _Stream:
    """What the guard touches of a stream: the peer behind it and reset()."""

    def __init__(self):
        self.muxed_conn = type("Conn", (), {"peer_id": PID})()
        self.resets = 0

    async def reset(self):
        self.resets += 1


class _Network:
    def __init__(self):
        self.closed = []

    async def close_peer(self, peer):
        self.closed.append(peer)


class _Host:
    def __init__(self):
        self.network = _Network()

    def get_network(self):
        return self.network


def test_a_peer_leaving_under_a_handler_is_a_disconnect_and_garbage_is_malformed():
    from google.protobuf.message import DecodeError
    from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge
    from libp2p.stream_muxer.exceptions import MuxedConnUnavailable

    from quinkgl_transport_libp2p.stream_guard import guard_handler, is_disconnect

    # mplex's close() on a connection that just went away: a bare RuntimeError raised from MuxedConnUnavailable
    left = RuntimeError("Failed to send close message")
    left.__context__ = MuxedConnUnavailable("gone")
    assert is_disconnect(left)
    assert is_disconnect(trio.BrokenResourceError())
    for hostile in (DecodeError("bad varint"), MessageTooLarge("2 MiB"), IncompleteReadError("short"), RuntimeError()):
        assert not is_disconnect(hostile), hostile

    for raised, counted in ((left, []), (DecodeError("bad"), ["/meshsub/1.1.0"])):
        malformed, host, stream = [], _Host(), _Stream()

        async def handler(_stream, raised=raised):
            raise raised

        def count(proto, peer, exc, malformed=malformed):
            malformed.append(proto)

        guarded = guard_handler(host, "/meshsub/1.1.0", handler, count)
        trio.run(guarded, stream)
        assert malformed == counted  # only garbage is counted (and logged) as malformed
        assert stream.resets == 1 and host.network.closed == [PID]  # either way the stream and peer are dropped
