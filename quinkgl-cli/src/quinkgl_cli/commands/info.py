"""``quinkgl info``: versions and every registered component with the distribution that provides it."""

from __future__ import annotations

import json
import platform

import click

from quinkgl_cli import terminal

DISTRIBUTIONS = ("quinkgl-core", "quinkgl-cli", "quinkgl-agg-robust", "quinkgl-topo", "quinkgl-transport-libp2p")
THIRD_PARTY = ("torch", "torchvision", "libp2p", "pluggy")


def _version(distribution: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return None


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info_command(as_json: bool) -> None:
    """Show versions, installed plugins and the components they provide."""
    from quinkgl.plugins.catalog import FIRST_PARTY
    from quinkgl.plugins.manager import build_registry

    registry = build_registry()
    versions = {name: _version(name) for name in (*DISTRIBUTIONS, *THIRD_PARTY)}
    not_installed: dict[str, list[tuple[str, str]]] = {}
    for (kind, name), dist in FIRST_PARTY.items():
        if registry.find(kind, name) is None and versions.get(dist) is None:
            not_installed.setdefault(kind, []).append((name, dist))
    if as_json:
        doc = {
            "python": platform.python_version(),
            "versions": versions,
            "components": [
                {"kind": c.kind, "name": c.name, "distribution": c.provider.distribution, "version": c.provider.version}
                for c in registry.components()
            ],
            "broken_plugins": [
                {"plugin": b.plugin, "distribution": b.provider.distribution, "error": b.error} for b in registry.broken
            ],
            "conflicts": registry.conflicts,
        }
        terminal.out(json.dumps(doc, indent=2))
        return
    terminal.out(
        f"QuinkGL {versions['quinkgl-core'] or '?'} on Python {platform.python_version()} ({platform.system()})"
    )
    for name, version in versions.items():
        terminal.out(f"  {name:<26} {version or 'not installed'}")
    from quinkgl_cli.render import components_table

    terminal.render(components_table(registry, not_installed))
    for broken in registry.broken:
        terminal.warn(
            f"plugin {broken.plugin} ({broken.provider.distribution} {broken.provider.version}) failed: {broken.error}"
        )
    for conflict in registry.conflicts:
        terminal.warn(conflict)
