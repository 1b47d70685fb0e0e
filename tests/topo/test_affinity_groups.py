"""AffinityTopology on the data it is for: two groups of peers with disjoint label sets (real MNIST)."""

from __future__ import annotations

import statistics

import pytest

from helpers import fedavg_manifest
from quinkgl.plugins.manager import build_registry
from quinkgl.script import ScriptPlugin
from quinkgl.simulate import SimulationOptions, label_groups, partition_indices, peer_group, simulate

PEERS, GROUPS, WARM_UP = 10, 2, 1


def test_groups_partition_gives_each_peer_only_its_groups_labels():
    labels = [i % 10 for i in range(3000)]
    shards = partition_indices(labels, 5, "groups:2", seed=0)
    assert sorted(i for s in shards for i in s) == list(range(3000))
    groups = label_groups(labels, 2)
    assert groups == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    for index, shard in enumerate(shards):
        assert {labels[i] for i in shard} == set(groups[peer_group(index, 2)])


def test_groups_partition_needs_enough_labels_and_peers():
    from quinkgl.errors import QuinkGLError

    with pytest.raises(QuinkGLError, match="distinct labels"):
        partition_indices([0, 1] * 10, 4, "groups:3", seed=0)
    with pytest.raises(QuinkGLError, match="peers"):
        partition_indices(list(range(10)) * 3, 2, "groups:3", seed=0)


def run(topology: str, script_path, mnist_root):
    options = SimulationOptions(
        peers=PEERS,
        rounds=4,
        local_steps=30,
        partition=f"groups:{GROUPS}",
        seed=5,
        max_eval_batches=20,
        script_args={"data_root": str(mnist_root)},
    )
    return simulate(fedavg_manifest(topology=topology), ScriptPlugin.from_file(script_path), options, build_registry())


def same_group_share(result) -> float:
    """Of the models each peer aggregated after warm-up, the share that came from its own label group."""
    group_of = {f"peer-{i + 1}": peer_group(i, GROUPS) for i in range(PEERS)}
    node_of = {s["peer_id"]: s["node_id"] for s in result.summaries}
    same = total = 0
    for node, rounds in result.history.items():
        for metrics in rounds[WARM_UP:]:
            for source in metrics["aggregated_from"]:
                total += 1
                same += group_of[node_of[source]] == group_of[node]
    assert total > 0, "nobody aggregated anything"
    return same / total


@pytest.mark.slow
def test_affinity_learns_from_its_own_group_and_beats_random_on_its_groups_labels(guide_script, mnist_root):
    affinity = run("AffinityTopology", guide_script, mnist_root)
    random_ = run("RandomTopology", guide_script, mnist_root)
    acc = lambda result: statistics.mean(r[-1]["val_accuracy"] for r in result.history.values())  # noqa: E731
    share_affinity, share_random = same_group_share(affinity), same_group_share(random_)
    print(
        f"same-group sources: affinity {share_affinity:.3f} vs random {share_random:.3f}; accuracy on the "
        f"group's labels: affinity {acc(affinity):.4f} vs random {acc(random_):.4f}"
    )
    assert share_affinity >= 0.80
    assert share_random < 0.70  # the split really is two groups: uniform choice mixes them
    assert acc(affinity) > acc(random_)
