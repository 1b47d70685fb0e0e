"""`quinkgl manifest create --membership certified`, `quinkgl admit` and `quinkgl run --membership-cert` as real
commands: one `error:` line, the documented exit code, no traceback."""

from __future__ import annotations

import json

from helpers import manifest_create
from quinkgl.errors import ExitCode
from quinkgl.membership import check_libp2p_peer_id, load_certificate

ARCH = "sha256:" + "4" * 64


def create(cli, *extra, output="swarm.qgl"):
    return cli(*manifest_create("ward-7", ARCH, *extra, output=output))


def one_error(result, code):
    assert result.returncode == int(code), (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_certified_swarm_admit_and_run_checks(cli, tmp_path):
    assert cli("keygen", "--output", "creator.key").returncode == 0
    node = cli("keygen", "--output", "node/libp2p-identity.pem")  # the peer's identity, made before it starts
    assert node.returncode == 0
    node_pubkey = node.stdout.strip().splitlines()[-1]
    assert "--sign-with" in create(cli, "--membership", "certified").stderr  # a certified swarm needs a creator

    created = create(cli, "--membership", "certified", "--sign-with", "creator.key")
    assert created.returncode == 0, created.stderr
    assert "Membership: certified" in created.stdout
    shown = json.loads(cli("manifest", "show", "swarm.qgl", "--json").stdout)
    assert shown["manifest"]["membership"] == "certified" and shown["signature_status"] == "valid"
    assert "membership" not in json.loads(create(cli, output="open.qgl").stdout and (tmp_path / "open.qgl").read_text())

    by_key = cli(
        "admit",
        "--manifest",
        "swarm.qgl",
        "--sign-with",
        "creator.key",
        "--node-key",
        "node/libp2p-identity.pem",
        "--expires-at",
        "2099-12-31",
        "--output",
        "a.cert",
    )
    assert by_key.returncode == 0, by_key.stderr
    peer_id = by_key.stdout.split("Peer ID: ")[1].split()[0]
    assert check_libp2p_peer_id(peer_id).startswith("12D3KooW")
    by_pubkey = cli(
        "admit",
        "--manifest",
        "swarm.qgl",
        "--sign-with",
        "creator.key",
        "--node-pubkey",
        node_pubkey,
        "--output",
        "b.cert",
    )
    by_id = cli(
        "admit", "--manifest", "swarm.qgl", "--sign-with", "creator.key", "--peer-id", peer_id, "--output", "c.cert"
    )
    assert by_pubkey.returncode == 0 and by_id.returncode == 0, (by_pubkey.stderr, by_id.stderr)
    certs = [load_certificate(tmp_path / f"{n}.cert") for n in "abc"]
    assert {c.peer_id for c in certs} == {peer_id}
    assert certs[0].expires_at == "2100-01-01T00:00:00Z" and certs[1].expires_at is None

    # Mistakes: wrong key, a peer ID that is not one, two forms at once, an expired date.
    assert cli("keygen", "--output", "other.key").returncode == 0
    line = one_error(
        cli("admit", "--manifest", "swarm.qgl", "--sign-with", "other.key", "--peer-id", peer_id, "--output", "x.cert"),
        ExitCode.KEY_ERROR,
    )
    assert "only the manifest's creator" in line
    bad = cli(
        "admit",
        "--manifest",
        "swarm.qgl",
        "--sign-with",
        "creator.key",
        "--peer-id",
        "12D3KooWnotapeer",
        "--output",
        "x.cert",
    )
    assert bad.returncode == int(ExitCode.USAGE) and "Traceback" not in bad.stderr
    both = cli(
        "admit",
        "--manifest",
        "swarm.qgl",
        "--sign-with",
        "creator.key",
        "--peer-id",
        peer_id,
        "--node-pubkey",
        node_pubkey,
        "--output",
        "x.cert",
    )
    assert both.returncode == int(ExitCode.USAGE) and "exactly one" in both.stderr
    assert not (tmp_path / "x.cert").exists()

    # A peer of a certified swarm without a certificate stops at start, before any model or data is built.
    line = one_error(cli("run", "--manifest", "swarm.qgl", "--data", "mnist", timeout=120), ExitCode.NOT_A_MEMBER)
    assert "--membership-cert" in line and "quinkgl admit" in line
    (tmp_path / "junk.cert").write_text("{}")
    line = one_error(
        cli("run", "--manifest", "swarm.qgl", "--data", "mnist", "--membership-cert", "missing.cert", timeout=120),
        ExitCode.NOT_A_MEMBER,
    )
    assert "missing.cert" in line
