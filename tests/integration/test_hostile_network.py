"""A malformed RPC from a foreign py-libp2p client against real `quinkgl run` processes (issue 7 item 1).

With the transport's stream guard the peer drops the sender, counts ``rpc_malformed``, accepts new connections and
keeps training. With the guard removed (py-libp2p 0.8.1 as shipped) the same six bytes stop its libp2p service,
and ``run`` must then exit with code 14 and say why, instead of 0.
"""

from __future__ import annotations

import signal
import sys

import pytest
import trio

from helpers import guide_arch_hash, make_manifest
from integration import peer_processes
from integration.peer_processes import PeerProcess, peer_env
from quinkgl import keys
from quinkgl.errors import ExitCode
from quinkgl.manifest.codec import write_manifest

pytestmark = pytest.mark.slow

MALFORMED_RPC = b"\x06" + bytes.fromhex("0affffffff0f")  # varint length 6, then a protobuf field of 4 GiB

UNGUARDED = """
import sys
import quinkgl_transport_libp2p.transport as transport
transport.install_stream_guard = lambda host, on_malformed: None  # py-libp2p as shipped: no stream guard
from quinkgl_cli.main import main
sys.exit(main())
"""


@pytest.fixture
def swarm(tmp_path, guide_script, mnist_root):
    key = keys.generate_private_key()
    write_manifest(make_manifest(key, arch_hash=guide_arch_hash(), name="hostile"), tmp_path / "demo.qgl")
    return {"dir": tmp_path, "env": peer_env(tmp_path / "state"), "data": str(mnist_root)}


def peer_args(swarm, rounds: int) -> list[str]:
    return [
        "--manifest",
        "demo.qgl",
        "--script",
        "mnist_peer_script.py",
        "--port",
        "0",
        "--rounds",
        str(rounds),
        "--gossip-interval",
        "2",
        "--script-arg",
        f"data_root={swarm['data']}",
        "--local-steps",
        "5",
        "--max-eval-batches",
        "5",
        "--trust-policy",
        "open",
    ]


async def _send_malformed_rpc(address: str) -> None:
    """Connect to ``address`` with fresh keys, send the six bytes on /meshsub/1.1.0, then try a second client."""
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from transport_libp2p.p2p_helpers import raw_host

    info = info_from_p2p_addr(multiaddr.Multiaddr(address))
    with trio.fail_after(60):
        async with raw_host() as evil:
            await evil.connect(info)
            stream = await evil.new_stream(info.peer_id, ["/meshsub/1.1.0"])
            await stream.write(MALFORMED_RPC)
            with trio.move_on_after(10):  # the guarded peer resets the stream and drops us
                while evil.get_network().get_connections(info.peer_id):
                    await trio.sleep(0.1)


async def _connects(address: str) -> bool:
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from transport_libp2p.p2p_helpers import raw_host

    info = info_from_p2p_addr(multiaddr.Multiaddr(address))
    async with raw_host() as newcomer:
        with trio.move_on_after(20):
            await newcomer.connect(info)
            return True
    return False


def test_malformed_rpc_drops_the_sender_and_the_peer_keeps_training(swarm):
    peer = PeerProcess(swarm["dir"], "target", peer_args(swarm, 10000), swarm["env"])
    try:
        address = peer.address()
        peer.wait_for(r"^round=\d+")
        trio.run(_send_malformed_rpc, address)
        assert trio.run(_connects, address)  # still accepting connections
        rounds_so_far = peer.text().count("round=")
        peer.wait_for(r"^round=\d+", count=rounds_so_far + 2)  # and still training
        peer.signal(signal.SIGTERM)
        assert peer.wait(timeout=60) == ExitCode.TERMINATED
        summary = peer.wait_for(r"^summary: .*").group(0)
        assert "'rpc_malformed': 1" in summary, summary
    finally:
        peer.stop()


def test_without_the_guard_the_attack_stops_the_service_and_run_exits_14(swarm, monkeypatch):
    monkeypatch.setattr(peer_processes, "quinkgl_executable", lambda: [sys.executable, "-c", UNGUARDED])
    peer = PeerProcess(swarm["dir"], "unguarded", peer_args(swarm, 10000), swarm["env"])
    try:
        address = peer.address()
        peer.wait_for(r"^round=\d+")
        trio.run(_send_malformed_rpc, address)
        code = peer.wait(timeout=240)
        text = peer.text()
        assert code == ExitCode.ROUNDS_INCOMPLETE, text[-3000:]
        assert "error: the run ended after" in text and "of 10000 rounds" in text, text[-3000:]
    finally:
        peer.stop()
