"""Framework wrappers for models. ``PyTorchModel`` wraps an ``nn.Module`` with QuinkGL's identity helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quinkgl.archhash import compute_arch_hash
from quinkgl.schema import data_schema_hash


def _first_and_last_linear(model: Any) -> tuple[Any | None, Any | None]:
    first = last = None
    for _, module in model.named_modules():
        if hasattr(module, "in_features") and hasattr(module, "out_features"):
            first = first or module
            last = module
    return first, last


class PyTorchModel:
    """A PyTorch model as QuinkGL sees it: the module, its arch hash and its data schema hash.

    Shapes default to what the model reveals: the first linear layer's ``in_features`` and the last one's
    ``out_features``. Pass them explicitly for convolutional models or when the swarm's manifest declares an
    image shape (e.g. ``input_shape=(1, 28, 28)``), so the hash matches the manifest's.
    """

    def __init__(
        self,
        model: Any,
        *,
        input_shape: Sequence[int] | None = None,
        output_shape: Sequence[int] | None = None,
        label_type: str = "integer",
    ):
        self.model = model
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.output_shape = tuple(output_shape) if output_shape is not None else None
        self.label_type = label_type

    def get_arch_hash(self) -> str:
        """The structural hash of the wrapped model (see :mod:`quinkgl.archhash`)."""
        return compute_arch_hash(self.model)

    def get_data_schema_hash(self) -> str:
        """``sha256:<64 hex>`` of the data schema (input shape, output shape, label type)."""
        input_shape, output_shape = self.input_shape, self.output_shape
        if input_shape is None or output_shape is None:
            first, last = _first_and_last_linear(self.model)
            if first is None:
                raise ValueError(
                    "cannot infer the data shapes of a model without linear layers; "
                    "pass input_shape=... and output_shape=... to PyTorchModel"
                )
            assert last is not None  # found together with first
            input_shape = input_shape or (int(first.in_features),)
            output_shape = output_shape or (int(last.out_features),)
        return data_schema_hash(input_shape, output_shape, self.label_type)

    def __repr__(self) -> str:
        return f"PyTorchModel({type(self.model).__name__}, arch={self.get_arch_hash()[:19]}…)"
