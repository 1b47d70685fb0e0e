"""A certified swarm over libp2p with real `quinkgl run` processes (issue 7, closed swarms).

Two members with certificates from the manifest's creator train together. An outsider with a valid copy of the
manifest and a certificate stolen from a member joins the network through a libp2p client of its own (the way
anyone can): it announces with the stolen certificate and without one, and pushes models to both members. It must
get nothing in (no member aggregates its model or admits it) and nothing out (no model is ever pushed to it). The
same outsider started as `quinkgl run` with the stolen certificate stops at start with exit code 14.
"""

from __future__ import annotations

import re
import socket

import pytest
import trio
from transport_libp2p.p2p_helpers import make_transport

from helpers import guide_arch_hash, make_manifest, mnist_net
from integration.peer_processes import PeerProcess, peer_env
from quinkgl import keys, wire
from quinkgl.errors import ExitCode
from quinkgl.manifest.codec import write_manifest
from quinkgl.membership import issue_certificate, peer_id_from_identity_key, write_certificate
from quinkgl.runtime.peerview import encode_announcement

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_outsider_gets_nothing_in_and_nothing_out_of_a_certified_swarm(tmp_path, guide_script, mnist_root):
    creator = keys.generate_private_key()
    port = free_port()
    manifest = make_manifest(
        creator,
        arch_hash=guide_arch_hash(),
        name="ward-7",
        membership="certified",
        bootstrap_peers=(f"127.0.0.1:{port}",),
        params={"transport": {"local_discovery": False}},
    )
    write_manifest(manifest, tmp_path / "ward.qgl")
    ids = {}
    for node in ("m1", "m2"):
        # The identity key exists before the peer first starts; the creator certifies the peer ID derived from it.
        keys.write_private_key(keys.generate_private_key(), str(tmp_path / f"ck-{node}" / "libp2p-identity.pem"))
        ids[node] = peer_id_from_identity_key(tmp_path / f"ck-{node}" / "libp2p-identity.pem")
        write_certificate(
            issue_certificate(creator, swarm_id=manifest.swarm_id, peer_id=ids[node]), tmp_path / f"{node}.cert"
        )
    common = [
        "--manifest",
        "ward.qgl",
        "--script",
        "mnist_peer_script.py",
        "--rounds",
        "3",
        "--local-steps",
        "20",
        "--max-eval-batches",
        "20",
        "--trust-policy",
        "open",
        "--script-arg",
        f"data_root={mnist_root}",
    ]
    peers = []
    outsider = {"payloads": [], "send_errors": 0, "sent": 0, "announced": 0}
    try:
        # A stolen certificate does not even start: it names another peer ID.
        thief = PeerProcess(tmp_path, "thief", [*common, "--membership-cert", "m1.cert"], peer_env(tmp_path / "s3"))
        assert thief.wait(timeout=120) == int(ExitCode.NOT_A_MEMBER), thief.text()
        assert "for peer " + ids["m1"] in thief.text() and "Traceback" not in thief.text()
        peers.append(
            PeerProcess(
                tmp_path,
                "m1",
                [*common, "--port", str(port), "--checkpoint-dir", "ck-m1", "--membership-cert", "m1.cert"],
                peer_env(tmp_path / "s1"),
            )
        )
        peers.append(
            PeerProcess(
                tmp_path,
                "m2",
                [*common, "--checkpoint-dir", "ck-m2", "--membership-cert", "m2.cert"],
                peer_env(tmp_path / "s2"),
            )
        )
        assert [p.peer_id() for p in peers] == [ids["m1"], ids["m2"]]

        stolen = (tmp_path / "m1.cert").read_text()
        zero = {k: v * 0 for k, v in mnist_net().state_dict().items()}

        async def intrude():
            import json

            transport, inbox = make_transport(
                swarm_id=manifest.swarm_id, name="outsider", bootstrap=(f"/ip4/127.0.0.1/tcp/{port}/p2p/{ids['m1']}",)
            )
            async with transport:
                hello = {
                    "swarm_id": manifest.swarm_id,
                    "arch_hash": manifest.model.arch_hash,
                    "node_id": "outsider",
                    "round_idx": 1,
                    "pushed": 1,
                    "done": False,
                    "metrics": {},
                    "metadata": {},
                }
                with trio.move_on_after(400):
                    while any(p.proc.poll() is None for p in peers):
                        for cert in (json.loads(stolen), None):
                            await transport.announce(encode_announcement(**hello, cert=cert))
                            outsider["announced"] += 1
                        for target in ids.values():
                            for round_idx in (1, 2, 3):
                                update = wire.encode_update(
                                    zero,
                                    swarm_id=manifest.swarm_id,
                                    sender=transport.peer_id,
                                    round=round_idx,
                                    num_samples=10**6,
                                )
                                try:
                                    await transport.send(target, update, timeout=5)
                                    outsider["sent"] += 1
                                except Exception:
                                    outsider["send_errors"] += 1
                        await trio.sleep(0.5)  # pacing of the attack, not synchronisation
                outsider["payloads"] = list(inbox.payloads)
                outsider["id"] = transport.peer_id

        trio.run(intrude)
        for peer in peers:
            assert peer.wait(timeout=300) == 0, peer.text()
    finally:
        for peer in peers:
            peer.stop()
    assert outsider["announced"] > 0 and outsider["sent"] + outsider["send_errors"] > 0
    assert outsider["payloads"] == []  # nothing out: no member ever pushed it a model
    for peer in peers:
        text = peer.text()
        other = ids["m2" if peer.node_id == "m1" else "m1"]
        heard = {
            pid
            for line in re.findall(r"aggregated models from \d peer\(s\) in round \d+: (.*) \(", text)
            for pid in line.split(", ")
        }
        assert heard == {other}, (peer.node_id, heard, text)  # the members trained together, without the outsider
        assert outsider["id"] not in heard
        summary = text[text.rindex("summary:") :]
        assert "announcement_not_a_member" in summary, summary
