"""Optional dependencies: which commands need an extra, and the one ``pip install`` line that adds it.

``quinkgl-core`` alone (with ``quinkgl-cli``) creates, signs, verifies and shows manifests without PyTorch.
Training — ``quinkgl run``, ``quinkgl simulate``, ``quinkgl data`` — needs the ``torch`` extra. The check uses
:func:`importlib.util.find_spec`, so it imports nothing and costs a few milliseconds.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from quinkgl.errors import PluginError

# extra -> the modules it provides (see quinkgl-core/pyproject.toml's [project.optional-dependencies])
EXTRAS: dict[str, tuple[str, ...]] = {"torch": ("torch", "torchvision", "numpy", "safetensors")}


class MissingDependencyError(PluginError):
    """An optional dependency a command needs is not installed; the message names the ``pip install`` line."""


def missing_modules(names: Iterable[str]) -> list[str]:
    """The top-level modules among ``names`` that cannot be imported here (none is actually imported)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def install_hint(extra: str) -> str:
    """The command that installs ``extra`` of quinkgl-core."""
    return f"pip install 'quinkgl-core[{extra}]'"


def require_extra(extra: str, needed_by: str) -> None:
    """Raise :class:`MissingDependencyError` (one line, exit code 8) unless every module of ``extra`` is present."""
    missing = missing_modules(EXTRAS[extra])
    if missing:
        raise MissingDependencyError(
            f"{needed_by} needs the '{extra}' extra, which is not installed (missing: {', '.join(missing)}); "
            f"install it with: {install_hint(extra)}"
        )
