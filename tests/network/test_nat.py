"""Two "home" hosts, each behind its own masquerading NAT router, and one public host running `--relay`.

Each NATed peer joins through the public peer's bootstrap address, learns from a dial-back that nobody can dial
it, reserves a slot on the public peer (circuit relay v2) and announces its relayed address. The two NATed peers
must then exchange models *with each other* through the relay (Noise end to end). The peers run many rounds and
are stopped (SIGTERM) once each home has aggregated a model of the other, a bounded wait on log lines, not a fixed
round count: how many rounds the relayed address takes to spread depends on the machine's load. The relay's
bytes come from its own metrics (``relayed_bytes`` in metrics.jsonl, per round). Hole punching (DCUtR) is not
attempted here (bench/relay_spike.py tried it, see docs/networking.md).
"""

from __future__ import annotations

import json
import re
import time

import pytest
from network.peers import NetPeer

from helpers import guide_arch_hash, make_manifest
from quinkgl.manifest.codec import write_manifest

pytestmark = [pytest.mark.slow, pytest.mark.network]

SEND_FAILED = re.compile(r"source (\S+) failed: (.*)$", re.M)
ROUNDS = 10000  # never reached: the test stops the peers once both homes heard each other
EXCHANGE_WAIT_S = 240  # bound on the wait for the homes' exchange, from the homes' start


def test_nat_homes_train_with_each_other_through_the_relay(netlab, nat_available, swarm_files):
    started = time.monotonic()
    public = netlab.add_host("host-1", 1)
    homes = [netlab.add_nat_host(f"home-{k}", k) for k in (1, 2)]
    common = [
        *swarm_files,
        "--host",
        "0.0.0.0",
        "--port",
        "7001",
        "--wait-for-peers",
        "2",
        "--discovery-wait",
        "120",
        "--gossip-interval",
        "4",
    ]
    hub_checkpoints = netlab.workdir / "hub-checkpoints"
    hub = NetPeer(
        netlab,
        public,
        "host-1",
        [*common, "--rounds", str(ROUNDS), "--relay", "--checkpoint-dir", str(hub_checkpoints)],
    )
    # an outsider behind a third NAT: same model, another manifest (swarm); the relay must refuse it a slot
    outsider_host = netlab.add_nat_host("home-3", 3)
    write_manifest(make_manifest(arch_hash=guide_arch_hash(), name="outsiders"), netlab.workdir / "outsiders.qgl")
    outside_args = [
        *common[2:],
        "--rounds",
        "3",
        "--manifest",
        str(netlab.workdir / "outsiders.qgl"),
        "--discovery-wait",
        "15",
        "--bootstrap-peer",
        f"{public.address}:7001",
    ]
    outsider = NetPeer(netlab, outsider_host, "home-3", outside_args)
    # The outsider asks for a slot right after the hub's dial-back check says nobody can reach it.
    outsider.wait_for("can dial us back", timeout=180)
    peers = [
        NetPeer(netlab, h, h.name, [*common, "--rounds", str(ROUNDS), "--bootstrap-peer", f"{public.address}:7001"])
        for h in homes
    ]
    hub_id = hub.peer_id()
    home_ids = [p.peer_id() for p in peers]
    homes_started = time.monotonic()
    pairs = ((peers[0], home_ids[1]), (peers[1], home_ids[0]))
    deadline = homes_started + EXCHANGE_WAIT_S
    while not all(other in peer.heard() for peer, other in pairs):  # the two NATed peers exchanged models
        for peer in (hub, *peers):
            assert peer.proc.poll() is None, peer.text()[-6000:]
        assert time.monotonic() < deadline, "\n\n".join(p.text()[-4000:] for p in peers)
        time.sleep(0.5)  # polling the logs for the event, bounded by the deadline
    exchange_seconds = time.monotonic() - homes_started
    for peer in (*peers, hub):
        peer.proc.terminate()
    for peer in (*peers, hub):
        assert peer.wait(timeout=120) == 143, peer.text()[-6000:]
    assert outsider.wait(timeout=120) == 0, outsider.text()[-6000:]
    assert "reserved a relay slot" not in outsider.text(), outsider.text()[-6000:]
    assert set(home_ids) <= hub.heard(), hub.text()[-6000:]
    for peer, other in pairs:
        assert hub_id in peer.heard(), peer.text()[-6000:]
        learned = peer.learned_addrs().get(other, set())
        failures = [why for pid, why in SEND_FAILED.findall(peer.text()) if pid == other]
        print(
            f"nat: {peer.node_id} learned {sorted(learned)} for the other home; aggregated its model in rounds "
            f"{sorted(r for r, ids in peer.aggregated().items() if other in ids)}; {len(failures)} failed "
            f"requests to it {failures[:1]}"
        )
        assert "reserved a relay slot" in peer.text(), peer.text()[-6000:]
        assert all("0.0.0.0" not in a and "127.0.0.1" not in a for a in learned), learned
    # At least one home dialled the other through the relayed address it learned; the connection carries both
    # directions, so the other home may have been stopped before that address's announcement reached it.
    circuits = [
        any(a.endswith(f"/p2p/{hub_id}/p2p-circuit") for a in peer.learned_addrs().get(other, set()))
        for peer, other in pairs
    ]
    assert any(circuits), [peer.learned_addrs() for peer, _ in pairs]
    # the relay's metrics: relayed_bytes (cumulative) in every round's record of metrics.jsonl and in the summary
    records = [json.loads(line) for line in (hub_checkpoints / "metrics.jsonl").read_text().splitlines()]
    relayed = [r["relayed_bytes"] for r in records]
    per_round = [b - a for a, b in zip([0, *relayed], relayed, strict=False)]
    summary = re.search(r"^summary: .* relayed=(\d+) ", hub.text(), re.M)
    refused = re.search(r"relay: .*relay_refused_non_member=(\d+)", hub.text())
    assert summary and refused, hub.text()[-6000:]
    assert relayed == sorted(relayed) and relayed[-1] > 0, relayed
    assert int(summary.group(1)) >= relayed[-1]
    rounds_relaying = [b for b in per_round if b > 0]
    print(
        f"nat: {time.monotonic() - started:.1f} s; the homes heard each other {exchange_seconds:.1f} s after they "
        f"started; relayed {int(summary.group(1))} bytes in all, {relayed[-1]} in the hub's {len(records)} rounds "
        f"(per round relaying: median {sorted(rounds_relaying)[len(rounds_relaying) // 2]} bytes, "
        f"max {max(rounds_relaying)}); refused {refused.group(1)} relay requests of the outsider"
    )
