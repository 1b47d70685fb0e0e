"""`quinkgl doctor` and the hint of `quinkgl run`, as real subprocesses: on loopback and across lab hosts.

Every failure a person can meet is produced for real and must be named in words: refused, not a QuinkGL peer,
a different peer ID than pinned, another swarm, another arch hash; across hosts a NATed host is told that it is
not reachable from outside.
"""

from __future__ import annotations

import json
import socket

import pytest
from network.peers import NetPeer

from conftest import quinkgl_executable
from helpers import guide_arch_hash, make_manifest
from integration.peer_processes import PeerProcess, peer_env
from quinkgl.manifest.codec import write_manifest

pytestmark = pytest.mark.network


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def doctor(cli, *args: str) -> tuple[int, dict]:
    result = cli("doctor", *args, "--json", "--timeout", "5", timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_doctor_names_each_failure_on_loopback(cli, tmp_path, swarm_files):
    """One waiting peer; doctor from the same swarm, another swarm, another arch and with a wrong pin."""
    port = free_port()
    waiting = [*swarm_files, "--rounds", "1", "--port", str(port), "--wait-for-peers", "1", "--discovery-wait", "300"]
    peer = PeerProcess(tmp_path, "peer-1", waiting, peer_env(tmp_path / "s1"))
    try:
        peer_id = peer.peer_id()
        write_manifest(make_manifest(arch_hash=guide_arch_hash(), name="another"), tmp_path / "another.qgl")
        write_manifest(make_manifest(name="hosts"), tmp_path / "otherarch.qgl")  # same name, another arch hash
        manifest = swarm_files[1]
        target = f"127.0.0.1:{port}"

        code, report = doctor(cli, "--manifest", manifest, "--bootstrap-peer", target)
        assert code == 0 and report["ok"], report
        (check,) = report["bootstrap_peers"]
        assert check["status"] == "reachable" and check["peer_id"] == peer_id, check
        assert report["reachable_from_outside"] == "yes"  # the peer dialled back to doctor's listen port
        assert report["listen"] and all("0.0.0.0" not in a for a in report["announce"])

        code, report = doctor(cli, "--manifest", str(tmp_path / "another.qgl"), "--bootstrap-peer", target)
        assert code == 20 and report["bootstrap_peers"][0]["status"] == "other swarm", report

        code, report = doctor(cli, "--manifest", str(tmp_path / "otherarch.qgl"), "--bootstrap-peer", target)
        assert code == 20 and report["bootstrap_peers"][0]["status"] == "other arch", report

        wrong = "12D3KooWQAkxEtvDMoC2GFseSVciMoASvjkp5WUKYGPpaWEgdALo"
        code, report = doctor(cli, "--manifest", manifest, "--bootstrap-peer", f"{target}/p2p/{wrong}")
        assert code == 20 and report["bootstrap_peers"][0]["status"] == "wrong peer", report

        refused = free_port()
        with socket.socket() as plain:  # a TCP server that is not libp2p
            plain.bind(("127.0.0.1", 0))
            plain.listen(4)
            not_p2p = plain.getsockname()[1]
            code, report = doctor(
                cli,
                "--manifest",
                manifest,
                "--bootstrap-peer",
                f"127.0.0.1:{refused}",
                "--bootstrap-peer",
                f"127.0.0.1:{not_p2p}",
                "--bootstrap-peer",
                target,
            )
        statuses = [c["status"] for c in report["bootstrap_peers"]]
        assert statuses == ["refused", "not quinkgl", "reachable"], report
        assert code == 0  # one reachable peer is enough

        text = cli("doctor", "--manifest", manifest, "--bootstrap-peer", f"127.0.0.1:{refused}", "--port", str(port))
        assert text.returncode == 20, text.stdout + text.stderr
        assert "refused" in text.stdout and "in use" in text.stdout and "Traceback" not in text.stderr, text.stdout
    finally:
        peer.stop()


def test_run_prints_a_hint_when_nobody_is_found(tmp_path, swarm_files):
    refused = free_port()
    args = [*swarm_files, "--rounds", "1", "--discovery-wait", "1", "--bootstrap-peer", f"127.0.0.1:{refused}"]
    peer = PeerProcess(tmp_path, "alone", args, peer_env(tmp_path / "s1"))
    try:
        assert peer.wait(timeout=180) == 0, peer.text()
        text = peer.text()
        assert f"127.0.0.1:{refused}: refused" in text and "quinkgl doctor --manifest" in text, text
    finally:
        peer.stop()


@pytest.mark.slow
def test_doctor_across_hosts_and_behind_nat(netlab, nat_available, swarm_files):
    public = netlab.add_host("host-1", 1)
    other = netlab.add_host("host-2", 2)
    home = netlab.add_nat_host("home-1", 1)
    waiting = [
        *swarm_files,
        "--rounds",
        "1",
        "--host",
        "0.0.0.0",
        "--port",
        "7001",
        "--wait-for-peers",
        "1",
        "--discovery-wait",
        "300",
    ]
    peer = NetPeer(netlab, public, "host-1", waiting)
    peer_id = peer.peer_id()
    for host, inbound in ((other, "yes"), (home, "no")):
        log = netlab.workdir / f"doctor-{host.name}.json"
        proc = netlab.popen(
            host,
            [
                *quinkgl_executable(),
                "doctor",
                "--manifest",
                swarm_files[1],
                "--host",
                "0.0.0.0",
                "--port",
                "7001",
                "--json",
                "--bootstrap-peer",
                f"{public.address}:7001",
            ],
            log=log,
        )
        assert proc.wait(timeout=120) == 0, log.read_text()
        report = json.loads(log.read_text()[log.read_text().index("{") :])
        (check,) = report["bootstrap_peers"]
        assert check["status"] == "reachable" and check["peer_id"] == peer_id, report
        assert report["announce"] == [f"/ip4/{host.address}/tcp/7001"], report  # no 0.0.0.0, no loopback
        assert report["reachable_from_outside"] == inbound, report
        if host is home:
            assert check["observed"].startswith("10.213.0.201:"), report  # the router's WAN address
    # a host cut off from the bridge: the bootstrap peer times out
    netlab.set_link(other, False)
    log = netlab.workdir / "doctor-cut.json"
    proc = netlab.popen(
        other,
        [
            *quinkgl_executable(),
            "doctor",
            "--manifest",
            swarm_files[1],
            "--json",
            "--timeout",
            "2",
            "--bootstrap-peer",
            f"{public.address}:7001",
        ],
        log=log,
    )
    assert proc.wait(timeout=120) == 20, log.read_text()
    report = json.loads(log.read_text()[log.read_text().index("{") :])
    assert report["bootstrap_peers"][0]["status"] in ("timed out", "unreachable"), report
