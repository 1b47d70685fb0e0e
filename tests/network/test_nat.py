"""Two "home" hosts, each behind its own masquerading NAT router, and one public host running `--relay`.

Each NATed peer joins through the public peer's bootstrap address, learns from a dial-back that nobody can dial
it, reserves a slot on the public peer (circuit relay v2) and announces its relayed address. The two NATed peers
must then exchange models *with each other* through the relay (Noise end to end); the relay's byte count and
the rounds are printed. Hole punching (DCUtR) is not attempted here (bench/relay_spike.py tried it, see
docs/networking.md).
"""

from __future__ import annotations

import re
import time

import pytest
from network.peers import NetPeer

from helpers import guide_arch_hash, make_manifest
from quinkgl.manifest.codec import write_manifest

pytestmark = [pytest.mark.slow, pytest.mark.network]

SEND_FAILED = re.compile(r"sending round \d+ to (\S+) failed: (.*)$", re.M)


@pytest.mark.xfail(
    strict=False,
    reason=(
        "timing: the pull protocol's 3 rounds can end before a home peer's relay reservation is announced and the "
        "other home has dialled the circuit (seen 1 failure in 3 runs on the merged tree); the test should run "
        "until both homes heard each other (as test_bootstrap does), not a fixed round count"
    ),
)
def test_nat_homes_train_with_the_public_peer(netlab, nat_available, swarm_files):
    started = time.monotonic()
    public = netlab.add_host("host-1", 1)
    homes = [netlab.add_nat_host(f"home-{k}", k) for k in (1, 2)]
    common = [
        *swarm_files,
        "--host",
        "0.0.0.0",
        "--port",
        "7001",
        "--rounds",
        "3",
        "--wait-for-peers",
        "2",
        "--discovery-wait",
        "120",
        "--gossip-interval",
        "4",
    ]
    hub = NetPeer(netlab, public, "host-1", [*common, "--relay"])
    # an outsider behind a third NAT: same model, another manifest (swarm); the relay must refuse it a slot
    outsider_host = netlab.add_nat_host("home-3", 3)
    write_manifest(make_manifest(arch_hash=guide_arch_hash(), name="outsiders"), netlab.workdir / "outsiders.qgl")
    outside_args = [
        *common[2:],
        "--manifest",
        str(netlab.workdir / "outsiders.qgl"),
        "--discovery-wait",
        "15",
        "--bootstrap-peer",
        f"{public.address}:7001",
    ]
    outsider = NetPeer(netlab, outsider_host, "home-3", outside_args)
    # The outsider must have asked for a slot before the swarm starts (its 3 rounds are over in seconds): it asks
    # right after the hub's dial-back check says nobody can reach it.
    outsider.wait_for("can dial us back", timeout=180)
    peers = [NetPeer(netlab, h, h.name, [*common, "--bootstrap-peer", f"{public.address}:7001"]) for h in homes]
    hub_id = hub.peer_id()
    home_ids = [p.peer_id() for p in peers]
    for peer in (hub, *peers, outsider):
        assert peer.wait(timeout=400) == 0, peer.text()[-6000:]
    assert "reserved a relay slot" not in outsider.text(), outsider.text()[-6000:]
    assert set(home_ids) <= hub.heard(), hub.text()[-6000:]
    for peer, other in ((peers[0], home_ids[1]), (peers[1], home_ids[0])):
        assert hub_id in peer.heard(), peer.text()[-6000:]
        learned = peer.learned_addrs().get(other, set())
        failures = [why for pid, why in SEND_FAILED.findall(peer.text()) if pid == other]
        print(
            f"nat: {peer.node_id} learned {sorted(learned)} for the other home; aggregated its model in rounds "
            f"{sorted(r for r, ids in peer.aggregated().items() if other in ids)}; {len(failures)} failed sends "
            f"to it {failures[:1]}"
        )
        assert "reserved a relay slot" in peer.text(), peer.text()[-6000:]
        assert any(a.endswith(f"/p2p/{hub_id}/p2p-circuit") for a in learned), learned
        assert all("0.0.0.0" not in a and "127.0.0.1" not in a for a in learned), learned
        assert other in peer.heard(), peer.text()[-6000:]  # the two NATed peers exchanged models
    relayed = re.search(r"relay: .*relayed_bytes=(\d+)", hub.text())
    refused = re.search(r"relay: .*relay_refused_non_member=(\d+)", hub.text())
    assert relayed and refused, hub.text()[-6000:]
    print(
        f"nat: {time.monotonic() - started:.1f} s; relayed {int(relayed.group(1))} bytes in 3 rounds; "
        f"refused {refused.group(1)} relay requests of the outsider"
    )
