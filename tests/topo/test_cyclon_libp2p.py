"""CyclonTopology over libp2p, three real `quinkgl run` processes (issue 11, item 1).

No same-machine registry and no announcements: peers 2 and 3 know only peer 1 (the manifest's bootstrap address).
They must learn each other — peer ID and dialable address, from a descriptor the other signed with its identity
key — through Cyclon shuffles alone, and pull models from each other.
"""

from __future__ import annotations

import re
import signal
import socket
import time

import pytest

from helpers import guide_arch_hash, make_manifest
from integration.peer_processes import LISTENING, PeerProcess, peer_env
from quinkgl.errors import ExitCode
from quinkgl.manifest.codec import write_manifest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cyclon_peers_find_each_other_through_shuffles_over_libp2p(tmp_path, guide_script, mnist_root):
    port = free_port()
    manifest = make_manifest(
        arch_hash=guide_arch_hash(),
        name="cyclon-libp2p",
        topology="CyclonTopology",
        bootstrap_peers=(f"127.0.0.1:{port}",),
        params={"transport": {"local_discovery": False}, "topology": {"view_size": 4, "fanout": 2}},
    )
    write_manifest(manifest, tmp_path / "cyclon.qgl")
    common = [
        "--manifest",
        "cyclon.qgl",
        "--script",
        "mnist_peer_script.py",
        "--rounds",
        "10000",
        "--local-steps",
        "5",
        "--max-eval-batches",
        "2",
        "--gossip-interval",
        "6",
        "--trust-policy",
        "open",
        "--script-arg",
        f"data_root={mnist_root}",
    ]
    peers: list[PeerProcess] = []
    try:
        peers.append(PeerProcess(tmp_path, "peer-1", [*common, "--port", str(port)], peer_env(tmp_path / "s1")))
        peers[0].wait_for(LISTENING.pattern, timeout=300)
        for n in (2, 3):
            peers.append(PeerProcess(tmp_path, f"peer-{n}", [*common, "--port", "0"], peer_env(tmp_path / f"s{n}")))
        for peer in peers:  # start-up (torch, libp2p imports) is slow on a loaded machine: wait, bounded
            peer.wait_for(LISTENING.pattern, timeout=300)
        ids = {peer.node_id: peer.peer_id() for peer in peers}

        def heard(peer: PeerProcess) -> set[str]:
            senders = re.findall(r"aggregated models from \d peer\(s\) in round \d+: (.*) \(", peer.text())
            return {pid for line in senders for pid in line.split(", ")}

        deadline = time.monotonic() + 150  # bounded wait on the event; far less on a quiet machine
        for peer in peers[1:]:  # 2 and 3 can only know each other through shuffles
            others = {pid for node, pid in ids.items() if node != peer.node_id}
            while heard(peer) != others and time.monotonic() < deadline:
                assert peer.proc.poll() is None, peer.text()
                time.sleep(0.2)  # polling the log for the event, bounded by the deadline
            assert heard(peer) == others, (peer.node_id, heard(peer), others, peer.text())
        for peer in peers:
            peer.signal(signal.SIGTERM)
        for peer in peers:
            assert peer.wait(timeout=60) == ExitCode.TERMINATED, peer.text()
            # no peer broadcast an announcement: what they know of each other came with requests and shuffles
            assert re.search(r"^summary: .* announcements=0 ", peer.text(), re.M), peer.text()
    finally:
        for peer in peers:
            peer.stop()
