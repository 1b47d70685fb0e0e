"""User mistakes the libp2p transport detects end `quinkgl run` with one `error:` line and a documented exit code.

Real `quinkgl run` subprocesses on loopback: two peers on one fixed port, a corrupt identity key, a bad
``--announce-addr`` and bootstrap addresses core's peer-address grammar refuses (the 25-character peer ID among
them). The peers train a tiny synthetic task, so no dataset is needed.
"""

from __future__ import annotations

import json
import os
import socket

import pytest

from helpers import guide_arch_hash, make_manifest, manifest_create
from integration.peer_processes import PeerProcess, peer_env
from quinkgl import keys
from quinkgl.errors import ExitCode
from quinkgl.manifest.codec import manifest_to_dict, write_manifest

pytestmark = pytest.mark.slow

SYNTHETIC_SCRIPT = '''
"""The guide's MNISTNet on a few random batches (no dataset needed)."""
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset


class MNISTNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                 nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


def build_model(manifest, **kwargs):
    return MNISTNet()


def build_loaders(manifest, **kwargs):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 28, 28, generator=generator)
    data = TensorDataset(images, torch.randint(0, 10, (64,), generator=generator))
    return DataLoader(data, batch_size=16), DataLoader(data, batch_size=16)


def build_optimizer(manifest, model):
    return torch.optim.SGD(model.parameters(), lr=0.01)
'''

SHORT_ID = "12D3KooWEtc2cssnh6jszy7Fy"  # 25 base58 characters: not a multihash


@pytest.fixture
def swarm(tmp_path):
    """A workdir with the synthetic script, a signed libp2p manifest and an isolated state dir."""
    key = keys.generate_private_key()
    manifest = make_manifest(key, arch_hash=guide_arch_hash(), name="net-errors")
    write_manifest(manifest, tmp_path / "demo.qgl")
    (tmp_path / "synthetic.py").write_text(SYNTHETIC_SCRIPT)
    return {"dir": tmp_path, "manifest": manifest, "state": tmp_path / "state"}


def run_args(*extra: str, manifest: str = "demo.qgl", rounds: int = 1) -> list[str]:
    return [
        "run",
        "--manifest",
        manifest,
        "--script",
        "synthetic.py",
        "--rounds",
        str(rounds),
        "--local-steps",
        "1",
        "--gossip-interval",
        "2",
        "--trust-policy",
        "open",
        *extra,
    ]


def assert_one_error_line(result, code: ExitCode, message: str) -> None:
    stderr = result.stderr
    assert result.returncode == int(code), (result.returncode, result.stdout, stderr)
    assert "Traceback" not in stderr and "Traceback" not in result.stdout, stderr
    errors = [line for line in stderr.splitlines() if line.startswith(("error:", "Error:"))]
    assert len(errors) == 1, stderr
    assert message in stderr, stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_second_peer_on_a_taken_fixed_port_exits_with_the_network_code(swarm, cli):
    port = free_port()
    env = peer_env(swarm["state"])
    first = PeerProcess(swarm["dir"], "first", run_args("--port", str(port), rounds=50)[1:], env)
    try:
        first.wait_for(r"listening on", timeout=180)
        state = {"QUINKGL_STATE_DIR": str(swarm["state"])}
        second = cli(*run_args("--port", str(port), "--node-id", "second"), env=state, timeout=180)
        assert_one_error_line(second, ExitCode.NETWORK, f"127.0.0.1:{port}: the port is already in use")
        assert "listening on" not in second.stdout
    finally:
        first.stop()


@pytest.mark.parametrize(
    ("kind", "message"),
    [("garbage", "is not an unencrypted PKCS#8 PEM key"), ("fifo", "not a regular file")],
)
def test_unusable_identity_key_is_a_key_error(swarm, cli, kind, message):
    identity = swarm["state"] / "nodes" / "broken" / "libp2p-identity.pem"
    identity.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(identity)  # reading it would block forever: it must be refused, not opened
    else:
        identity.write_text("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
    result = cli(*run_args("--node-id", "broken"), env={"QUINKGL_STATE_DIR": str(swarm["state"])})
    assert_one_error_line(result, ExitCode.KEY_ERROR, message)


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1", "expected host:port"),
        ("/ip4/127.0.0.1/udp/4001", "expected /ip4|ip6"),
        ("127.0.0.1:4001 ", "whitespace"),
    ],
)
def test_bad_announce_addr_is_a_usage_error(swarm, cli, address, message):
    result = cli(*run_args("--announce-addr", address))
    assert_one_error_line(result, ExitCode.USAGE, message)
    assert "--announce-addr" in result.stderr


@pytest.mark.parametrize(
    "address",
    [f"127.0.0.1:4001/p2p/{SHORT_ID}", f"/ip4/127.0.0.1/tcp/4001/p2p/{SHORT_ID}", "127.0.0.1:4001\n", "::1:4001"],
)
def test_unusable_bootstrap_address_is_refused_by_run_and_manifest_create(swarm, cli, address):
    result = cli(*run_args("--bootstrap-peer", address))
    assert_one_error_line(result, ExitCode.USAGE, "--bootstrap-peer")
    created = cli(*manifest_create("x", guide_arch_hash(), "--bootstrap-peer", address))
    assert created.returncode != 0 and "Traceback" not in created.stderr, created.stderr
    assert not (swarm["dir"] / "x.qgl").exists()
    # A hand-edited manifest carrying the address is refused when `run` loads it, before any network activity.
    doc = manifest_to_dict(swarm["manifest"])
    doc.pop("signature", None)
    doc.pop("creator_pubkey", None)
    (swarm["dir"] / "edited.qgl").write_text(json.dumps(dict(doc, bootstrap_peers=[address])))
    edited = cli(*run_args(manifest="edited.qgl"))
    assert_one_error_line(edited, ExitCode.MANIFEST_INVALID, "bootstrap_peers[0]")
    assert "listening on" not in edited.stdout
