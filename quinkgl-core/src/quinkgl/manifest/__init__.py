"""Manifests: the signed training protocol a swarm shares.

Public API: :class:`Manifest`, :func:`load_manifest`, :func:`parse_manifest`, :func:`write_manifest`,
:func:`sign_manifest`, :func:`signature_status` and :func:`compute_arch_hash`. Creating a manifest against the
plugin registry is :func:`quinkgl.authoring.create_manifest` (a layer above this package and the registry).
"""

from __future__ import annotations

from typing import Any

from quinkgl.archhash import compute_arch_hash
from quinkgl.manifest.model import Manifest

_LAZY = {
    "load_manifest": "quinkgl.manifest.codec",
    "parse_manifest": "quinkgl.manifest.codec",
    "write_manifest": "quinkgl.manifest.codec",
    "dumps_manifest": "quinkgl.manifest.codec",
    "manifest_to_dict": "quinkgl.manifest.codec",
    "canonical_bytes": "quinkgl.manifest.codec",
    "sign_manifest": "quinkgl.manifest.signing",
    "signature_status": "quinkgl.manifest.signing",
    "SignatureStatus": "quinkgl.manifest.signing",
}

__all__ = ["Manifest", "compute_arch_hash", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'quinkgl.manifest' has no attribute {name!r}")
