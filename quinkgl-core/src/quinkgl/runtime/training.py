"""Local training and evaluation. Called in worker threads; pure torch, no event-loop access."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from quinkgl.errors import ScriptError


@attrs.frozen
class StepMetrics:
    """Mean loss and accuracy (None for non-classification tasks) over the samples seen."""

    loss: float
    accuracy: float | None
    samples: int


def loss_function(task_type: str, label_type: str) -> Any:
    """The loss a task type trains with."""
    import torch.nn as nn

    if task_type in ("class", "seg"):
        return nn.CrossEntropyLoss()
    if task_type == "regr":
        return nn.MSELoss()
    raise ScriptError(f"task type {task_type!r} has no built-in loss yet; use class, regr or seg")


class BatchStream:
    """Endless batches from a re-iterable loader: a new pass starts when one is exhausted."""

    def __init__(self, loader: Any):
        self.loader = loader
        self._iterator: Iterator[Any] | None = None

    def next(self) -> Any:
        for _ in range(2):
            if self._iterator is None:
                self._iterator = iter(self.loader)
            try:
                return next(self._iterator)
            except StopIteration:
                self._iterator = None
        raise ScriptError("the training loader yields no batches")


def _accuracy(outputs: Any, targets: Any) -> int | None:
    if outputs.dim() < 2:
        return None
    predicted = outputs.argmax(dim=1)
    labels = targets.argmax(dim=1) if targets.dim() == outputs.dim() and targets.is_floating_point() else targets
    return int((predicted == labels).sum())


def train_steps(
    model: Any, optimizer: Any, stream: BatchStream, steps: int, loss_fn: Any, device: str, classify: bool
) -> StepMetrics:
    """Run ``steps`` optimisation steps; return mean loss/accuracy over them."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for _ in range(steps):
        inputs, targets = stream.next()
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad(set_to_none=True)
        outputs = model(inputs)
        loss = loss_fn(outputs, targets)
        loss.backward()
        optimizer.step()
        batch = len(targets)
        total_loss += float(loss.detach()) * batch
        seen += batch
        if classify:
            correct += _accuracy(outputs.detach(), targets) or 0
    # Gradients are not kept between rounds (one model's worth less per peer). Freed on the parameters, not through
    # ``optimizer.zero_grad``: a script's optimizer may do more there than clear gradients.
    for param in model.parameters():
        param.grad = None
    return StepMetrics(total_loss / max(seen, 1), correct / max(seen, 1) if classify else None, seen)


def evaluate(
    model: Any, loader: Any, loss_fn: Any, device: str, classify: bool, max_batches: int | None = None
) -> StepMetrics:
    """Loss/accuracy over the validation loader (at most ``max_batches`` batches)."""
    import torch

    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for index, (inputs, targets) in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = model(inputs)
            batch = len(targets)
            total_loss += float(loss_fn(outputs, targets)) * batch
            seen += batch
            if classify:
                correct += _accuracy(outputs, targets) or 0
    return StepMetrics(total_loss / max(seen, 1), correct / max(seen, 1) if classify else None, seen)
