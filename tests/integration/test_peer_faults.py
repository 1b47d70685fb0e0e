"""Real `quinkgl run` processes on loopback: trust refusals, a killed peer, Ctrl-C, and hostile payloads."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest
import trio

from helpers import guide_arch_hash, make_manifest
from integration.peer_processes import PeerProcess, peer_env
from quinkgl import keys, wire
from quinkgl.errors import ExitCode
from quinkgl.manifest.codec import manifest_to_dict, write_manifest

pytestmark = pytest.mark.slow


@pytest.fixture
def swarm(tmp_path, guide_script, mnist_root):
    """A workdir with the guide's script, a signed manifest, a creator key and an isolated state dir."""
    key = keys.generate_private_key()
    manifest = make_manifest(key, arch_hash=guide_arch_hash(), name="faults")
    write_manifest(manifest, tmp_path / "demo.qgl")
    assert guide_script.parent == tmp_path  # the guide_script fixture already put it here
    return {
        "dir": tmp_path,
        "manifest": manifest,
        "key": key,
        "env": peer_env(tmp_path / "state"),
        "data": str(mnist_root),
    }


def peer_args(swarm, rounds, *extra, manifest="demo.qgl"):
    return [
        "--manifest",
        manifest,
        "--script",
        "mnist_peer_script.py",
        "--port",
        "0",
        "--rounds",
        str(rounds),
        "--gossip-interval",
        "12",
        "--script-arg",
        f"data_root={swarm['data']}",
        "--local-steps",
        "30",
        "--max-eval-batches",
        "30",
        *extra,
    ]


def test_untrusted_manifests_stop_run_before_any_network_activity(swarm, cli):
    folder = swarm["dir"]
    doc = manifest_to_dict(swarm["manifest"])
    (folder / "tampered.qgl").write_text(json.dumps(dict(doc, round_limit=7)))
    write_manifest(make_manifest(arch_hash=guide_arch_hash(), name="faults"), folder / "unsigned.qgl")
    write_manifest(
        make_manifest(swarm["key"], arch_hash=guide_arch_hash(), name="old", expires_at="2020-01-01"),
        folder / "expired.qgl",
    )
    impostor = keys.generate_private_key()
    write_manifest(make_manifest(impostor, arch_hash=guide_arch_hash(), name="faults"), folder / "impostor.qgl")
    trusted = keys.public_key_text(swarm["key"])
    env = {"QUINKGL_STATE_DIR": str(folder / "state")}
    cases = [
        ("tampered.qgl", ["--trust-policy", "tofu"], ExitCode.SIGNATURE_INVALID, "signature check failed"),
        ("unsigned.qgl", ["--trust-policy", "pinned", "--trusted-pubkey", trusted], ExitCode.UNTRUSTED, "unsigned"),
        (
            "impostor.qgl",
            ["--trust-policy", "pinned", "--trusted-pubkey", trusted],
            ExitCode.UNTRUSTED,
            "not a trusted key",
        ),
        ("expired.qgl", ["--trust-policy", "open"], ExitCode.EXPIRED, "expired at 2020-01-01"),
    ]
    # TOFU: the first run pins the creator of "faults"; the impostor's manifest of the same name is then refused.
    first = cli(
        "run",
        *peer_args(swarm, 1, "--trust-policy", "tofu", "--rounds", "1", manifest="demo.qgl"),
        "--node-id",
        "pin",
        env=env,
        timeout=300,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    cases.append(("impostor.qgl", ["--trust-policy", "tofu"], ExitCode.UNTRUSTED, "TOFU conflict"))
    registry = folder / "state" / "peers"
    before = sorted(p.name for p in registry.iterdir()) if registry.exists() else []
    for manifest, flags, code, message in cases:
        result = cli("run", *peer_args(swarm, 1, *flags, manifest=manifest), "--node-id", "x", env=env, timeout=120)
        assert result.returncode == code, (manifest, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
        assert "listening on" not in result.stdout
    after = sorted(p.name for p in registry.iterdir()) if registry.exists() else []
    assert after == before  # no peer ever registered or listened


def test_killed_peer_others_finish_and_it_rejoins_with_same_id_and_resumes(swarm):
    folder, env = swarm["dir"], swarm["env"]
    peers = [
        PeerProcess(folder, f"peer-{i}", peer_args(swarm, 6, "--checkpoint-dir", f"ckpt/peer-{i}"), env)
        for i in (1, 2, 3)
    ]
    try:
        victim = peers[2]
        victim_id = victim.peer_id()
        victim.wait_for(r"^round=002", timeout=300)
        latest = folder / "ckpt" / "peer-3" / "latest"
        deadline = time.monotonic() + 60  # on_round_end prints before the round's checkpoint is written
        while time.monotonic() < deadline and not (latest.exists() and latest.read_text().strip() >= "round-000002"):
            time.sleep(0.05)
        victim.signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        for survivor in peers[:2]:
            assert survivor.wait(timeout=600) == 0, survivor.text()
            assert "round=006" in survivor.text()
        restarted = PeerProcess(folder, "peer-3", peer_args(swarm, 6, "--checkpoint-dir", "ckpt/peer-3"), env)
        peers.append(restarted)
        assert restarted.peer_id() == victim_id  # identity persisted with the checkpoint dir
        resumed = int(restarted.wait_for(r"^resumed from checkpoint at round (\d+)").group(1))
        assert resumed >= 2
        assert restarted.wait(timeout=600) == 0, restarted.text()
        rounds = [
            int(r) for r in re.findall(r"^round=(\d+)", restarted.text().split("resumed from checkpoint")[1], re.M)
        ]
        assert rounds == list(range(resumed + 1, 7))  # continues where the checkpoint left off
    finally:
        for peer in peers:
            peer.stop()


def test_ctrl_c_writes_a_final_checkpoint_and_exits_130(swarm):
    peer = PeerProcess(swarm["dir"], "solo", peer_args(swarm, 50, "--checkpoint-dir", "ckpt/solo"), swarm["env"])
    try:
        peer.wait_for(r"^round=001")
        peer.signal(signal.SIGINT)
        assert peer.wait(timeout=60) == ExitCode.INTERRUPTED
        assert "final checkpoint written" in peer.text() and "summary: node=solo" in peer.text()
        latest = (swarm["dir"] / "ckpt" / "solo" / "latest").read_text().strip()
        state = json.loads((swarm["dir"] / "ckpt" / "solo" / latest / "state.json").read_text())
        assert state["extra"]["interrupted"] is True and state["round"] >= 1
    finally:
        peer.stop()
    again = PeerProcess(swarm["dir"], "solo", peer_args(swarm, 50, "--checkpoint-dir", "ckpt/solo"), swarm["env"])
    try:
        again.wait_for(r"^resumed from checkpoint at round \d+")
        again.signal(signal.SIGTERM)
        assert again.wait(timeout=60) == ExitCode.TERMINATED
    finally:
        again.stop()


def test_pushed_payloads_are_dropped_unread_and_never_aggregated_while_the_peer_trains(swarm):
    """A foreign client that announces a compatible manifest and pushes garbage, truncated, oversized and
    valid-format updates: each push is counted (``unsolicited`` / ``payload_too_large``), none is aggregated, and
    the peers keep training together (round protocol v2: a peer aggregates only what it asked for)."""
    from quinkgl.runtime.peerview import encode_announcement
    from quinkgl.transport import TransportConfig, TransportError
    from quinkgl_transport_libp2p.params import Libp2pParams
    from quinkgl_transport_libp2p.transport import create_transport

    manifest = swarm["manifest"]
    peer = PeerProcess(swarm["dir"], "target", peer_args(swarm, 10000), swarm["env"])
    other = PeerProcess(swarm["dir"], "other", peer_args(swarm, 10000), swarm["env"])
    pushed = []
    try:
        target_id = peer.peer_id()

        async def attack():
            config = TransportConfig(
                swarm_id=manifest.swarm_id,
                node_id="intruder",
                max_payload_bytes=8 << 20,
                options={"registry_dir": str(swarm["dir"] / "state" / "peers")},
            )
            client = create_transport(Libp2pParams(), config)
            client.set_handlers(on_announcement=lambda s, d: None, on_payload=lambda s, d: None)
            async with client:
                await client.wait_connected([target_id], timeout=60)
                hello = encode_announcement(
                    swarm_id=manifest.swarm_id,
                    arch_hash=manifest.model.arch_hash,
                    node_id="intruder",
                    round_idx=0,
                    pushed=10**6,
                    done=False,
                    metrics={},
                    metadata={},
                )
                from helpers import mnist_net

                def update(round_idx):
                    return wire.encode_update(
                        mnist_net().state_dict(),
                        swarm_id=manifest.swarm_id,
                        sender=client.peer_id,
                        round=round_idx,
                        num_samples=10,
                    )

                with trio.fail_after(60):
                    while "[peer-discovered] " + client.peer_id not in peer.text():
                        await client.announce(hello)
                        await trio.sleep(0.5)
                await client.send(target_id, b"\x00garbage" * 100, timeout=30)
                good = update(1)
                await client.send(target_id, good[: len(good) // 2], timeout=30)
                with pytest.raises(TransportError):
                    await client.send(target_id, good + b"\0" * (2 << 20), timeout=30)
                pushed.append(client.peer_id)
                for _ in range(4):  # valid updates for the rounds the target is in, every time it ends a round
                    rounds = peer.text().count("round=")
                    for ahead in range(3):
                        await client.announce(hello)
                        await client.send(target_id, update(rounds + ahead), timeout=30)
                        pushed.append(rounds + ahead)
                    with trio.fail_after(120):
                        while peer.text().count("round=") == rounds:
                            await trio.sleep(0.2)

        trio.run(attack)
        rounds_so_far = peer.text().count("round=")
        peer.wait_for(r"^round=\d+", count=rounds_so_far + 2)  # it keeps training after the attack
        for process in (peer, other):
            process.signal(signal.SIGTERM)
            assert process.wait(timeout=60) == ExitCode.TERMINATED
        summary = peer.wait_for(r"^summary: .*").group(0)
        assert "payload_too_large" in summary, summary
        unsolicited = int(re.search(r"unsolicited'?[=:]\s*(\d+)", summary).group(1))
        assert unsolicited == 2 + len(pushed) - 1, summary  # garbage + truncated + the valid ones
        aggregated = re.findall(r"^\[aggregated\] peers=\[(.*)\]", peer.text(), re.M)
        print(f"{len(pushed) - 1} valid pushes; {len(aggregated)} aggregations, none with the intruder")
        assert aggregated and all(pushed[0] not in line for line in aggregated)
        assert any(other.peer_id() in line for line in aggregated)
    finally:
        peer.stop()
        other.stop()
