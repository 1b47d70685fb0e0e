"""Helpers shared by tests: valid manifests through the public API, the user guide's model."""

from __future__ import annotations

from quinkgl.authoring import ManifestOptions, create_manifest
from quinkgl.plugins.manager import build_registry

ARCH = "sha256:" + "4" * 64


def make_manifest(key=None, **overrides):
    """A valid demo manifest (signed when ``key`` is given)."""
    fields = {
        "name": "demo-5peer",
        "task_type": "class",
        "input_shape": (1, 28, 28),
        "output_shape": (10,),
        "label_type": "integer",
        "framework": "pytorch",
        "arch_hash": ARCH,
    }
    fields.update(overrides)
    return create_manifest(ManifestOptions(**fields), build_registry(), key)


def mnist_net():
    """The user guide's MNISTNet (784-128-64-10 MLP)."""
    import torch.nn as nn

    class MNISTNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Flatten(), nn.Linear(28 * 28, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
            )

        def forward(self, x):
            return self.net(x)

    return MNISTNet()


def guide_arch_hash():
    """The arch hash of the guide's MNISTNet."""
    from quinkgl.manifest import compute_arch_hash

    return compute_arch_hash(mnist_net())


def manifest_create(name, arch, *extra, output=None, input_shape="1,28,28"):
    """The argv of `quinkgl manifest create` with the guide's MNIST fields; ``extra`` adds flags (rule, key, …)."""
    fields = ["--task-type", "class", "--input-shape", input_shape, "--output-shape", "10", "--label-type", "integer"]
    return [
        *("manifest", "create", "--name", name, *fields, "--model-framework", "pytorch", "--model-arch-hash", arch),
        *("--output", output or f"{name}.qgl", *extra),
    ]


def fedavg_manifest(**overrides):
    """A manifest for the guide's MNIST script with FedAvg + RandomTopology over the memory transport."""
    fields = {"arch_hash": guide_arch_hash(), "transport": "memory"}
    fields.update(overrides)
    return make_manifest(**fields)


def run_swarm(manifest, scripts, options_list, hub=None, registry=None, observer=None, extra=None, peer_ids=None):
    """Run peers (one per script/options pair) over one memory hub in this process; returns the Peer objects.

    ``extra(peers, hub)``, if given, is an async function run beside the peers (e.g. a misbehaving client);
    ``peer_ids`` fixes the memory transports' peer IDs (e.g. to issue membership certificates for them)."""
    import attrs
    import trio

    from quinkgl.plugins.manager import build_registry
    from quinkgl.runtime.build import build_peer
    from quinkgl.runtime.peer import Peer
    from quinkgl.transport import TransportConfig
    from quinkgl.transports.memory import MemoryParams, memory_transport

    registry = registry or build_registry()
    hub = hub or f"test-{id(scripts)}"
    if len(options_list) == 1:  # a lone peer has nobody to wait for before its first round
        options_list = [attrs.evolve(options_list[0], discovery_wait=0)]

    def factory(node_id, peer_id=None):
        return lambda max_bytes: memory_transport(
            MemoryParams(hub=hub),
            TransportConfig(
                swarm_id=manifest.swarm_id,
                node_id=node_id,
                max_payload_bytes=max_bytes,
                options={"peer_id": peer_id} if peer_id else {},
            ),
        )

    peer_ids = peer_ids or [None] * len(options_list)
    peers = [
        Peer(build_peer(manifest, script, options, registry, factory(options.node_id, pid)), observer)
        for script, options, pid in zip(scripts, options_list, peer_ids, strict=False)
    ]

    async def main():
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(peer.run)
            if extra is not None:
                nursery.start_soon(extra, peers, hub)

    trio.run(main)
    return peers


def run_on_terminal(argv, cwd, env, timeout: float = 300) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin/stdout/stderr; return its exit code and everything it drew."""
    import os
    import select
    import subprocess
    import time

    master, slave = os.openpty()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")
