"""A sign-flipping peer in a real five-process swarm over libp2p on loopback (issue 9 item 4).

Five `quinkgl run` processes pull from all four others every round (RandomTopology fanout 4). One of them runs
``tests/data/signflip_peer_script.py``: it trains honestly but serves ``base − λ·(x − base)`` (λ = 10). Under Krum
with ``byzantine_f`` 1 the four honest peers improve and end within 3 points of the same swarm whose fifth peer is
honest; under FedAvg the same hostile peer drags them far below it (the attack bites without the defence).
The swarms run one after the other, each with its own manifest name and state folder; the clean swarm runs once
for both tests.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import pytest

from conftest import GUIDE_SCRIPTS
from helpers import guide_arch_hash, make_manifest
from integration.peer_processes import PeerProcess, peer_env
from quinkgl.manifest.codec import write_manifest

ROUNDS, STEPS, EVAL_BATCHES = 3, 200, 100
HONEST = [f"peer-{i}" for i in range(1, 5)]
SWARM_TIMEOUT_S = 600  # generous, for a loaded machine; the swarm ends by itself after ROUNDS rounds


def start_swarm(folder: Path, name: str, aggregation: str, hostile: bool, data_root: Path) -> list[PeerProcess]:
    """Five peers in ``folder``; the fifth runs the sign-flipping script when ``hostile``."""
    folder.mkdir()
    shutil.copy(GUIDE_SCRIPTS / "mnist_peer_script.py", folder)
    shutil.copy(GUIDE_SCRIPTS / "signflip_peer_script.py", folder)
    manifest = make_manifest(
        arch_hash=guide_arch_hash(),
        name=name,
        aggregation=aggregation,
        byzantine_f=1,
        params={"topology": {"fanout": 4}},
    )
    write_manifest(manifest, folder / "swarm.qgl")
    env = peer_env(folder / "state")
    peers = []
    for index in range(1, 6):
        script = "signflip_peer_script.py" if hostile and index == 5 else "mnist_peer_script.py"
        args = [
            "--manifest",
            "swarm.qgl",
            "--script",
            script,
            "--port",
            "0",
            "--rounds",
            str(ROUNDS),
            "--local-steps",
            str(STEPS),
            "--max-eval-batches",
            str(EVAL_BATCHES),
            "--gossip-interval",
            "20",
            "--wait-for-peers",
            "4",
            "--discovery-wait",
            "90",
            "--trust-policy",
            "open",
            "--checkpoint-dir",
            f"ckpt/peer-{index}",
            "--script-arg",
            f"data_root={data_root}",
        ]
        peers.append(PeerProcess(folder, f"peer-{index}", args, env))
    return peers


def run_swarm(folder: Path, aggregation: str, hostile: bool, data_root: Path) -> dict[str, list[float]]:
    """Run one five-peer swarm to the end (bounded); each honest peer's validation accuracy per round."""
    peers = start_swarm(folder, folder.name, aggregation, hostile, data_root)
    deadline = time.monotonic() + SWARM_TIMEOUT_S
    try:
        for peer in peers:
            code = peer.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert code == 0, f"{folder.name}/{peer.node_id} exited {code}:\n{peer.text()[-3000:]}"
    finally:
        for peer in peers:
            peer.stop()
    if hostile:  # the fifth peer really ran the attack
        assert "hostile (sign-flipped, lambda=10)" in (folder / "peer-5.log").read_text()
    curves = {}
    for node in HONEST:
        rounds = [json.loads(line) for line in (folder / "ckpt" / node / "metrics.jsonl").read_text().splitlines()]
        assert len(rounds) == ROUNDS, (node, rounds)
        # The swarm really exchanged: Krum runs (does not fall back) only with all four others' models, the hostile
        # one included; a swarm whose rounds all fell back would compare isolated peers and prove nothing.
        assert any(not r["fell_back"] for r in rounds), (folder.name, node, rounds)
        curves[node] = [r["val_accuracy"] for r in rounds]
    print(folder.name, {node: [round(a, 4) for a in curve] for node, curve in curves.items()})
    return curves


def test_the_hostile_script_serves_its_honest_update_sign_flipped():
    """Three steps of the hostile optimizer leave base − λ·(x − base), x being three honest steps of the guide's SGD."""
    import torch

    from quinkgl.script import load_script_module

    hostile = load_script_module(GUIDE_SCRIPTS / "signflip_peer_script.py")
    guide = load_script_module(GUIDE_SCRIPTS / "mnist_peer_script.py")
    torch.manual_seed(0)
    model = hostile.build_model(None, flip_lambda="4")
    honest_model = guide.build_model(None)
    honest_model.load_state_dict(model.state_dict())
    base = {k: v.clone() for k, v in model.state_dict().items()}
    optimizers = [hostile.build_optimizer(None, model), guide.build_optimizer(None, honest_model)]
    batches = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))) for _ in range(3)]
    for net, optimizer in zip((model, honest_model), optimizers, strict=True):
        for inputs, targets in batches:
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(inputs), targets).backward()
            optimizer.step()
    for name, x in honest_model.state_dict().items():
        assert torch.allclose(model.state_dict()[name], base[name] - 4.0 * (x - base[name]), atol=1e-6), name
    hostile.on_round_end(1, {})  # the next round measures its update from the model it then holds
    assert optimizers[0].base is None


@pytest.fixture(scope="module")
def clean_finals(tmp_path_factory, mnist_root) -> list[float]:
    """The honest peers' final accuracies in the same Krum swarm whose fifth peer is honest too."""
    curves = run_swarm(tmp_path_factory.mktemp("swarms") / "krum-clean", "Krum", False, mnist_root)
    return sorted(curve[-1] for curve in curves.values())


@pytest.mark.slow
@pytest.mark.timeout(2 * SWARM_TIMEOUT_S + 60)  # this swarm and, the first time, the clean one
def test_krum_keeps_the_honest_peers_within_3_points_of_the_clean_swarm(tmp_path, mnist_root, clean_finals):
    curves = run_swarm(tmp_path / "krum-hostile", "Krum", True, mnist_root)
    for node, curve in curves.items():
        assert curve[-1] > curve[0], (node, curve)  # every honest peer improves
    # Like for like: Krum adopts one model per round, so one peer's final accuracy spreads by a few points from run
    # to run (a CI run had 0.8806 against a clean median of 0.9113). The hostile swarm's weakest and middle honest
    # peers are compared with the clean swarm's weakest and middle ones; FedAvg under the same attack ends near 0.1.
    finals = sorted(curve[-1] for curve in curves.values())
    assert finals[0] >= clean_finals[0] - 0.03, (finals, clean_finals)
    assert statistics.median(finals) >= statistics.median(clean_finals) - 0.03, (finals, clean_finals)


@pytest.mark.slow
@pytest.mark.timeout(2 * SWARM_TIMEOUT_S + 60)
def test_without_a_robust_rule_the_same_peer_drags_the_swarm_down(tmp_path, mnist_root, clean_finals):
    curves = run_swarm(tmp_path / "fedavg-hostile", "FedAvg", True, mnist_root)
    finals = [curve[-1] for curve in curves.values()]
    assert max(finals) < statistics.median(clean_finals) - 0.10, (finals, clean_finals)
