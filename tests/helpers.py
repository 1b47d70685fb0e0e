"""Helpers shared by tests: valid manifests through the public API, the user guide's model."""

from __future__ import annotations

from quinkgl.manifest.create import ManifestOptions, create_manifest
from quinkgl.plugins.manager import build_registry

ARCH = "sha256:" + "4" * 64


def make_manifest(key=None, **overrides):
    """A valid demo manifest (signed when ``key`` is given)."""
    fields = dict(
        name="demo-5peer",
        task_type="class",
        input_shape=(1, 28, 28),
        output_shape=(10,),
        label_type="integer",
        framework="pytorch",
        arch_hash=ARCH,
    )
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
