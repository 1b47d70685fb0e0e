"""Peers on separate hosts (network namespaces on one bridge): `--host 0.0.0.0` and one `host:port` bootstrap peer.

Each host has its own address, loopback and QUINKGL_STATE_DIR, so the same-machine registry cannot help: the
peers meet only through host-1's bootstrap address and peer exchange. Waits are on log lines with bounded
deadlines; the rounds are small (the guide's MLP, 5 local steps).
"""

from __future__ import annotations

import time

import pytest
from network.peers import NetPeer

pytestmark = [pytest.mark.slow, pytest.mark.network]

ROUNDS = 3


def test_four_hosts_one_bootstrap_address(netlab, swarm_files):
    started = time.monotonic()
    hosts = [netlab.add_host(f"host-{i}", i) for i in range(1, 5)]
    bootstrap = f"{hosts[0].address}:7001"
    # every peer waits (bounded) until it sees the three others, so all rounds are shared ones even under load
    common = [
        *swarm_files,
        "--host",
        "0.0.0.0",
        "--rounds",
        str(ROUNDS),
        "--wait-for-peers",
        "3",
        "--discovery-wait",
        "120",
    ]
    peers = [NetPeer(netlab, hosts[0], "host-1", [*common, "--port", "7001"])]
    peers += [
        NetPeer(netlab, host, host.name, [*common, "--port", "7001", "--bootstrap-peer", bootstrap])
        for host in hosts[1:]
    ]
    ids = {peer.node_id: peer.peer_id() for peer in peers}
    for peer in peers:
        assert peer.wait(timeout=400) == 0, peer.text()[-6000:]
    addresses = {peer.peer_id(): peer.host.address for peer in peers}
    for peer in peers:
        others = {pid for node, pid in ids.items() if node != peer.node_id}
        heard = peer.heard()
        assert len(heard & others) >= 2, (peer.node_id, heard, peer.text()[-6000:])
        learned = peer.learned_addrs()
        assert learned, peer.text()[-6000:]
        for origin, addrs in learned.items():
            # everything a peer learned about another host is that host's own address: never 0.0.0.0 or loopback
            assert addrs == {f"/ip4/{addresses[origin]}/tcp/7001"}, (peer.node_id, origin, addrs)
    print(
        f"four hosts: {time.monotonic() - started:.1f} s, heard "
        + ", ".join(f"{p.node_id}={len(p.heard())}" for p in peers)
    )
