"""Peer scripts (Mode B): the user's ``peer_script.py`` adapted into a plugin.

The user writes plain functions — ``build_model(manifest, **kwargs)``, ``build_loaders(manifest, **kwargs)``,
optional ``build_optimizer(manifest, model)``, ``on_round_end(round_idx, metrics)``,
``on_peer_discovered(peer_id)``, ``on_aggregation_done(peer_ids, sample_count)`` — and :class:`ScriptPlugin`
exposes them as ``quinkgl_*`` hookimpls, so they run through the same hook machinery as any plugin. Every call
is checked: a missing function, an exception inside one, or a wrong return value is a :class:`ScriptError`
that names the function.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from quinkgl.errors import ScriptError
from quinkgl.plugins.hookspecs import hookimpl

REQUIRED = ("build_model", "build_loaders")
OPTIONAL = ("build_optimizer", "on_round_end", "on_peer_discovered", "on_aggregation_done")
_counter = itertools.count()


def load_script_module(path: str | os.PathLike[str]) -> ModuleType:
    """Import a peer script file as a fresh module (its folder goes on sys.path, as `python script.py` does)."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise ScriptError(f"peer script {path} does not exist")
    name = f"quinkgl_peer_script_{next(_counter)}_{os.path.splitext(os.path.basename(path))[0]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ScriptError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        raise ScriptError(f"importing peer script {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


class ScriptPlugin:
    """A peer script as a pluggy plugin; each hookimpl calls the script's function and checks the result."""

    def __init__(self, module: ModuleType | Any, source: str = "peer script"):
        self.module = module
        self.source = source
        missing = [name for name in REQUIRED if not callable(getattr(module, name, None))]
        if missing:
            raise ScriptError(
                f"{source} is missing required function(s): {', '.join(f'{m}(manifest, **kwargs)' for m in missing)}"
            )
        for name in OPTIONAL:
            value = getattr(module, name, None)
            if value is not None and not callable(value):
                raise ScriptError(f"{source}: {name} must be a function, got {type(value).__name__}")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ScriptPlugin:
        """Load and check a peer script file."""
        return cls(load_script_module(path), source=os.fspath(path))

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        function: Callable[..., Any] | None = getattr(self.module, name, None)
        if function is None:
            return None
        try:
            return function(*args, **kwargs)
        except ScriptError:
            raise
        except Exception as exc:
            raise ScriptError(f"{name}() in {self.source} raised {type(exc).__name__}: {exc}") from exc

    # -- build hooks (firstresult) --------------------------------------------------------------------------------

    @hookimpl
    def quinkgl_build_model(self, manifest: Any, kwargs: Mapping[str, str]) -> Any:
        import torch.nn as nn

        model = self._call("build_model", manifest, **dict(kwargs))
        if not isinstance(model, nn.Module):
            raise ScriptError(f"build_model() in {self.source} must return a torch.nn.Module, got {_kind(model)}")
        return model

    @hookimpl
    def quinkgl_build_loaders(self, manifest: Any, kwargs: Mapping[str, str]) -> Any:
        loaders = self._call("build_loaders", manifest, **dict(kwargs))
        if not isinstance(loaders, (tuple, list)) or len(loaders) != 2:
            raise ScriptError(
                f"build_loaders() in {self.source} must return (train_loader, val_loader), got {_kind(loaders)}"
            )
        for label, loader in zip(("train_loader", "val_loader"), loaders, strict=False):
            if not hasattr(loader, "__iter__"):
                raise ScriptError(f"build_loaders() in {self.source}: {label} is not iterable ({_kind(loader)})")
        return tuple(loaders)

    @hookimpl
    def quinkgl_build_optimizer(self, manifest: Any, model: Any) -> Any:
        if getattr(self.module, "build_optimizer", None) is None:
            return None
        import torch

        optimizer = self._call("build_optimizer", manifest, model)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ScriptError(
                f"build_optimizer() in {self.source} must return a torch.optim.Optimizer, got {_kind(optimizer)}"
            )
        return optimizer

    # -- notifications ---------------------------------------------------------------------------------------------

    @hookimpl
    def quinkgl_on_round_end(self, round_idx: int, metrics: Mapping[str, Any]) -> None:
        self._call("on_round_end", round_idx, dict(metrics))

    @hookimpl
    def quinkgl_on_peer_discovered(self, peer_id: str) -> None:
        self._call("on_peer_discovered", peer_id)

    @hookimpl
    def quinkgl_on_aggregation_done(self, peer_ids: Sequence[str], sample_count: int) -> None:
        self._call("on_aggregation_done", list(peer_ids), sample_count)


def _kind(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__ if value is not None else "None"
