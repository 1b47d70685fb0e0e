"""Model identity: a hash of a model's structure, never its weights ("arch-hash v1").

What is hashed, in module registration order (``model.named_modules()``), for every submodule:

* its qualified name inside the model (``net.1``) and its class name (``Linear``, ``ReLU``, ``Conv2d``),
* its configuration as PyTorch reports it (``extra_repr()``: ``in_features=784, out_features=128, bias=True``),
* the name, shape and dtype of each parameter and buffer it owns directly.

The root module's own class name is not hashed, so ``MyModel`` and ``MNISTNet`` with the same layers match.
Not hashed: weight values, ``forward`` code, functional calls inside ``forward`` (``F.relu``) — use activation
modules if the activation should be part of the identity. The hash is the SHA-256 of the canonical JSON of that
description, prefixed ``sha256:``. It needs no torch import: any object with ``named_modules`` works.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

ARCH_HASH_VERSION = 1


def _tensor_entry(name: str, tensor: Any) -> list[Any]:
    return [name, list(tensor.shape), str(tensor.dtype).removeprefix("torch.")]


def describe_architecture(model: Any) -> dict[str, Any]:
    """The structure that :func:`compute_arch_hash` hashes, as a JSON-ready dict."""
    if not hasattr(model, "named_modules"):
        raise TypeError(f"compute_arch_hash needs a torch.nn.Module, got {type(model).__name__}")
    modules = []
    for qualified, module in model.named_modules():
        modules.append(
            {
                "name": qualified,
                "type": "<root>" if qualified == "" else type(module).__name__,
                "config": module.extra_repr(),
                "params": [_tensor_entry(n, t) for n, t in module.named_parameters(recurse=False)],
                "buffers": [_tensor_entry(n, t) for n, t in module.named_buffers(recurse=False) if t is not None],
            }
        )
    return {"arch_hash_version": ARCH_HASH_VERSION, "modules": modules}


def compute_arch_hash(model: Any) -> str:
    """``sha256:<64 hex>`` identifying ``model``'s structure (layer types, order, sizes, activations)."""
    text = json.dumps(describe_architecture(model), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
