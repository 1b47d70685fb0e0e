"""Mode A: standard datasets with a standard model, for `--data NAME` instead of a peer script.

Each entry gives the dataset's task shape, a model and loaders built like the user guide's scripts. The
manifest's task must match the dataset's shapes; anything else is a clear error listing what is supported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from quinkgl.errors import DataError
from quinkgl.plugins.hookspecs import hookimpl


@attrs.frozen
class StandardDataset:
    """A dataset Mode A knows: torchvision class name, sample shape, classes, normalisation."""

    name: str
    torchvision_class: str
    input_shape: tuple[int, ...]
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


STANDARD = {
    "mnist": StandardDataset("mnist", "MNIST", (1, 28, 28), 10, (0.1307,), (0.3081,)),
    "fashion-mnist": StandardDataset("fashion-mnist", "FashionMNIST", (1, 28, 28), 10, (0.2860,), (0.3530,)),
    "cifar10": StandardDataset("cifar10", "CIFAR10", (3, 32, 32), 10, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def _mlp(classes: int) -> Any:
    import torch.nn as nn

    return nn.Sequential(
        nn.Flatten(), nn.Linear(28 * 28, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, classes)
    )


def _cnn(classes: int) -> Any:
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, classes),
    )


class StandardPlugin:
    """The hooks of Mode A for one dataset (the same hooks a peer script provides)."""

    def __init__(self, name: str, manifest: Any = None):
        key = name.strip().lower().replace("_", "-")
        if key not in STANDARD:
            raise DataError(f"--data {name!r} is not a standard dataset; supported: {', '.join(STANDARD)}")
        self.dataset = STANDARD[key]
        if manifest is not None:
            self.check(manifest)

    def check(self, manifest: Any) -> None:
        """The manifest's task must be classification with this dataset's shapes and integer labels."""
        task, ds = manifest.task, self.dataset
        expected = ("class", ds.input_shape, (ds.classes,), "integer")
        actual = (task.type, tuple(task.input_shape), tuple(task.output_shape), task.label_type)
        if actual != expected:
            raise DataError(
                f"--data {ds.name} is classification of {list(ds.input_shape)} inputs into {ds.classes} classes "
                f"with integer labels, but the manifest says {task.type} {list(task.input_shape)} -> "
                f"{list(task.output_shape)} ({task.label_type}); supported: "
                + ", ".join(f"{d.name} {list(d.input_shape)}->{d.classes}" for d in STANDARD.values())
            )

    def build_model(self) -> Any:
        """The standard model for this dataset."""
        return _cnn(self.dataset.classes) if self.dataset.input_shape[0] == 3 else _mlp(self.dataset.classes)

    @hookimpl
    def quinkgl_build_model(self, manifest: Any, kwargs: Mapping[str, str]) -> Any:
        return self.build_model()

    @hookimpl
    def quinkgl_build_loaders(self, manifest: Any, kwargs: Mapping[str, str]) -> Any:
        import torchvision
        from torch.utils.data import DataLoader
        from torchvision import transforms

        root = kwargs.get("data_root", "./data")
        batch_size = int(kwargs.get("batch_size", 32))
        if self.dataset.name in ("mnist", "fashion-mnist"):
            from quinkgl.datasets import ensure_dataset

            ensure_dataset(self.dataset.name, root)
        transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(self.dataset.mean, self.dataset.std)]
        )
        cls = getattr(torchvision.datasets, self.dataset.torchvision_class)
        try:
            train = cls(root=root, train=True, download=True, transform=transform)
            val = cls(root=root, train=False, download=True, transform=transform)
        except Exception as exc:
            raise DataError(f"cannot load {self.dataset.name} from {root}: {exc}") from None
        return DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(val, batch_size=batch_size)

    @hookimpl
    def quinkgl_build_optimizer(self, manifest: Any, model: Any) -> Any:
        import torch

        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
