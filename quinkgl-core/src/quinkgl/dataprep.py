"""Turning a peer script's loaders into fast, shardable batch sources.

Per-sample PIL transforms dominate a round on small models (an MNIST epoch: ~9 s through a DataLoader, ~1.8 s over
pre-converted tensors). When a dataset's transform is deterministic (ToTensor, Normalize, …) we apply it ONCE —
vectorised where we can, checked against the dataset's own ``__getitem__`` — and serve batches from tensors.
Random augmentations are kept: such datasets go through their own DataLoader every step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

log = logging.getLogger("quinkgl.data")

_DETERMINISTIC = {
    "ToTensor",
    "Normalize",
    "PILToTensor",
    "ConvertImageDtype",
    "Resize",
    "CenterCrop",
    "Grayscale",
    "ToDtype",
    "ToImage",
    "Compose",
}
MAX_MATERIALIZE_BYTES = 4 * 1024**3


@attrs.define
class TensorBatches:
    """Batches over in-memory tensors; each iteration draws a fresh permutation when ``shuffle``."""

    inputs: Any
    labels: Any
    batch_size: int
    shuffle: bool
    seed: int = 0
    _epoch: int = 0

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        import torch

        n = len(self.labels)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100003 + self._epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        self._epoch += 1
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.inputs[index], self.labels[index]

    def __len__(self) -> int:
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    @property
    def num_samples(self) -> int:
        return len(self.labels)


def _transform_names(transform: Any) -> list[str]:
    if transform is None:
        return []
    inner = getattr(transform, "transforms", None)
    if inner is not None:
        return [name for t in inner for name in _transform_names(t)]
    return [type(transform).__name__]


def is_deterministic(dataset: Any) -> bool:
    """Whether the dataset's transforms are known to give the same tensor every time."""
    names = _transform_names(getattr(dataset, "transform", None)) + _transform_names(
        getattr(dataset, "target_transform", None)
    )
    return all(name in _DETERMINISTIC for name in names)


def _vectorised(dataset: Any) -> tuple[Any, Any] | None:
    """ToTensor(+Normalize) over a torchvision dataset's ``.data`` array in one go; None if not applicable."""
    import torch

    data, targets = getattr(dataset, "data", None), getattr(dataset, "targets", None)
    names = _transform_names(getattr(dataset, "transform", None))
    if data is None or targets is None or getattr(dataset, "target_transform", None) is not None:
        return None
    if names not in (["ToTensor"], ["ToTensor", "Normalize"]):
        return None
    x = torch.as_tensor(data)
    if x.dtype != torch.uint8 or x.dim() not in (3, 4):
        return None
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    x = x.float().div_(255.0)
    if names[-1] == "Normalize":
        norm = dataset.transform.transforms[-1]
        mean = torch.tensor(norm.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(norm.std, dtype=x.dtype).view(1, -1, 1, 1)
        x = x.sub_(mean).div_(std)
    return x.contiguous(), torch.as_tensor(targets).long()


def materialize(dataset: Any) -> tuple[Any, Any] | None:
    """All samples of a deterministic dataset as ``(inputs, labels)`` tensors, or None to keep the loader."""
    import torch

    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__") or not is_deterministic(dataset):
        return None
    n = len(dataset)
    if n == 0:
        return None
    first_x, _first_y = dataset[0]
    if not isinstance(first_x, torch.Tensor):
        return None
    if first_x.numel() * first_x.element_size() * n > MAX_MATERIALIZE_BYTES:
        return None
    fast = _vectorised(dataset)
    if fast is not None:
        # Trust but verify: the vectorised path must equal the dataset's own __getitem__.
        for i in {0, n // 2, n - 1}:
            x, y = dataset[i]
            if not torch.allclose(fast[0][i], x, atol=1e-6) or int(fast[1][i]) != int(y):
                log.info("vectorised transform differs from __getitem__; converting sample by sample")
                fast = None
                break
    if fast is not None:
        return fast
    xs, ys = zip(*(dataset[i] for i in range(n)), strict=False)
    return torch.stack(list(xs)), torch.as_tensor([int(y) if not isinstance(y, torch.Tensor) else y for y in ys])


def loader_batch_size(loader: Any, default: int = 32) -> int:
    """The batch size a DataLoader was built with (``default`` for other iterables)."""
    return int(getattr(loader, "batch_size", None) or default)


def loader_shuffles(loader: Any) -> bool:
    """Whether a DataLoader shuffles (a RandomSampler); other iterables are taken as they come."""
    sampler = getattr(loader, "sampler", None)
    return type(sampler).__name__ == "RandomSampler"


def fast_loader(
    loader: Any, seed: int = 0, indices: Sequence[int] | None = None, tensors: tuple[Any, Any] | None = None
) -> Any:
    """A :class:`TensorBatches` equivalent of ``loader`` (optionally a subset), or a subset DataLoader fallback.

    ``tensors``: the loader's dataset already materialised, so many shards of one dataset convert it once."""
    dataset = getattr(loader, "dataset", None)
    if tensors is None and dataset is not None:
        tensors = materialize(dataset)
    if tensors is not None:
        x, y = tensors
        if indices is not None:
            import torch

            index = torch.as_tensor(list(indices), dtype=torch.long)
            x, y = x[index], y[index]
        return TensorBatches(x, y, loader_batch_size(loader), loader_shuffles(loader), seed)
    if indices is None:
        return loader
    from torch.utils.data import DataLoader, Subset

    assert dataset is not None  # a loader without a dataset was returned above
    return DataLoader(
        Subset(dataset, list(indices)),
        batch_size=loader_batch_size(loader),
        shuffle=loader_shuffles(loader),
        collate_fn=loader.collate_fn,
        num_workers=getattr(loader, "num_workers", 0),
    )


def dataset_labels(loader: Any) -> list[int] | None:
    """Every label of a loader's dataset, read without running its transforms when possible."""
    if isinstance(loader, TensorBatches):  # first: a shard's batches hold exactly the shard's labels
        return [int(t) for t in loader.labels.tolist()]
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        return None
    targets = getattr(dataset, "targets", None)
    if targets is not None and getattr(dataset, "target_transform", None) is None:
        return [int(t) for t in targets]
    return None


def label_counts(labels: Sequence[int], num_classes: int) -> list[int]:
    """How many samples of each class (labels outside ``[0, num_classes)`` are ignored)."""
    counts = [0] * num_classes
    for label in labels:
        if 0 <= label < num_classes:
            counts[label] += 1
    return counts


def num_samples(loader: Any) -> int:
    """The number of training samples behind a loader (batches × batch size when unknown)."""
    if isinstance(loader, TensorBatches):
        return loader.num_samples
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__"):
        return len(dataset)
    try:
        return len(loader) * loader_batch_size(loader)
    except TypeError:
        return 0
