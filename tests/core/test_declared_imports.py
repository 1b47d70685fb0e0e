"""Every module a distribution imports at run time is declared in that distribution's own pyproject.toml.

The imports are read from the source with ``ast`` (nothing is imported). The standard library and the
distribution's own package are exempt; ``if TYPE_CHECKING:`` blocks are skipped (they never run). A module may
be declared as a dependency or in an optional extra (``quinkgl-core[torch]``): the commands that need an extra
check for it and name the ``pip install`` line (see ``quinkgl.extras``).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the light-install check covers 3.10 at run time

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = {
    "quinkgl-core": "quinkgl",
    "quinkgl-cli": "quinkgl_cli",
    "quinkgl-agg-robust": "quinkgl_agg_robust",
    "quinkgl-topo": "quinkgl_topo",
    "quinkgl-transport-libp2p": "quinkgl_transport_libp2p",
}
# import name -> the distribution that provides it (spelled out, so a new dependency is a deliberate change here)
PROVIDERS = {
    "attrs": "attrs",
    "cattrs": "cattrs",
    "cryptography": "cryptography",
    "packaging": "packaging",
    "pluggy": "pluggy",
    "trio": "trio",
    "torch": "torch",
    "torchvision": "torchvision",
    "numpy": "numpy",
    "safetensors": "safetensors",
    "click": "click",
    "rich": "rich",
    "matplotlib": "matplotlib",
    "libp2p": "libp2p",
    "multiaddr": "multiaddr",
    "opacus": "opacus",
    "prometheus_client": "prometheus-client",
    "tensorboard": "tensorboard",
    **{package: distribution for distribution, package in DISTRIBUTIONS.items()},
}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(tree: ast.AST) -> set[str]:
    """Top-level names of the absolute imports in ``tree``, outside ``if TYPE_CHECKING:`` blocks."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def declared(distribution: str) -> set[str]:
    project = tomllib.loads((REPO / distribution / "pyproject.toml").read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {_normalize(Requirement(text).name) for text in requirements}


def test_type_checking_blocks_are_skipped():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import libp2p\nelse:\n    import trio\n")
    assert runtime_imports(tree) == {"typing", "trio"}


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
def test_every_import_is_declared(distribution):
    package = DISTRIBUTIONS[distribution]
    wanted: dict[str, list[str]] = {}
    for path in sorted((REPO / distribution / "src" / package).rglob("*.py")):
        for name in runtime_imports(ast.parse(path.read_text(), str(path))):
            if name in sys.stdlib_module_names or name == "__future__" or name == package:
                continue
            wanted.setdefault(name, []).append(str(path.relative_to(REPO)))
    unknown = sorted(set(wanted) - set(PROVIDERS))
    assert not unknown, f"imports with no known provider (add them to PROVIDERS and the pyproject): {unknown}"
    have = declared(distribution)
    missing = {PROVIDERS[name]: files[0] for name, files in wanted.items() if _normalize(PROVIDERS[name]) not in have}
    assert not missing, f"{distribution}/pyproject.toml does not declare: {missing}"
