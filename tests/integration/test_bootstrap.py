"""Peers on "other hosts": no same-machine registry, only bootstrap addresses (manifest field and --bootstrap-peer).

Peer 1 listens on a fixed port that the manifest's ``bootstrap_peers`` names (host:port, no peer ID); peer 2
relies on that; peer 3 is given the full multiaddr with --bootstrap-peer. Peers 2 and 3 never dial each other
directly at first: they learn each other's addresses through announcements (peer exchange) and must still
exchange models.
"""

from __future__ import annotations

import re
import signal
import socket
import time

import pytest

from helpers import guide_arch_hash, make_manifest
from integration.peer_processes import PeerProcess, peer_env
from quinkgl.errors import ExitCode
from quinkgl.manifest.codec import write_manifest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bootstrap_only_swarm_exchanges_models_between_all_pairs(tmp_path, guide_script, mnist_root):
    port = free_port()
    manifest = make_manifest(
        arch_hash=guide_arch_hash(),
        name="remote",
        bootstrap_peers=(f"127.0.0.1:{port}",),
        params={"transport": {"local_discovery": False}},
    )
    write_manifest(manifest, tmp_path / "remote.qgl")
    # Many rounds, ended by SIGTERM once every peer has aggregated from both others: the test waits on that event
    # (bounded), not on a round count, so a slow start under CPU load cannot make it fail.
    common = [
        "--manifest",
        "remote.qgl",
        "--script",
        "mnist_peer_script.py",
        "--rounds",
        "10000",
        "--local-steps",
        "30",
        "--max-eval-batches",
        "30",
        "--trust-policy",
        "open",
        "--script-arg",
        f"data_root={mnist_root}",
    ]
    peers = []
    try:
        # separate state dirs: nothing shared on disk, as on separate machines
        first = PeerProcess(tmp_path, "peer-1", [*common, "--port", str(port)], peer_env(tmp_path / "s1"))
        peers.append(first)
        first_id = first.peer_id()
        peers.append(PeerProcess(tmp_path, "peer-2", [*common, "--port", "0"], peer_env(tmp_path / "s2")))
        peers.append(
            PeerProcess(
                tmp_path,
                "peer-3",
                [*common, "--port", "0", "--bootstrap-peer", f"/ip4/127.0.0.1/tcp/{port}/p2p/{first_id}"],
                peer_env(tmp_path / "s3"),
            )
        )
        ids = {peer.node_id: peer.peer_id() for peer in peers}

        def heard(peer: PeerProcess) -> set[str]:
            senders = re.findall(r"aggregated models from \d peer\(s\) in round \d+: (.*) \(", peer.text())
            return {pid for line in senders for pid in line.split(", ")}

        deadline = time.monotonic() + 600
        for peer in peers:
            others = {pid for node, pid in ids.items() if node != peer.node_id}
            while heard(peer) != others and time.monotonic() < deadline:
                assert peer.proc.poll() is None, peer.text()
                time.sleep(0.2)  # polling the log for the event, bounded by the deadline
            assert heard(peer) == others, (peer.node_id, heard(peer), others, peer.text())
        for peer in peers:
            peer.signal(signal.SIGTERM)
        for peer in peers:
            assert peer.wait(timeout=120) == ExitCode.TERMINATED, peer.text()
    finally:
        for peer in peers:
            peer.stop()
