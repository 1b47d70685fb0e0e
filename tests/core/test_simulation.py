"""The in-process simulator on real MNIST with the guide's unchanged script: it learns, and collaboration matters."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest

from helpers import fedavg_manifest
from quinkgl.plugins.manager import build_registry
from quinkgl.script import ScriptPlugin
from quinkgl.simconditions import Conditions, Latency
from quinkgl.simulate import SimulationOptions, partition_indices, simulate


def test_iid_partition_is_even_and_complete():
    labels = [i % 10 for i in range(1000)]
    shards = partition_indices(labels, 7, "iid", seed=1)
    assert sorted(i for s in shards for i in s) == list(range(1000))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards == partition_indices(labels, 7, "iid", seed=1)


def test_dirichlet_partition_skews_labels():
    labels = [i % 10 for i in range(5000)]
    shards = partition_indices(labels, 5, "dirichlet:0.1", seed=3)
    assert sorted(i for s in shards for i in s) == list(range(5000))
    top_share = [Counter(labels[i] for i in s).most_common(1)[0][1] / len(s) for s in shards]
    assert statistics.mean(top_share) > 0.3  # IID would give ~0.1


def run(script_path, mnist_root, **overrides):
    settings = {"peers": 10, "rounds": 10, "local_epochs": 1, "script_args": {"data_root": str(mnist_root)}}
    settings.update(overrides)
    return simulate(
        fedavg_manifest(transport="libp2p"),
        ScriptPlugin.from_file(script_path),
        SimulationOptions(**settings),
        build_registry(),
    )


@pytest.mark.slow
def test_ten_iid_peers_reach_95_percent_within_ten_rounds(guide_script, mnist_root):
    result = run(guide_script, mnist_root)
    finals = {node: rounds[-1]["val_accuracy"] for node, rounds in result.history.items()}
    first = statistics.mean(rounds[0]["val_accuracy"] for rounds in result.history.values())
    print(f"10 peers x 10 rounds: {result.seconds:.1f} s; round-1 mean {first:.4f}; finals {sorted(finals.values())}")
    assert min(finals.values()) >= 0.95, finals
    assert statistics.mean(finals.values()) > first + 0.03  # the swarm improved over the rounds
    assert all(s["updates_accepted"] >= 5 for s in result.summaries)  # models were really exchanged


def test_collaboration_beats_isolation_on_a_skewed_split(guide_script, mnist_root):
    common = {
        "peers": 5,
        "rounds": 4,
        "local_epochs": None,
        "local_steps": 40,
        "partition": "dirichlet:0.2",
        "seed": 7,
        "max_eval_batches": 80,
    }
    together = run(guide_script, mnist_root, **common)
    alone = run(guide_script, mnist_root, isolated=True, **common)
    mean = lambda result: statistics.mean(r[-1]["val_accuracy"] for r in result.history.values())  # noqa: E731
    print(f"skewed split: gossip {mean(together):.4f} vs isolated {mean(alone):.4f}")
    assert mean(together) > mean(alone) + 0.10
    assert all(s["bytes_sent"] == 0 for s in alone.summaries)


def test_guide_cifar10_script_loads_and_says_clearly_that_its_data_is_missing(tmp_path):
    from conftest import GUIDE_SCRIPTS
    from quinkgl.errors import ScriptError
    from quinkgl.manifest import compute_arch_hash

    script = ScriptPlugin.from_file(GUIDE_SCRIPTS / "cifar10_peer_script.py")
    model = script.quinkgl_build_model(None, {})
    assert compute_arch_hash(model).startswith("sha256:")
    with pytest.raises(ScriptError, match=r"build_loaders\(\) in .* raised"):  # no CIFAR-10 files, no internet
        script.quinkgl_build_loaders(None, {"data_root": str(tmp_path)})


def test_fashion_mnist_cnn_example_learns(tmp_path):
    from conftest import REPO
    from helpers import make_manifest
    from quinkgl.datasets import ensure_fashion_mnist
    from quinkgl.manifest import compute_arch_hash

    try:
        ensure_fashion_mnist(tmp_path / "data")
    except Exception as exc:  # needs Debian's apt-get; the datasets tests cover the fetch itself
        pytest.skip(f"Fashion-MNIST unavailable here: {exc}")
    script = ScriptPlugin.from_file(REPO / "examples" / "fashion_mnist_cnn_peer_script.py")
    manifest = make_manifest(arch_hash=compute_arch_hash(script.module.FashionCNN()))
    result = simulate(
        manifest,
        script,
        SimulationOptions(
            peers=2, rounds=2, local_steps=60, max_eval_batches=40, script_args={"data_root": str(tmp_path / "data")}
        ),
        build_registry(),
    )
    finals = [rounds[-1]["val_accuracy"] for rounds in result.history.values()]
    assert min(finals) > 0.6  # ten classes: chance is 0.1


def honest_mean(result, nodes):
    return statistics.mean(result.history[node][-1]["val_accuracy"] for node in nodes)


@pytest.mark.parametrize("aggregation", ["FedAvg", "EntropyWeightedAvg"])
def test_one_inflate_peer_of_ten_moves_honest_accuracy_by_less_than_a_point(guide_script, mnist_root, aggregation):
    manifest = fedavg_manifest(transport="libp2p", aggregation=aggregation)
    common = {
        "peers": 10,
        # near the plateau: at 3 x 25 steps accuracy still climbs steeply and which sources answered in time moved
        # the honest mean by a point between identical runs (a CI run: 0.8786 vs 0.8680). At 5 x 50, quiet: clean
        # 0.9235-0.9241, with the inflate peer 0.9213-0.9284 over four runs each.
        "rounds": 5,
        "local_steps": 50,
        "seed": 5,
        "max_eval_batches": 100,
        "script_args": {"data_root": str(mnist_root)},
    }
    script = ScriptPlugin.from_file(guide_script)
    clean = simulate(manifest, script, SimulationOptions(**common), build_registry())
    attacked = simulate(manifest, script, SimulationOptions(byzantine=("1:inflate",), **common), build_registry())
    assert attacked.hostile == {"peer-10": "1:inflate"}
    honest = [f"peer-{i}" for i in range(1, 10)]
    print(
        f"{aggregation}: honest mean clean {honest_mean(clean, honest):.4f}, "
        f"with 1 inflate peer {honest_mean(attacked, honest):.4f}"
    )
    assert abs(honest_mean(attacked, honest) - honest_mean(clean, honest)) < 0.01


def test_byzantine_specs_are_checked_and_list_the_known_attacks():
    from quinkgl.attacks import ATTACKS, alie_z, parse_byzantine
    from quinkgl.errors import QuinkGLError

    assert str(parse_byzantine("3:signflip:2")) == "3:signflip:2" and parse_byzantine("1:inflate").param is None
    for bad in ("x:signflip", "0:signflip", "1:nope", "1:inflate:3", "1:gaussian:-1", "1:scale:nan", "signflip"):
        with pytest.raises(QuinkGLError) as caught:
            parse_byzantine(bad)
        assert all(name in str(caught.value) for name in ATTACKS)
    with pytest.raises(QuinkGLError, match="leave at least one honest"):
        SimulationOptions(peers=3, rounds=1, byzantine=("2:signflip", "1:alie"))
    assert alie_z(50, 24) == pytest.approx(1.75, abs=0.01)  # Baruch et al.: n = 50, f = 24 gives z ≈ 1.75


def online_peers(result):
    """(final, best) validation accuracy of each peer online at the end (churn may have taken others away)."""
    return [
        (rounds[-1]["val_accuracy"], max(m["val_accuracy"] for m in rounds))
        for summary in result.summaries
        if summary["conditions"]["online"] and (rounds := result.history[summary["node_id"]])
    ]


@pytest.mark.slow
def test_the_swarm_learns_under_message_drops_and_churn_and_degrades_gracefully(guide_script, mnist_root):
    """The gossip-learning literature's qualitative result at CI size: with 20 % of the messages lost and peers
    leaving and rejoining, every online peer still reaches 90 % on MNIST IID within the round budget; at 50 %
    drops the swarm still learns, a little worse.

    Lost messages are silent (a lost answer costs the round its deadline), so a peer sometimes gets no answer in a
    round and keeps its locally trained model, a few points lower for that round (the guide's lr 0.05): hence
    "reaches within the budget" per peer, and the final accuracies' mean."""
    common = {"peers": 8, "rounds": 10, "local_epochs": None, "local_steps": 60, "max_eval_batches": 60, "seed": 5}
    common["gossip_interval"] = 10.0
    online = {}
    for drop in (0.2, 0.5):
        conditions = Conditions(drop=drop, latency=Latency("uniform", 0.0, 0.02), churn_leave=0.1, churn_rejoin=0.5)
        result = run(guide_script, mnist_root, conditions=conditions, **common)
        online[drop] = online_peers(result)
        offline = sum(s["conditions"]["offline_rounds"] for s in result.summaries)
        finals = sorted(round(final, 4) for final, _ in online[drop])
        print(f"drops {drop:.0%} + churn: {result.seconds:.1f} s, online finals {finals}, offline rounds {offline}")
        assert result.scale["messages_dropped"] > 0 and offline > 0  # the conditions really applied
        assert len(online[drop]) >= 4  # most peers are online at the end
    mean_final = {drop: statistics.mean(final for final, _ in peers) for drop, peers in online.items()}
    assert all(best >= 0.90 for _, best in online[0.2]), online[0.2]
    assert mean_final[0.2] >= 0.90, mean_final
    assert all(best >= 0.80 for _, best in online[0.5]), online[0.5]  # half the messages lost: still learns
    assert mean_final[0.5] >= 0.80, mean_final
    assert mean_final[0.5] <= mean_final[0.2] + 0.01, mean_final  # and no better than with fewer losses


@pytest.mark.slow
def test_a_simulated_peer_hears_only_its_overlay_neighbours(guide_script, mnist_root):
    """Announcements reach a bounded overlay, not the whole swarm: each peer's view (and so its candidate
    sources) stays within ``announce_degree`` peers however large the swarm."""
    result = run(
        guide_script,
        mnist_root,
        peers=40,
        rounds=2,
        local_epochs=None,
        local_steps=2,
        max_eval_batches=1,
        announce_degree=6,
    )
    views = [m["peers"] for rounds in result.history.values() for m in rounds]
    assert max(views) <= 6 and min(views) >= 1
    assert result.scale["announce_degree"] == 6 and result.scale["messages_per_peer_per_round"] > 0
    assert all(s["updates_accepted"] >= 1 for s in result.summaries)
