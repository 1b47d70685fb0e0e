"""Closed swarms (issue 7): `membership: certified` manifests, membership certificates, and peers that admit only
members — an outsider with a valid manifest copy and a stolen certificate gets nothing in and nothing out."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import trio

from helpers import fedavg_manifest, make_manifest, run_swarm
from quinkgl import keys, wire
from quinkgl.errors import MembershipError, user_error_in
from quinkgl.manifest.codec import canonical_bytes, manifest_to_dict, parse_manifest
from quinkgl.manifest.signing import SignatureStatus, signature_status
from quinkgl.membership import (
    MembershipGate,
    check_certificate,
    check_libp2p_peer_id,
    issue_certificate,
    load_certificate,
    own_certificate,
    parse_certificate,
    peer_id_from_identity_key,
    peer_id_from_public_key,
    write_certificate,
)
from quinkgl.runtime.options import PeerOptions
from quinkgl.runtime.peerview import encode_announcement
from quinkgl.script import ScriptPlugin
from quinkgl.transport import TransportConfig, TransportError
from quinkgl.transports.memory import MemoryParams, MemoryTransport

CREATOR = keys.generate_private_key()
STRANGER = keys.generate_private_key()
SWARM = "sha256:" + "1" * 64


def test_membership_is_signed_and_absent_means_open():
    open_manifest = make_manifest(CREATOR)
    assert open_manifest.membership == "open"
    assert "membership" not in manifest_to_dict(open_manifest)  # old manifests keep their bytes and swarm ID
    assert b"membership" not in canonical_bytes(open_manifest)
    certified = make_manifest(CREATOR, membership="certified")
    assert manifest_to_dict(certified)["membership"] == "certified"
    assert certified.swarm_id != open_manifest.swarm_id
    assert signature_status(certified) is SignatureStatus.VALID
    doc = manifest_to_dict(certified)
    doc["membership"] = "open"  # stripping the closed-swarm flag breaks the signature
    assert signature_status(parse_manifest(json.dumps(doc))) is SignatureStatus.INVALID
    doc["membership"] = "certified\n"
    with pytest.raises(Exception, match="membership"):
        parse_manifest(json.dumps(doc))


def test_a_certificate_admits_one_peer_to_one_swarm_until_it_expires():
    cert = issue_certificate(CREATOR, swarm_id=SWARM, peer_id="peer-a", expires_at="2099-01-01")
    creator = keys.public_key_text(CREATOR)
    check_certificate(cert, swarm_id=SWARM, creator_pubkey=creator, peer_id="peer-a")
    assert parse_certificate(json.loads(json.dumps(cert.to_dict()))) == cert
    cases = [
        ({"peer_id": "peer-b"}, "other_peer"),
        ({"swarm_id": "sha256:" + "2" * 64}, "other_swarm"),
        ({"creator_pubkey": keys.public_key_text(STRANGER)}, "wrong_creator"),
        ({"now": dt.datetime(2099, 1, 2, tzinfo=dt.timezone.utc)}, "expired"),
    ]
    for change, reason in cases:
        args = {"swarm_id": SWARM, "creator_pubkey": creator, "peer_id": "peer-a", **change}
        with pytest.raises(MembershipError) as info:
            check_certificate(cert, **args)
        assert info.value.reason == reason
    forged = parse_certificate({**cert.to_dict(), "peer_id": "peer-b"})  # a stolen certificate, renamed
    with pytest.raises(MembershipError) as info:
        check_certificate(forged, swarm_id=SWARM, creator_pubkey=creator, peer_id="peer-b")
    assert info.value.reason == "bad_signature"
    self_issued = issue_certificate(STRANGER, swarm_id=SWARM, peer_id="peer-b")
    with pytest.raises(MembershipError, match="not issued by the manifest's creator"):
        check_certificate(self_issued, swarm_id=SWARM, creator_pubkey=creator, peer_id="peer-b")


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"format": "quinkgl-membership"},
        {"format": "x"},
    ],
)
def test_malformed_certificates_are_refused(doc):
    with pytest.raises(MembershipError) as info:
        parse_certificate(doc)
    assert info.value.reason == "malformed"


def test_malformed_certificate_fields_are_refused():
    good = issue_certificate(CREATOR, swarm_id=SWARM, peer_id="peer-a").to_dict()
    for field, value in [
        ("peer_id", "peer-a\n"),
        ("swarm_id", SWARM + "\n"),
        ("expires_at", "soon"),
        ("version", True),
        ("signature", 5),
        ("extra", 1),
        ("peer_id", "x" * 200),
    ]:
        with pytest.raises(MembershipError):
            parse_certificate({**good, field: value})


def test_certificate_files_roundtrip_and_hostile_files_fail_fast(tmp_path):
    import os

    cert = issue_certificate(CREATOR, swarm_id=SWARM, peer_id="peer-a")
    write_certificate(cert, tmp_path / "a.cert")
    assert load_certificate(tmp_path / "a.cert") == cert
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b" " * 5000)
    (tmp_path / "text").write_text("hello")
    for name in ("fifo", "big", "text", "missing"):
        with pytest.raises(MembershipError):
            load_certificate(tmp_path / name)


def test_libp2p_peer_ids_are_derived_without_libp2p(tmp_path):
    key = keys.generate_private_key()
    keys.write_private_key(key, str(tmp_path / "libp2p-identity.pem"))
    derived = peer_id_from_identity_key(tmp_path / "libp2p-identity.pem")
    assert derived.startswith("12D3KooW") and check_libp2p_peer_id(derived) == derived
    libp2p = pytest.importorskip("libp2p")  # compare with py-libp2p's own derivation when it is installed
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    from quinkgl_transport_libp2p.identity import read_identity

    seed = read_identity(tmp_path / "libp2p-identity.pem")
    assert ID.from_pubkey(create_new_key_pair(seed).public_key).to_base58() == derived
    assert libp2p is not None
    for bad in ("12D3KooW", "0OIl" * 10, derived[:-1] + ("a" if derived[-1] != "a" else "b") + "x"):
        with pytest.raises(ValueError):
            check_libp2p_peer_id(bad)
    with pytest.raises(ValueError):
        peer_id_from_public_key(b"short")


def test_own_certificate_is_required_and_checked_at_start(tmp_path):
    manifest = make_manifest(CREATOR, membership="certified")
    assert own_certificate(make_manifest(CREATOR), None, "peer-a") is None  # open swarm: nothing to present
    with pytest.raises(MembershipError, match="--membership-cert") as info:
        own_certificate(manifest, None, "peer-a")
    assert info.value.exit_code == 15
    write_certificate(issue_certificate(CREATOR, swarm_id=manifest.swarm_id, peer_id="peer-a"), tmp_path / "a.cert")
    assert own_certificate(manifest, str(tmp_path / "a.cert"), "peer-a").peer_id == "peer-a"
    with pytest.raises(MembershipError, match="for peer peer-a, not peer-b"):
        own_certificate(manifest, str(tmp_path / "a.cert"), "peer-b")
    unsigned = make_manifest(membership="certified")
    with pytest.raises(MembershipError, match="signed manifest"):
        own_certificate(unsigned, str(tmp_path / "a.cert"), "peer-a")


def test_the_gate_remembers_a_verified_certificate_but_not_a_changed_one():
    gate = MembershipGate(SWARM, keys.public_key_text(CREATOR))
    cert = issue_certificate(CREATOR, swarm_id=SWARM, peer_id="peer-a")
    assert gate.admit("peer-a", cert.to_dict()) == cert
    assert gate.admit("peer-a", cert.to_dict(), known_signature=cert.signature) == cert
    with pytest.raises(MembershipError):  # same signature, other peer: the cache never skips the binding
        gate.admit("peer-b", cert.to_dict(), known_signature=cert.signature)
    with pytest.raises(MembershipError) as info:
        gate.admit("peer-a", None)
    assert info.value.reason == "missing"


# -- a certified swarm over the memory transport --------------------------------------------------------------


def options(node, rounds, mnist_root, **extra):
    return PeerOptions(
        node_id=node,
        rounds=rounds,
        local_steps=10,
        max_eval_batches=10,
        script_args={"data_root": str(mnist_root)},
        **extra,
    )


def test_outsiders_get_nothing_in_and_nothing_out_of_a_certified_swarm(tmp_path, guide_script, mnist_root):
    manifest = fedavg_manifest(key=CREATOR, membership="certified")
    ids = ["member-0", "member-1"]
    certs = []
    for pid in ids:
        path = tmp_path / f"{pid}.cert"
        write_certificate(issue_certificate(CREATOR, swarm_id=manifest.swarm_id, peer_id=pid), path)
        certs.append(path)
    stolen = load_certificate(certs[0])
    self_issued = issue_certificate(STRANGER, swarm_id=manifest.swarm_id, peer_id="outsider")
    received_by_outsider = []
    outsider_errors = []

    async def outsider(peers, hub):
        target = peers[0]
        while target.view is None:
            await trio.sleep(0.01)
        rogue = MemoryTransport(
            MemoryParams(hub=hub),
            TransportConfig(
                swarm_id=manifest.swarm_id,
                node_id="outsider",
                max_payload_bytes=1 << 24,
                options={"peer_id": "outsider"},
            ),
        )
        rogue.set_handlers(on_announcement=lambda s, d: None, on_payload=lambda s, d: received_by_outsider.append(s))
        async with rogue:
            hello = {
                "swarm_id": manifest.swarm_id,
                "arch_hash": manifest.model.arch_hash,
                "node_id": "outsider",
                "round_idx": 1,
                "pushed": 0,
                "done": False,
                "metrics": {},
                "metadata": {},
            }
            model = {k: v.detach().clone() * 0 for k, v in target.p.model.state_dict().items()}
            while target.completed < 2:
                for cert in (None, stolen.to_dict(), self_issued.to_dict()):
                    await rogue.announce(encode_announcement(**hello, cert=cert))
                for peer in peers:
                    update = wire.encode_update(
                        model,
                        swarm_id=manifest.swarm_id,
                        sender="outsider",
                        round=max(peer.round, 1),
                        num_samples=10**6,
                    )
                    try:
                        await rogue.send(peer.peer_id, update, timeout=5)
                    except TransportError as exc:
                        outsider_errors.append(str(exc))
                await trio.sleep(0.2)
            assert all("outsider" not in p.view.peers for p in peers)

    peers = run_swarm(
        manifest,
        [ScriptPlugin.from_file(guide_script) for _ in ids],
        [options(f"m{i}", 3, mnist_root, membership_cert=str(certs[i])) for i in range(2)],
        extra=outsider,
        peer_ids=ids,
    )
    assert all(p.completed == 3 for p in peers)
    # Members found each other and exchanged models ...
    assert all(any(m["aggregated_from"] for m in p.history) for p in peers)
    for p in peers:
        assert all(set(m["aggregated_from"]) <= set(ids) - {p.peer_id} for m in p.history)
        # ... the outsider never got into a view, its updates were refused before delivery ...
        assert not p.admits("outsider")
        assert p.counters.rejected.get("announcement_not_a_member", 0) >= 3, p.counters.rejected
        assert p.p.transport.stats().rejected.get("not_admitted", 0) >= 1
        assert p.counters.updates_accepted >= 1
    refused = [e for e in outsider_errors if "does not admit outsider" in e]
    # A member that already finished and left is "not reachable" (seen in a CI run): nothing was delivered either.
    assert refused and all(e in refused or "is not reachable" in e for e in outsider_errors), outsider_errors
    # ... and nobody ever pushed a model to it.
    assert received_by_outsider == []


def test_a_peer_without_its_own_certificate_cannot_start(tmp_path, guide_script, mnist_root):
    manifest = fedavg_manifest(key=CREATOR, membership="certified")
    with pytest.raises(MembershipError, match="--membership-cert"):
        run_swarm(
            manifest, [ScriptPlugin.from_file(guide_script)], [options("m0", 1, mnist_root)], peer_ids=["member-0"]
        )
    path = tmp_path / "other.cert"
    write_certificate(issue_certificate(CREATOR, swarm_id=manifest.swarm_id, peer_id="member-0"), path)
    with pytest.raises(BaseException) as info:  # a stolen certificate: refused once the peer ID is known
        run_swarm(
            manifest,
            [ScriptPlugin.from_file(guide_script)],
            [options("m1", 1, mnist_root, membership_cert=str(path))],
            peer_ids=["thief"],
        )
    found = user_error_in(info.value)
    assert isinstance(found, MembershipError) and "for peer member-0, not thief" in str(found)


def test_the_simulator_runs_a_certified_manifest_as_an_open_swarm(guide_script, mnist_root):
    from quinkgl.plugins.manager import build_registry
    from quinkgl.simulate import SimulationOptions, simulate

    manifest = fedavg_manifest(key=CREATOR, membership="certified")
    options = SimulationOptions(
        peers=2, rounds=1, local_steps=5, max_eval_batches=5, script_args={"data_root": str(mnist_root)}
    )
    result = simulate(manifest, ScriptPlugin.from_file(guide_script), options, build_registry())
    assert all(s["updates_accepted"] >= 1 for s in result.summaries)
