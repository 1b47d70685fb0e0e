"""What a manifest needs from the plugin world, and checking that this machine has it.

``requirements_for`` turns the components a manifest names into distribution requirements (at create time);
``resolve_components`` checks them at start-up and raises ONE :class:`PluginError` that names every problem,
the ``pip install`` line that fixes the missing ones, a broken plugin's original error, and what is available.
"""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Iterable
from typing import Any

import attrs
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from quinkgl.errors import PluginError
from quinkgl.manifest.model import Manifest, PluginRequirement
from quinkgl.plugins.catalog import compatible_specifier, first_party
from quinkgl.plugins.manager import RegisteredComponent, Registry, known_names

# manifest field -> component kind
MANIFEST_COMPONENTS = {
    "aggregation": "aggregator",
    "topology": "topology",
    "transport": "transport",
    "data_policy": "data_policy",
}


@attrs.frozen
class ResolvedComponents:
    """The registered component for each of a manifest's component fields, with its validated params."""

    components: dict[str, RegisteredComponent]
    params: dict[str, Any]


def _provider(registry: Registry, kind: str, name: str) -> tuple[str, str, str]:
    """``(display name, distribution, specifier)`` for a component, installed or first-party."""
    found = registry.find(kind, name)
    if found is not None:
        dist = found.provider.distribution
        if dist is None:
            raise PluginError(
                f"{kind} {name!r} comes from an unpackaged plugin ({found.plugin}); a manifest can only require "
                "components of installed distributions"
            )
        version = found.provider.version
        return found.name, dist, compatible_specifier(version) if version else compatible_specifier()
    known = first_party(kind, name)
    if known is not None:
        return known[0], known[1], compatible_specifier()
    raise PluginError(
        f"{kind.replace('_', ' ')} {name!r} is not recognized; choose one of: {', '.join(known_names(registry, kind))}"
    )


def canonical_component_name(registry: Registry, kind: str, name: str) -> str:
    """The display spelling of a component name (``fedavg`` → ``FedAvg``); raises when unknown."""
    return _provider(registry, kind, name)[0]


def requirements_for(registry: Registry, selections: Iterable[tuple[str, str]]) -> tuple[PluginRequirement, ...]:
    """Group the ``(kind, name)`` selections into one requirement per providing distribution."""
    grouped: dict[str, tuple[str, list[str]]] = {}
    for kind, name in selections:
        display, dist, specifier = _provider(registry, kind, name)
        grouped.setdefault(dist, (specifier, []))[1].append(f"{kind}:{display}")
    return tuple(
        PluginRequirement(distribution=dist, specifier=spec, provides=tuple(provides))
        for dist, (spec, provides) in sorted(grouped.items())
    )


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return None


def _version_ok(version: str, specifier: str) -> bool:
    try:
        return SpecifierSet(specifier).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def resolve_components(manifest: Manifest, registry: Registry, *, skip_kinds: Iterable[str] = ()) -> ResolvedComponents:
    """Check every plugin requirement and component of ``manifest``; one error lists all problems.

    ``skip_kinds`` leaves out components the caller replaces (the simulator brings its own transport)."""
    skip = set(skip_kinds)
    from quinkgl.manifest.codec import structure_params

    problems: list[str] = []
    to_install: list[str] = []
    unusable: set[str] = set()
    for req in manifest.plugins:
        if skip and all(item.split(":", 1)[0] in skip for item in req.provides):
            continue
        needed = ", ".join(req.provides)
        version = installed_version(req.distribution)
        if version is None:
            problems.append(f"{req.distribution}{req.specifier} is not installed (it provides {needed})")
            to_install.append(f"'{req.distribution}{req.specifier}'")
            unusable.add(req.distribution)
        elif not _version_ok(version, req.specifier):
            problems.append(f"{req.distribution} {version} is installed, but the manifest needs {req.specifier}")
            to_install.append(f"'{req.distribution}{req.specifier}'")
            unusable.add(req.distribution)
        for broken in registry.broken:
            if broken.provider.distribution == req.distribution:
                problems.append(f"{req.distribution} is installed but its plugin failed to load: {broken.error}")
                unusable.add(req.distribution)
    components: dict[str, RegisteredComponent] = {}
    params: dict[str, Any] = {}
    for field, kind in MANIFEST_COMPONENTS.items():
        if kind in skip:
            continue
        selected = getattr(manifest, field)
        found = registry.find(kind, selected.name)
        if found is None:
            known = first_party(kind, selected.name)
            if known is not None and known[1] in unusable:
                continue  # already explained by the distribution problem above
            hint = ""
            if known is not None and installed_version(known[1]) is not None:
                hint = f"; {known[1]} {installed_version(known[1])} is installed but does not provide it (upgrade it)"
            elif known is not None:
                hint = f"; it is provided by {known[1]}: pip install {known[1]}"
                to_install.append(known[1])
            problems.append(
                f"{kind.replace('_', ' ')} {selected.name!r} is not available{hint}; available: "
                f"{', '.join(registry.names(kind)) or '(none)'}"
            )
            continue
        components[field] = found
        try:
            params[field] = structure_params(selected.params, found.spec.params, f"$.{field}.params")
        except Exception as exc:
            problems.append(str(exc).replace("\n", "\n    "))
    if problems:
        lines = ["this manifest needs plugins that are missing or unusable:"]
        lines += [f"  - {problem}" for problem in problems]
        if to_install:
            lines.append(f"install them with: pip install {' '.join(dict.fromkeys(to_install))}")
        raise PluginError("\n".join(lines))
    return ResolvedComponents(components, params)
