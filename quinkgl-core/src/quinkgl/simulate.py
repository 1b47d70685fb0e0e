"""The in-process swarm simulator: N peers, one process, the real round loop over the ``memory`` transport.

The peer script is used unchanged: its ``build_loaders`` is called once, the training set is split into one
shard per peer (IID, or label-skewed with a Dirichlet prior), and every peer gets its own model from
``build_model`` and its own optimizer from ``build_optimizer``. Deterministic transforms are applied once and
shared (see :mod:`quinkgl.dataprep`); torch work is bounded by one limiter per core.

Cost per peer does not grow with the swarm (issue 11): a peer's announcements reach only its neighbours in a
bounded random overlay (:func:`quinkgl.simconditions.announce_overlay`), and their interval is stretched by the
same factor as the swarm's rounds are by sharing the cores (:func:`announce_interval`), so a peer handles about
the same number of announcements per round at 100 peers as at 1,000. The run's conditions (drops, latency,
churn, slow peers: :mod:`quinkgl.simconditions`) apply to every peer.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from quinkgl import dataprep
from quinkgl.errors import QuinkGLError
from quinkgl.plugins.manager import Registry
from quinkgl.plugins.requirements import resolve_components
from quinkgl.runtime.options import PeerOptions
from quinkgl.simconditions import ANNOUNCE_DEGREE, Conditions, Network, PeerConditions, announce_overlay
from quinkgl.transport import TransportConfig

log = logging.getLogger("quinkgl.simulate")

_PARTITION_RE = re.compile(r"(iid|dirichlet:(\d+(\.\d+)?)|groups:[1-9]\d{0,2})")
MAX_PEERS = 2000  # what one 24 GiB, 2-core machine holds with the guide's MNIST model (docs/cli.md)
BASE_ANNOUNCE_INTERVAL = 4.0  # PeerOptions' default
PEERS_PER_CORE_UNSTRETCHED = 25  # up to this many simulated peers per core keep the real announce interval


def announce_interval(peers: int, cores: int) -> float:
    """Seconds between a simulated peer's announcements: the real interval, stretched by how much slower the
    swarm's rounds run because ``peers`` share ``cores`` (linear in ``peers`` beyond 25 per core)."""
    return BASE_ANNOUNCE_INTERVAL * max(1.0, peers / (PEERS_PER_CORE_UNSTRETCHED * max(cores, 1)))


def _as_tuple(values: Any) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class SimulationOptions:
    """How to run a simulated swarm."""

    peers: int = attrs.field(validator=attrs.validators.ge(1))
    rounds: int = attrs.field(validator=attrs.validators.ge(1))
    partition: str = attrs.field(default="iid")
    seed: int = 0
    local_steps: int | None = None
    local_epochs: float | None = None
    gossip_interval: float = 60.0
    script_args: dict[str, str] = attrs.field(factory=dict)
    isolated: bool = False
    max_eval_batches: int | None = None
    strict_manifest: bool = True
    device: str = "cpu"  # a resolved torch device (see quinkgl.runtime.devices.resolve_device)
    byzantine: tuple[str, ...] = attrs.field(default=(), converter=_as_tuple)  # K:ATTACK[:PARAM], see quinkgl.attacks
    conditions: Conditions = attrs.field(factory=Conditions)  # drops, latency, churn, slow peers
    announce_degree: int = attrs.field(default=ANNOUNCE_DEGREE, validator=attrs.validators.ge(2))

    @byzantine.validator
    def _check_byzantine(self, attribute: Any, value: tuple[str, ...]) -> None:
        from quinkgl.attacks import parse_byzantine

        hostile = sum(parse_byzantine(text).count for text in value)
        if hostile >= self.peers:
            raise QuinkGLError(f"--byzantine makes {hostile} of {self.peers} peers hostile; leave at least one honest")

    @partition.validator
    def _check_partition(self, attribute: Any, value: str) -> None:
        if not _PARTITION_RE.fullmatch(value):
            raise QuinkGLError(
                "--partition must be iid, dirichlet:ALPHA (e.g. dirichlet:0.3) or groups:K (e.g. groups:2); "
                f"got {value!r}"
            )


@attrs.frozen
class SimulationResult:
    """Per-peer summaries, per-peer per-round metrics, and the wall time."""

    summaries: list[dict[str, Any]]
    history: dict[str, list[dict[str, Any]]]
    seconds: float
    shard_sizes: list[int]
    hostile: dict[str, str] = attrs.field(factory=dict)  # node_id -> its --byzantine spec, for hostile peers only
    scale: dict[str, Any] = attrs.field(factory=dict)  # cost per peer: time, memory, messages (see _scale_report)

    def honest(self) -> list[dict[str, Any]]:
        """The summaries of the honest peers."""
        return [s for s in self.summaries if s["node_id"] not in self.hostile]


def label_groups(labels: Sequence[int], groups: int) -> list[list[int]]:
    """The sorted distinct labels cut into ``groups`` contiguous, disjoint label sets (as equal as possible)."""
    import numpy as np

    classes = sorted({int(c) for c in labels})
    if groups > len(classes):
        raise QuinkGLError(f"groups:{groups} needs at least {groups} distinct labels; the data has {len(classes)}")
    return [[int(c) for c in part] for part in np.array_split(np.asarray(classes), groups)]


def peer_group(index: int, groups: int) -> int:
    """The label group of the peer at 0-based ``index`` under ``groups:K``: peers alternate between groups."""
    return index % groups


def partition_indices(labels: Sequence[int], peers: int, partition: str, seed: int) -> list[list[int]]:
    """Split sample indices into ``peers`` shards: IID, per-class Dirichlet(alpha) proportions, or ``groups:K``
    (K disjoint label sets; peer i gets an IID share of group i mod K's samples and no other label)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(labels)
    if partition == "iid":
        order = rng.permutation(n)
        return [sorted(int(i) for i in chunk) for chunk in np.array_split(order, peers)]
    if partition.startswith("groups:"):
        groups = int(partition.split(":", 1)[1])
        if groups > peers:
            raise QuinkGLError(f"groups:{groups} needs at least {groups} peers")
        labels_arr = np.asarray(labels)
        grouped: list[list[int]] = [[] for _ in range(peers)]
        for group, classes in enumerate(label_groups(labels, groups)):
            members = [i for i in range(peers) if peer_group(i, groups) == group]
            order = rng.permutation(np.flatnonzero(np.isin(labels_arr, classes)))
            for member, chunk in zip(members, np.array_split(order, len(members)), strict=False):
                grouped[member] = sorted(int(i) for i in chunk)
        return grouped
    alpha = float(partition.split(":", 1)[1])
    if alpha <= 0:
        raise QuinkGLError("dirichlet alpha must be > 0")
    labels_arr = np.asarray(labels)
    shards: list[list[int]] = [[] for _ in range(peers)]
    for cls in np.unique(labels_arr):
        in_class = rng.permutation(np.flatnonzero(labels_arr == cls))
        proportions = rng.dirichlet([alpha] * peers)
        cuts = (np.cumsum(proportions)[:-1] * len(in_class)).astype(int)
        for shard, part in zip(shards, np.split(in_class, cuts), strict=False):
            shard.extend(int(i) for i in part)
    # A peer with no data cannot train: give it a few samples from the largest shard.
    for shard in shards:
        if not shard:
            donor = max(shards, key=len)
            shard.extend(donor[-8:])
            del donor[-8:]
    return [sorted(s) for s in shards]


def labels_of_groups(partition: str, labels: Sequence[int]) -> list[list[int]]:
    """The label sets of a ``groups:K`` partition (empty for any other partition)."""
    if not partition.startswith("groups:"):
        return []
    return label_groups(labels, int(partition.split(":", 1)[1]))


def _group_validation(val: Any, groups: list[list[int]]) -> list[Any]:
    """Under ``groups:K`` each peer is validated on its own group's labels only: what it is there to learn."""
    if not groups:
        return []
    if not isinstance(val, dataprep.TensorBatches):
        raise QuinkGLError("--partition groups:K needs a validation set that can be held in memory (.targets)")
    import torch

    subsets = []
    for classes in groups:
        mask = torch.isin(val.labels, torch.tensor(classes, dtype=val.labels.dtype))
        subsets.append(attrs.evolve(val, inputs=val.inputs[mask], labels=val.labels[mask]))
    return subsets


async def simulate_async(
    manifest: Any,
    script: Any,
    options: SimulationOptions,
    registry: Registry,
    observer: Callable[[str, dict[str, Any]], None] | None = None,
) -> SimulationResult:
    """Run the simulated swarm on the current trio loop."""
    import torch
    import trio

    from quinkgl.runtime.build import build_loaders, build_peer, peer_hooks, prepare_data
    from quinkgl.runtime.peer import Peer
    from quinkgl.transports.memory import MemoryParams, memory_transport

    started = time.monotonic()
    if options.peers > MAX_PEERS:
        raise QuinkGLError(f"--peers: at most {MAX_PEERS} simulated peers; got {options.peers}")
    if getattr(manifest, "membership", "open") != "open":
        # Every simulated peer runs in this process on the user's behalf: there is nobody to keep out, and no
        # creator key to certify them with. Membership is enforced by `quinkgl run`, not simulated.
        log.info("simulating a certified swarm as an open one (membership is enforced by `quinkgl run`)")
        manifest = attrs.evolve(manifest, membership="open")
    resolved = resolve_components(manifest, registry, skip_kinds=("transport",))
    cores = os.cpu_count() or 1
    limiter = trio.CapacityLimiter(cores)
    torch.set_num_threads(1)  # peers run side by side; one intra-op thread each uses the cores best
    base = PeerOptions(node_id="template", rounds=options.rounds, script_args=options.script_args, seed=options.seed)
    loaders = build_loaders(manifest, peer_hooks(registry, script), base)
    full = prepare_data(manifest, loaders, base)
    labels = dataprep.dataset_labels(full.train) or dataprep.dataset_labels(loaders[0])
    if labels is None:
        if options.partition != "iid":
            raise QuinkGLError("a label-skewed partition needs a dataset whose labels can be read (.targets)")
        labels = [0] * full.num_samples
    shards = partition_indices(labels, options.peers, options.partition, options.seed)
    group_vals = _group_validation(full.val, labels_of_groups(options.partition, labels))
    # Shards slice the training set converted once above, instead of converting it again per peer.
    tensors = (full.train.inputs, full.train.labels) if isinstance(full.train, dataprep.TensorBatches) else None
    hub = f"simulation-{os.getpid()}-{time.monotonic_ns()}"
    peers: list[Any] = []
    hostile = _hostile_peers(options)
    node_ids = [f"peer-{index}" for index in range(1, options.peers + 1)]
    overlay = announce_overlay(node_ids, options.announce_degree, options.seed)
    conditions = options.conditions
    network = Network(conditions, options.seed) if conditions.drop or conditions.latency.kind != "none" else None
    speeds = conditions.speeds(options.peers, options.seed)
    interval = announce_interval(options.peers, cores)
    all_options = []
    for index in range(1, options.peers + 1):
        all_options.append(
            PeerOptions(
                node_id=f"peer-{index}",
                rounds=options.rounds,
                local_steps=options.local_steps,
                local_epochs=options.local_epochs,
                gossip_interval=options.gossip_interval,
                script_args=options.script_args,
                seed=options.seed,
                isolated=options.isolated,
                max_eval_batches=options.max_eval_batches,
                strict_manifest=options.strict_manifest,
                announce_interval=interval,
                peer_timeout=max(30.0, options.gossip_interval, 3 * interval),
                device=options.device,
            )
        )
    # The shards first (disjoint slices: together one copy of the training set, whatever the swarm's size), so
    # that the memory measured per peer is the peers' own: model, optimizer, runtime.
    datas = []
    for index, (peer_options, shard) in enumerate(zip(all_options, shards, strict=True), start=1):
        val = group_vals[peer_group(index - 1, len(group_vals))] if group_vals else full.val
        datas.append(prepare_data(manifest, loaders, peer_options, indices=shard, val=val, train_tensors=tensors))
    memory_before = _rss_bytes()
    for index, (peer_options, data) in enumerate(zip(all_options, datas, strict=True), start=1):
        spec = hostile.get(peer_options.node_id)
        if spec is not None:
            data = _hostile_data(spec, data, manifest)

        def make_transport(max_bytes: int, node_id: str = peer_options.node_id) -> Any:
            config = TransportConfig(
                swarm_id=manifest.swarm_id,
                node_id=node_id,
                max_payload_bytes=max_bytes,
                options={"announce_to": overlay[node_id], "network": network},
            )
            return memory_transport(MemoryParams(hub=hub), config)

        parts = build_peer(
            manifest, script, peer_options, registry, make_transport, resolved=resolved, data=data, limiter=limiter
        )
        if spec is not None:
            parts.attack = _attack(spec, options, len(hostile), peers, hostile)
        if conditions.any:
            parts.conditions = PeerConditions(
                speed=speeds[index - 1],
                leave=conditions.churn_leave,
                rejoin=conditions.churn_rejoin,
                rng=random.Random(f"{options.seed}:churn:{index}"),
            )
        peers.append(Peer(parts, observer))
    built = time.monotonic()
    cpu_built = time.process_time()
    memory_built = _rss_bytes()
    peak = [memory_built]

    async def sample_memory() -> None:
        while True:
            peak[0] = max(peak[0], _rss_bytes())
            await trio.sleep(0.5)

    # The peers' long-lived objects need no cyclic GC: freezing them keeps full collections from rescanning a heap
    # that grows with the swarm (their cost per round would grow with it).
    gc.freeze()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_memory)
            async with trio.open_nursery() as swarm:
                for peer in peers:
                    swarm.start_soon(peer.run)
            nursery.cancel_scope.cancel()
    finally:
        gc.unfreeze()
    finished = time.monotonic()
    cpu_run = time.process_time() - cpu_built
    peak[0] = max(peak[0], _rss_bytes())
    summaries = [peer.summary() for peer in peers]
    for summary, peer in zip(summaries, peers, strict=True):
        if peer.p.conditions is not None:
            summary["conditions"] = peer.p.conditions.to_dict()
    return SimulationResult(
        summaries=summaries,
        history={peer.options.node_id: peer.history for peer in peers},
        seconds=finished - started,
        shard_sizes=[len(s) for s in shards],
        hostile={node: str(spec) for node, spec in hostile.items()},
        scale=_scale_report(
            peers,
            options,
            setup_seconds=built - started,
            run_seconds=finished - built,
            cpu_seconds=cpu_run,
            memory_before=memory_before,
            memory_built=memory_built,
            memory_peak=peak[0],
            announce_every=interval,
            dropped=network.dropped if network is not None else 0,
        ),
    )


def _rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; elsewhere its peak so far)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _tensor_bytes(value: Any) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def _scale_report(peers: list[Any], options: SimulationOptions, **measured: Any) -> dict[str, Any]:
    """What one simulated peer costs: wall and CPU time per round, memory per peer (resident growth from building the
    peers to the run's peak, over the peers) against its model + optimizer state, and messages and bytes per
    peer per round (announcements, requests, answers)."""
    count = max(len(peers), 1)
    rounds_run = max(sum(len(peer.history) for peer in peers) / count, 1e-9)
    model = _tensor_bytes(peers[0].p.model.state_dict()) if peers else 0
    optimizer = _tensor_bytes(peers[0].p.optimizer.state_dict().get("state", {})) if peers else 0
    messages = bytes_moved = 0
    for peer in peers:
        traffic: dict[str, int] = getattr(peer.p.transport, "traffic", dict)()
        stats = peer.p.transport.stats()
        messages += traffic.get("messages_sent", 0) + traffic.get("messages_received", 0)
        bytes_moved += stats.bytes_sent + stats.bytes_received + traffic.get("announcement_bytes", 0)
    memory_per_peer = max(0, measured["memory_peak"] - measured["memory_before"]) / count
    return {
        "peers": len(peers),
        "setup_seconds": round(measured["setup_seconds"], 3),
        "run_seconds": round(measured["run_seconds"], 3),
        "seconds_per_round": round(measured["run_seconds"] / options.rounds, 3),
        # CPU time of this process (all threads): what a busy shared machine does not distort
        "cpu_seconds_per_round": round(measured["cpu_seconds"] / options.rounds, 3),
        "memory_before_peers_bytes": measured["memory_before"],
        "memory_peak_bytes": measured["memory_peak"],
        "memory_per_peer_bytes": round(memory_per_peer),
        "memory_per_peer_built_bytes": round(max(0, measured["memory_built"] - measured["memory_before"]) / count),
        "model_bytes": model,
        "optimizer_state_bytes": optimizer,
        "memory_per_peer_over_state": round(memory_per_peer / max(model + optimizer, 1), 3),
        "messages_per_peer_per_round": round(messages / count / rounds_run, 2),
        "bytes_per_peer_per_round": round(bytes_moved / count / rounds_run),
        "announce_interval_s": measured["announce_every"],
        "announce_degree": min(options.announce_degree, len(peers) - 1),
        "messages_dropped": measured["dropped"],
    }


def _hostile_peers(options: SimulationOptions) -> dict[str, Any]:
    """node_id -> ByzantineSpec (count 1) for the hostile peers: the last peers, in the order of --byzantine."""
    from quinkgl.attacks import parse_byzantine

    hostile: dict[str, Any] = {}
    index = options.peers
    for text in options.byzantine:
        spec = parse_byzantine(text)
        for _ in range(spec.count):
            hostile[f"peer-{index}"] = attrs.evolve(spec, count=1)
            index -= 1
    return hostile


def _hostile_data(spec: Any, data: Any, manifest: Any) -> Any:
    """The data lies of a hostile peer: flipped labels, an inflated sample count, a fake balanced histogram."""
    from quinkgl.attacks import INFLATED_SAMPLES, fake_histogram

    if spec.attack == "labelflip":
        if not isinstance(data.train, dataprep.TensorBatches) or manifest.task.type != "class":
            raise QuinkGLError("--byzantine labelflip needs a classification dataset held in memory")
        classes = int(manifest.task.output_shape[0])
        data.train.labels = (classes - 1) - data.train.labels
    elif spec.attack == "inflate":
        data = attrs.evolve(data, num_samples=INFLATED_SAMPLES)
    elif spec.attack == "histogram":
        classes = len(data.label_counts) or int(manifest.task.output_shape[0])
        data = attrs.evolve(data, label_counts=fake_histogram(classes, data.num_samples))
    return data


def _attack(
    spec: Any, options: SimulationOptions, hostile_count: int, peers: list[Any], hostile: dict[str, Any]
) -> Any:
    """The runtime side of a hostile peer; ALIE and IPM read the honest peers' current models (omniscient)."""
    from quinkgl.attacks import Attack

    def honest_models() -> list[Any]:
        return [peer.p.model.state_dict() for peer in peers if peer.options.node_id not in hostile]

    return Attack(
        spec.attack,
        spec.param,
        seed=options.seed,
        honest_models=honest_models,
        peers=options.peers,
        hostile=hostile_count,
    )


def simulate(
    manifest: Any,
    script: Any,
    options: SimulationOptions,
    registry: Registry,
    observer: Callable[[str, dict[str, Any]], None] | None = None,
) -> SimulationResult:
    """Run a simulated swarm to completion (blocking)."""
    import trio

    return trio.run(simulate_async, manifest, script, options, registry, observer)
