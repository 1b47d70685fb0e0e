"""`import quinkgl` and the manifest API stay light: no torch, no libp2p, no plugin loading."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "libp2p", "trio", "rich", "quinkgl_cli", "quinkgl_transport_libp2p", "safetensors")


def loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def test_import_quinkgl_is_light():
    modules = loaded_after("import quinkgl")
    assert not [m for m in HEAVY if m in modules]
    assert "pluggy" not in modules and "cattrs" not in modules


def test_compute_arch_hash_import_does_not_pull_the_cli_or_torch():
    modules = loaded_after("from quinkgl.manifest import compute_arch_hash")
    assert not [m for m in HEAVY if m in modules]


def test_cli_help_does_not_import_torch():
    modules = loaded_after("from quinkgl_cli.main import cli")
    assert "torch" not in modules and "libp2p" not in modules


def test_manifest_layer_does_not_load_the_plugin_registry():
    modules = loaded_after("import quinkgl.manifest.codec, quinkgl.manifest.signing, quinkgl.manifest.peers")
    assert not [m for m in modules if m.startswith(("quinkgl.plugins", "quinkgl.authoring", "pluggy"))]
