"""Building the component registry: core's built-ins plus every ``quinkgl`` entry point.

Entry points are listed without importing them, then each is loaded on its own inside try/except: a broken
plugin is recorded (distribution, entry point, error) and the rest still load. ``check_pending()`` catches
misspelt hookimpls. Nothing here runs at ``import quinkgl``.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

import attrs
import pluggy

from quinkgl.errors import PluginError
from quinkgl.plugins import hookspecs
from quinkgl.plugins.catalog import first_party, first_party_names
from quinkgl.plugins.records import COMPONENT_KINDS, SPEC_TYPES, ComponentSpec, normalise_name

log = logging.getLogger("quinkgl.plugins")
ENTRY_POINT_GROUP = hookspecs.PROJECT
CORE_PLUGIN_NAME = "quinkgl-core"
_REGISTER_HOOKS = {
    "transport": "quinkgl_register_transports",
    "aggregator": "quinkgl_register_aggregators",
    "topology": "quinkgl_register_topologies",
    "data_policy": "quinkgl_register_data_policies",
}


@attrs.frozen
class Provider:
    """Where a plugin came from: its distribution (None for unpackaged plugins) and version."""

    distribution: str | None
    version: str | None


@attrs.frozen
class RegisteredComponent:
    """A component in the registry with the plugin and distribution that provide it."""

    spec: ComponentSpec
    plugin: str
    provider: Provider

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def name(self) -> str:
        return self.spec.name


@attrs.frozen
class BrokenPlugin:
    """A plugin that failed to load or register; ``error`` is the original exception text."""

    plugin: str
    provider: Provider
    error: str


class Registry:
    """The components available in this process, by kind and normalised name (a typed facade over pluggy)."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.providers: dict[str, Provider] = {}
        self.broken: list[BrokenPlugin] = []
        self.conflicts: list[str] = []
        self._components: dict[str, dict[str, RegisteredComponent]] = {kind: {} for kind in COMPONENT_KINDS}

    def components(self, kind: str | None = None) -> list[RegisteredComponent]:
        """Registered components, optionally of one kind, sorted by kind and name."""
        kinds = [kind] if kind else list(COMPONENT_KINDS)
        return [c for k in kinds for c in sorted(self._components[k].values(), key=lambda c: c.spec.key)]

    def names(self, kind: str) -> list[str]:
        """Display names of the registered components of ``kind``."""
        return [c.name for c in self.components(kind)]

    def find(self, kind: str, name: str) -> RegisteredComponent | None:
        """The component called ``name`` (case-insensitive), or None."""
        return self._components[kind].get(normalise_name(name))

    def get(self, kind: str, name: str) -> RegisteredComponent:
        """The component called ``name``; raises :class:`PluginError` listing the choices when unknown."""
        found = self.find(kind, name)
        if found is not None:
            return found
        label = kind.replace("_", " ")
        message = f"{label} {name!r} is not recognized; choose one of: {', '.join(self.names(kind)) or '(none)'}"
        known = first_party(kind, name)
        if known is not None:
            message += f". {known[0]} is provided by {known[1]}: pip install {known[1]}"
        raise PluginError(message)

    def provider_of_plugin(self, plugin_name: str) -> Provider:
        """The distribution a registered plugin came from."""
        return self.providers.get(plugin_name, Provider(None, None))

    # -- building ------------------------------------------------------------------------------------------------

    def _add(self, spec: Any, plugin_name: str) -> None:
        if not isinstance(spec, ComponentSpec) or type(spec).kind not in SPEC_TYPES:
            raise TypeError(f"registration hook returned {type(spec).__name__}, not a component spec")
        table = self._components[spec.kind]
        existing = table.get(spec.key)
        if existing is not None and existing.plugin != plugin_name:
            first = existing.provider.distribution or existing.plugin
            second = self.provider_of_plugin(plugin_name).distribution or plugin_name
            self.conflicts.append(f"{spec.kind} {spec.name!r} is provided by both {first} and {second}")
            return
        table[spec.key] = RegisteredComponent(spec, plugin_name, self.provider_of_plugin(plugin_name))

    def collect_components(self) -> None:
        """Call every registration hookimpl on its own, so one failing plugin is recorded, not fatal."""
        for kind, hook_name in _REGISTER_HOOKS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                try:
                    result = impl.function()
                    specs = [] if result is None else [result] if isinstance(result, ComponentSpec) else list(result)
                    for spec in specs:
                        if spec.kind != kind:
                            raise TypeError(f"{hook_name} returned a {spec.kind} spec")
                        self._add(spec, impl.plugin_name)
                except Exception as exc:
                    self._mark_broken(impl.plugin_name, f"{hook_name} failed: {type(exc).__name__}: {exc}")

    def _mark_broken(self, plugin_name: str, error: str) -> None:
        log.warning("plugin %s is broken: %s", plugin_name, error)
        self.broken.append(BrokenPlugin(plugin_name, self.provider_of_plugin(plugin_name), error))
        for table in self._components.values():
            for key in [k for k, c in table.items() if c.plugin == plugin_name]:
                del table[key]
        if self.pm.get_plugin(plugin_name) is not None:
            self.pm.unregister(name=plugin_name)


def _builtin_plugins() -> Sequence[ModuleType]:
    from quinkgl import builtins

    return (builtins,)


def _entry_points(group: str) -> Iterable[md.EntryPoint]:
    return sorted(md.entry_points(group=group), key=lambda ep: ep.name)


def build_registry(
    *, group: str = ENTRY_POINT_GROUP, load_entry_points: bool = True, extra_plugins: Sequence[tuple[str, Any]] = ()
) -> Registry:
    """Create the plugin manager, register built-ins, entry points and ``extra_plugins``, collect components."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    registry = Registry(pm)
    core_version = md.version("quinkgl-core") if _installed("quinkgl-core") else None
    for module in _builtin_plugins():
        pm.register(module, name=CORE_PLUGIN_NAME)
        registry.providers[CORE_PLUGIN_NAME] = Provider("quinkgl-core", core_version)
    if load_entry_points:
        for ep in _entry_points(group):
            dist = ep.dist
            provider = Provider(dist.name if dist else None, dist.version if dist else None)
            plugin_name = f"{provider.distribution or 'unknown'}:{ep.name}"
            registry.providers[plugin_name] = provider
            try:
                pm.register(ep.load(), name=plugin_name)
            except Exception as exc:  # an ImportError, a SyntaxError, or a module that raises on import
                registry.broken.append(BrokenPlugin(plugin_name, provider, f"{type(exc).__name__}: {exc}"))
    for name, plugin in extra_plugins:
        registry.providers.setdefault(name, Provider(None, None))
        pm.register(plugin, name=name)
    _check_pending(registry)
    registry.collect_components()
    return registry


def _check_pending(registry: Registry) -> None:
    # check_pending() raises on the first bad plugin only; retry until every misspelt hookimpl is reported.
    for _ in range(len(registry.pm.get_plugins()) + 1):
        try:
            registry.pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = registry.pm.get_name(exc.plugin) if exc.plugin is not None else None
            if name is None:
                raise
            registry._mark_broken(name, f"unknown hook: {exc}")


def _installed(distribution: str) -> bool:
    try:
        md.distribution(distribution)
    except md.PackageNotFoundError:
        return False
    return True


def known_names(registry: Registry, kind: str) -> list[str]:
    """Names usable for ``kind``: registered ones plus first-party ones that could be installed."""
    names = {normalise_name(n): n for n in first_party_names(kind)}
    names.update({normalise_name(n): n for n in registry.names(kind)})
    return sorted(names.values(), key=str.lower)
