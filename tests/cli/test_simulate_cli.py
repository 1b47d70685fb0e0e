"""`quinkgl simulate` as a user runs it: progress, per-peer table, metrics JSON, PNG plot; Mode A datasets."""

from __future__ import annotations

import json

import pytest

from helpers import guide_arch_hash, manifest_create
from quinkgl.errors import ExitCode


def create_manifest(cli, name="sim", arch=None, shape="1,28,28"):
    result = cli(*manifest_create(name, arch or guide_arch_hash(), input_shape=shape))
    assert result.returncode == 0, result.stderr
    return f"{name}.qgl"


def test_simulate_the_guide_script(cli, tmp_path, guide_script, mnist_root):
    manifest = create_manifest(cli)
    result = cli(
        "simulate",
        "--manifest",
        manifest,
        "--script",
        str(guide_script),
        "--peers",
        "3",
        "--rounds",
        "2",
        "--local-steps",
        "30",
        "--max-eval-batches",
        "50",
        "--partition",
        "dirichlet:0.5",
        "--seed",
        "3",
        "--script-arg",
        f"data_root={mnist_root}",
        "--output",
        "out",
        "--plot",
        "acc.png",
        "--trust-policy",
        "open",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for peer in ("peer-1", "peer-2", "peer-3"):
        assert peer in result.stdout
    assert "final val acc" in result.stdout and "round=002" in result.stdout
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(report["val_accuracy"]) == {"peer-1", "peer-2", "peer-3"}
    assert all(len(v) == 2 and all(0 < a <= 1 for a in v) for v in report["val_accuracy"].values())
    assert sum(report["shard_sizes"]) == 60000
    assert (tmp_path / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_mode_a_standard_dataset(cli, tmp_path, mnist_root):
    from quinkgl.manifest import compute_arch_hash
    from quinkgl.standard import StandardPlugin

    arch = compute_arch_hash(StandardPlugin("mnist").build_model())
    manifest = create_manifest(cli, name="modea", arch=arch)
    result = cli(
        "simulate",
        "--manifest",
        manifest,
        "--data",
        "mnist",
        "--peers",
        "2",
        "--rounds",
        "1",
        "--local-steps",
        "20",
        "--max-eval-batches",
        "20",
        "--script-arg",
        f"data_root={mnist_root}",
        "--output",
        "out",
        "--trust-policy",
        "open",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "val_accuracy.png").exists()


def test_mode_a_errors_list_what_is_supported(cli, mnist_root):
    manifest = create_manifest(cli)
    unknown = cli("simulate", "--manifest", manifest, "--data", "imagenet", "--trust-policy", "open")
    assert unknown.returncode == ExitCode.DATA_ERROR and "supported: mnist, fashion-mnist, cifar10" in unknown.stderr
    wrong = create_manifest(cli, name="rgb", shape="3,32,32")
    mismatch = cli("simulate", "--manifest", wrong, "--data", "mnist", "--trust-policy", "open")
    assert mismatch.returncode == ExitCode.DATA_ERROR and "[1, 28, 28]" in mismatch.stderr
    both = cli("simulate", "--manifest", manifest, "--data", "mnist", "--script", "x.py", "--trust-policy", "open")
    assert both.returncode == ExitCode.USAGE and "exactly one of --script" in both.stderr


def test_guide_scripts_in_the_tests_are_the_examples_unchanged():
    from conftest import GUIDE_SCRIPTS, REPO

    for name in ("mnist_peer_script.py", "cifar10_peer_script.py"):
        assert (GUIDE_SCRIPTS / name).read_bytes() == (REPO / "examples" / name).read_bytes()


def test_simulate_with_byzantine_peers_reports_the_honest_ones(cli, tmp_path, guide_script, mnist_root):
    manifest = create_manifest(cli)
    result = cli(
        "simulate",
        "--manifest",
        manifest,
        "--script",
        str(guide_script),
        "--peers",
        "5",
        "--rounds",
        "1",
        "--local-steps",
        "10",
        "--max-eval-batches",
        "10",
        "--byzantine",
        "1:alie",
        "--byzantine",
        "1:signflip:3",
        "--script-arg",
        f"data_root={mnist_root}",
        "--output",
        "out",
        "--trust-policy",
        "open",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["hostile"] == {"peer-5": "1:alie", "peer-4": "1:signflip:3"}
    assert report["options"]["byzantine"] == ["1:alie", "1:signflip:3"]
    spread = report["honest_val_accuracy"]
    assert 0 < spread["min"] <= spread["median"] <= spread["max"] <= 1
    table = result.stdout[result.stdout.index("final val acc") : result.stdout.index("hostile peers")]
    assert "peer-3" in table and "peer-4" not in table and "peer-5" not in table
    assert "honest peers' final val accuracy: min" in result.stdout


def test_unknown_attacks_and_bad_parameters_are_usage_errors(cli):
    manifest = create_manifest(cli)
    for spec in ("1:teleport", "2:signflip:x", "1:inflate:7", "signflip"):
        result = cli(
            "simulate", "--manifest", manifest, "--data", "mnist", "--byzantine", spec, "--trust-policy", "open"
        )
        assert result.returncode == ExitCode.USAGE, (spec, result.stderr)
        assert "known attacks: signflip" in result.stderr and "histogram" in result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--drop-prob", "1.5", "probability in [0, 1)"),
        ("--drop-prob", "lots", "probability in [0, 1)"),
        ("--latency", "gauss:0.1", "fixed:S, uniform:LO:HI"),
        ("--latency", "uniform:0.3:0.1", "LO <= HI"),
        ("--churn", "0.1", "LEAVE:REJOIN"),
        ("--churn", "0.1:0", "REJOIN must be > 0"),
        ("--slow-peers", "0.2:0.5", "FACTOR must be between 1 and 100"),
        ("--peers", "2001", "2001"),
    ],
)
def test_bad_simulation_conditions_are_usage_errors(cli, tmp_path, flag, value, message):
    result = cli("simulate", "--manifest", "missing.qgl", flag, value)
    assert result.returncode == ExitCode.USAGE == 2, result.stderr
    assert flag in result.stderr and message in " ".join(result.stderr.split())


def test_help_states_the_peer_cap_and_the_conditions(cli):
    result = cli("simulate", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "at most 2000" in text and "24 GiB" in text
    for flag in ("--drop-prob", "--latency", "--churn", "--slow-peers"):
        assert flag in text


def test_conditions_are_recorded_in_metrics_json(cli, tmp_path, guide_script, mnist_root):
    manifest = create_manifest(cli)
    result = cli(
        "simulate",
        "--manifest",
        manifest,
        "--script",
        str(guide_script),
        "--peers",
        "4",
        "--rounds",
        "2",
        "--local-steps",
        "5",
        "--max-eval-batches",
        "2",
        "--gossip-interval",
        "5",
        "--drop-prob",
        "0.2",
        "--latency",
        "uniform:0:0.02",
        "--churn",
        "0.2:0.5",
        "--slow-peers",
        "0.25:2",
        "--script-arg",
        f"data_root={mnist_root}",
        "--output",
        "out",
        "--trust-policy",
        "open",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "conditions:" in result.stdout and "per peer" in result.stdout
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["conditions"] == {
        "drop": 0.2,
        "latency": "uniform:0:0.02",
        "churn": {"leave": 0.2, "rejoin": 0.5},
        "slow_peers": {"fraction": 0.25, "factor": 2.0},
    }
    assert sorted(s["conditions"]["speed"] for s in report["summary"]) == [1.0, 1.0, 1.0, 2.0]
    for key in ("seconds_per_round", "memory_per_peer_bytes", "messages_per_peer_per_round", "model_bytes"):
        assert report["scale"][key] > 0


def test_the_cli_cap_is_the_simulators():
    from quinkgl.simulate import MAX_PEERS
    from quinkgl_cli.commands.simulate import MAX_PEERS as CLI_MAX_PEERS

    assert CLI_MAX_PEERS == MAX_PEERS
