"""Choosing the torch device a peer trains on (``--device``), and moving received tensors onto it.

``auto`` (the default) is CUDA when torch sees a GPU, else the CPU. An explicit device is checked before any
work starts, so ``--device cuda`` on a machine without one is a one-line error instead of a traceback halfway
through building the model. Updates arrive decoded on the CPU; aggregation moves them to the own model's device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quinkgl.errors import PluginError, UsageError

AUTO = "auto"


def resolve_device(requested: str) -> str:
    """``auto`` → ``cuda`` or ``cpu``; an explicit device is validated and returned in torch's spelling."""
    try:
        import torch
    except ImportError:
        raise PluginError("training needs torch, which is not installed: pip install 'quinkgl-core[torch]'") from None

    text = requested.strip().lower()
    if text == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {requested!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {requested}: CUDA is not available here (use --device auto or cpu)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {requested}: this machine has {count} CUDA device(s), cuda:0…{count - 1}")
    elif device.type != "cpu" and not _available(device):
        raise UsageError(f"--device {requested}: that device type is not available here (use --device auto or cpu)")
    return str(device)


def _available(device: Any) -> bool:
    import torch

    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError):
        return False
    return True


def to_device(tensors: Mapping[str, Any], device: Any) -> dict[str, Any]:
    """``tensors`` on ``device`` (tensors already there are returned as they are, not copied)."""
    return {name: t if t.device == device else t.to(device) for name, t in tensors.items()}
