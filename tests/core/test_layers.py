"""Import direction between the layers, checked on the source (ast), so no import side effects are needed.

* ``quinkgl.manifest`` (data, codec, signing) imports nothing from the layers above it: the plugin registry,
  manifest authoring, the runtime and transports.
* Core imports none of the other distributions (CLI, plugins).
* The CLI and the plugin distributions use only public core names (no ``_private`` module or attribute).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "quinkgl-core" / "src" / "quinkgl"
OTHER_DISTRIBUTIONS = {
    "quinkgl-cli": "quinkgl_cli",
    "quinkgl-agg-robust": "quinkgl_agg_robust",
    "quinkgl-topo": "quinkgl_topo",
    "quinkgl-transport-libp2p": "quinkgl_transport_libp2p",
}
ABOVE_MANIFEST = ("quinkgl.plugins", "quinkgl.authoring", "quinkgl.runtime", "quinkgl.transport", "quinkgl.simulate")


def imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """``(line, absolute module, imported names)`` for every import in ``path`` (relative ones resolved)."""
    parts = path.parts
    package = ".".join(parts[len(parts) - parts[::-1].index("src") : -1])  # the folders below the src/ folder
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            yield node.lineno, module, [alias.name for alias in node.names]


def sources(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_imports_helper_resolves_relative_imports():
    found = {m for _, m, _ in imports(REPO / "quinkgl-transport-libp2p/src/quinkgl_transport_libp2p/transport.py")}
    assert "quinkgl_transport_libp2p.framing" in found or "quinkgl_transport_libp2p" in found


def test_manifest_package_imports_nothing_from_the_layers_above_it():
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sources(CORE / "manifest")
        for line, module, _ in imports(path)
        if any(_under(module, upper) for upper in ABOVE_MANIFEST)
    ]
    assert not bad, "\n".join(bad)


def test_core_imports_no_other_distribution():
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sources(CORE)
        for line, module, _ in imports(path)
        if any(_under(module, package) for package in OTHER_DISTRIBUTIONS.values())
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("distribution", sorted(OTHER_DISTRIBUTIONS))
def test_other_distributions_use_only_public_core_names(distribution):
    root = REPO / distribution / "src" / OTHER_DISTRIBUTIONS[distribution]
    bad = []
    for path in sources(root):
        for line, module, names in imports(path):
            if not _under(module, "quinkgl"):
                continue
            private = [part for part in module.split(".") if part.startswith("_")]
            private += [name for name in names if name.startswith("_")]
            if private:
                bad.append(f"{path.relative_to(REPO)}:{line} uses {module}: {', '.join(private)}")
    assert not bad, "\n".join(bad)
