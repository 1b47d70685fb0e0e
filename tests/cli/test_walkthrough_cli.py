"""The user guide's key / hash / manifest steps, run as real commands with real files."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

from helpers import manifest_create
from quinkgl.errors import ExitCode

MY_MODEL = """
import torch.nn as nn

class MyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                 nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)
"""


def guide_create(cli, arch, *extra, output="demo.qgl", key="creator.key"):
    rules = ("--aggregation", "EntropyWeightedAvg", "--topology", "AffinityTopology")
    return cli(
        *manifest_create("demo-5peer", arch, *rules, *(["--sign-with", key] if key else []), *extra, output=output)
    )


@pytest.fixture
def walkthrough(cli, tmp_path):
    """keygen → arch hash (python -c, as in the guide) → manifest create; returns (pubkey, arch hash)."""
    keygen = cli("keygen", "--output", "creator.key")
    assert keygen.returncode == 0, keygen.stderr
    pubkey = keygen.stdout.strip().splitlines()[-1]
    (tmp_path / "my_model.py").write_text(MY_MODEL)
    code = (
        "from quinkgl.manifest import compute_arch_hash\nfrom my_model import MyModel\n"
        "print(compute_arch_hash(MyModel()))"
    )
    arch = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    created = guide_create(
        cli,
        arch,
        "--round-limit",
        "100",
        "--byzantine-f",
        "1",
        "--expires-at",
        "2099-12-31",
        "--bootstrap-peer",
        "192.168.1.5:7001",
        "--bootstrap-peer",
        "127.0.0.1:7002",
    )
    assert created.returncode == 0, created.stderr
    return pubkey, arch


def test_keygen_writes_a_private_pem_and_prints_the_public_key(cli, tmp_path):
    result = cli("keygen", "--output", "creator.key")
    assert result.returncode == 0
    assert re.fullmatch(r"ed25519:[0-9a-f]{64}", result.stdout.strip().splitlines()[-1])
    assert "Treat this file as a secret" in result.stderr
    path = tmp_path / "creator.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")


def test_keygen_refuses_to_overwrite_unless_forced(cli, tmp_path):
    first = cli("keygen", "--output", "creator.key").stdout.strip()
    again = cli("keygen", "--output", "creator.key")
    assert again.returncode == ExitCode.KEY_ERROR and "already exists" in again.stderr and "--force" in again.stderr
    assert again.stdout == ""
    forced = cli("keygen", "--output", "creator.key", "--force")
    assert forced.returncode == 0 and forced.stdout.strip() != first


def test_guide_create_and_verify(cli, tmp_path, walkthrough):
    pubkey, arch = walkthrough
    manifest = json.loads((tmp_path / "demo.qgl").read_text())
    assert manifest["aggregation"]["name"] == "EntropyWeightedAvg"
    assert manifest["model"]["arch_hash"] == arch
    assert manifest["bootstrap_peers"] == ["192.168.1.5:7001", "127.0.0.1:7002"]
    assert manifest["round_limit"] == 100 and manifest["byzantine_f"] == 1
    provides = {p["distribution"]: p for p in manifest["plugins"]}
    assert provides["quinkgl-agg-robust"]["provides"] == ["aggregator:EntropyWeightedAvg"]
    assert provides["quinkgl-topo"]["provides"] == ["topology:AffinityTopology"]
    assert provides["quinkgl-topo"]["specifier"] == ">=0.4,<0.5"
    result = cli("manifest", "verify", "demo.qgl", "--trusted-pubkey", pubkey)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Manifest valid."
    assert re.fullmatch(r"Swarm ID: sha256:[0-9a-f]{64}", lines[1])
    assert lines[2] == "Signature: valid"


def test_show_renders_for_people_and_json_for_programs(cli, walkthrough):
    pubkey, _arch = walkthrough
    human = cli("manifest", "show", "demo.qgl")
    assert human.returncode == 0 and "EntropyWeightedAvg" in human.stdout and "demo-5peer" in human.stdout
    machine = json.loads(cli("manifest", "show", "demo.qgl", "--json").stdout)
    assert machine["manifest"]["creator_pubkey"] == pubkey
    assert machine["signature_status"] == "valid" and machine["expired"] is False
    verify = cli("manifest", "verify", "demo.qgl").stdout
    assert machine["swarm_id"] in verify


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(name="demo-6peer"),
        lambda d: d["task"].update(output_shape=[11]),
        lambda d: d["model"].update(arch_hash="sha256:" + "0" * 64),
        lambda d: d["aggregation"].update(name="FedAvg"),
        lambda d: d.update(byzantine_f=0),
        lambda d: d.update(bootstrap_peers=["10.9.9.9:7001"]),
        lambda d: d["plugins"].pop(),
    ],
)
def test_tampering_fails_verify_with_the_signature_check_named(cli, tmp_path, walkthrough, edit):
    pubkey, _ = walkthrough
    doc = json.loads((tmp_path / "demo.qgl").read_text())
    edit(doc)
    (tmp_path / "demo.qgl").write_text(json.dumps(doc))
    result = cli("manifest", "verify", "demo.qgl", "--trusted-pubkey", pubkey)
    assert result.returncode == ExitCode.SIGNATURE_INVALID
    assert "signature check failed" in result.stderr and "Traceback" not in result.stderr


def test_wrong_key_unsigned_and_expired_each_have_their_own_exit_code(cli, tmp_path, walkthrough):
    pubkey, arch = walkthrough
    other = cli("keygen", "--output", "other.key").stdout.strip()
    wrong = cli("manifest", "verify", "demo.qgl", "--trusted-pubkey", other)
    assert wrong.returncode == ExitCode.UNTRUSTED and "not a trusted key" in wrong.stderr

    assert guide_create(cli, arch, output="unsigned.qgl", key=None).returncode == 0
    unsigned = cli("manifest", "verify", "unsigned.qgl", "--trusted-pubkey", pubkey)
    assert unsigned.returncode == ExitCode.UNTRUSTED and "unsigned" in unsigned.stderr
    plain = cli("manifest", "verify", "unsigned.qgl")
    assert plain.returncode == 0 and "Signature: none (unsigned)" in plain.stdout

    assert guide_create(cli, arch, "--expires-at", "2020-01-01", output="old.qgl").returncode == 0
    expired = cli("manifest", "verify", "old.qgl", "--trusted-pubkey", pubkey)
    assert expired.returncode == ExitCode.EXPIRED and "expired at 2020-01-01" in expired.stderr

    bad_key = cli("manifest", "verify", "demo.qgl", "--trusted-pubkey", "ed25519:1234")
    assert bad_key.returncode == ExitCode.UNTRUSTED and "64 hex" in bad_key.stderr


@pytest.mark.parametrize(
    "content,message",
    [
        ("this is not json", "not valid JSON"),
        ('{"name": "x"}', "required field missing"),
        ("UNKNOWN", "unknown field(s): surprise"),
        ("WRONGTYPE", "$.byzantine_f: expected an integer, got string"),
    ],
)
def test_malformed_files_get_a_clear_message_and_exit_3(cli, tmp_path, walkthrough, content, message):
    doc = json.loads((tmp_path / "demo.qgl").read_text())
    if content == "UNKNOWN":
        content = json.dumps(dict(doc, surprise=True))
    elif content == "WRONGTYPE":
        content = json.dumps(dict(doc, byzantine_f="1"))
    (tmp_path / "bad.qgl").write_text(content)
    for command in (["manifest", "verify", "bad.qgl"], ["manifest", "show", "bad.qgl"]):
        result = cli(*command)
        assert result.returncode == ExitCode.MANIFEST_INVALID
        assert message in result.stderr and "Traceback" not in result.stderr
    missing = cli("manifest", "verify", "nope.qgl")
    assert missing.returncode == ExitCode.MANIFEST_INVALID and "cannot read manifest" in missing.stderr


def test_create_rejects_bad_input_clearly(cli, walkthrough):
    _, arch = walkthrough
    unknown = cli(*manifest_create("x", arch, "--aggregation", "Average"))
    assert unknown.returncode == ExitCode.PLUGIN_MISSING
    for name in ("FedAvg", "EntropyWeightedAvg", "Krum", "MultiKrum", "TrimmedMean", "Median"):
        assert name in unknown.stderr
    bad_peer = guide_create(cli, arch, "--bootstrap-peer", "no-port-here", output="p.qgl")
    assert bad_peer.returncode == ExitCode.MANIFEST_INVALID and "bootstrap_peers[0]" in bad_peer.stderr
    bad_shape = guide_create(cli, arch, "--input-shape", "1,x,28", output="s.qgl")
    assert bad_shape.returncode == ExitCode.USAGE
    bad_hash = guide_create(cli, "sha256:beef", output="h.qgl")
    assert bad_hash.returncode == ExitCode.MANIFEST_INVALID and "arch_hash" in bad_hash.stderr
    bad_param = guide_create(
        cli, arch, "--aggregation", "FedAvg", "--aggregation-param", "weighting=median", output="q.qgl"
    )
    assert bad_param.returncode == ExitCode.MANIFEST_INVALID and "weighting" in bad_param.stderr
    no_key = guide_create(cli, arch, key="missing.key", output="k.qgl")
    assert no_key.returncode == ExitCode.KEY_ERROR and "cannot read key file" in no_key.stderr


def test_case_insensitive_component_names_are_normalised(cli, tmp_path, walkthrough):
    _, arch = walkthrough
    assert (
        cli(
            *manifest_create(
                "lower", arch, "--aggregation", "fedavg", "--topology", "randomtopology", input_shape="784"
            )
        ).returncode
        == 0
    )
    doc = json.loads((tmp_path / "lower.qgl").read_text())
    assert (doc["aggregation"]["name"], doc["topology"]["name"]) == ("FedAvg", "RandomTopology")


def test_info_lists_versions_and_components_and_survives_a_broken_plugin(cli, tmp_path):
    site = tmp_path / "site"
    info = site / "toy_broken-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[quinkgl]\ntoy = toy_broken_plugin\n")
    (site / "toy_broken_plugin.py").write_text("raise ImportError('toy plugin is broken on purpose')\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    result = cli("info", env=env)
    assert result.returncode == 0, result.stderr
    for text in ("quinkgl-core", "quinkgl-cli", "Python", "torch", "libp2p", "FedAvg", "RandomTopology"):
        assert text in result.stdout
    assert "toy-broken" in result.stderr and "broken on purpose" in result.stderr
    doc = json.loads(cli("info", "--json", env=env).stdout)
    assert {"kind": "aggregator", "name": "FedAvg", "distribution": "quinkgl-core", "version": "0.4.0"} in doc[
        "components"
    ]
    assert any(b["distribution"] == "toy-broken" for b in doc["broken_plugins"])
    assert doc["versions"]["quinkgl-core"] == "0.4.0"
