"""Creating manifests from what a user asked for (the ``quinkgl manifest create`` command's core).

This sits above both :mod:`quinkgl.manifest` (data, codec, signing) and :mod:`quinkgl.plugins` (the registry):
creating a manifest looks component names up in the registry and records the plugin distributions they need,
while the manifest package itself imports nothing from the plugin layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from quinkgl.manifest.model import SCHEMA_VERSION, Manifest
from quinkgl.manifest.signing import sign_manifest
from quinkgl.manifest.times import format_time, utc_now
from quinkgl.plugins.manager import Registry
from quinkgl.plugins.requirements import MANIFEST_COMPONENTS, canonical_component_name, requirements_for


@attrs.frozen(kw_only=True)
class ManifestOptions:
    """Everything a new manifest is made of; component names may be in any case."""

    name: str
    task_type: str
    input_shape: Sequence[int]
    output_shape: Sequence[int]
    label_type: str
    framework: str
    arch_hash: str
    aggregation: str = "FedAvg"
    topology: str = "RandomTopology"
    transport: str = "libp2p"
    data_policy: str = "default"
    params: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)  # manifest field -> params
    round_limit: int | None = None
    byzantine_f: int = 0
    expires_at: str | None = None
    bootstrap_peers: Sequence[str] = ()
    membership: str = "open"


def create_manifest(options: ManifestOptions, registry: Registry, key: Ed25519PrivateKey | None = None) -> Manifest:
    """Build (and with ``key``, sign) a manifest; component params are validated when the plugin is installed."""
    from quinkgl.manifest.codec import structure_manifest, structure_params

    components: dict[str, dict[str, Any]] = {}
    for field, kind in MANIFEST_COMPONENTS.items():
        name = canonical_component_name(registry, kind, getattr(options, field))
        params = dict(options.params.get(field, {}))
        found = registry.find(kind, name)
        if found is not None:
            structure_params(params, found.spec.params, f"--{field.replace('_', '-')}-param")
        components[field] = {"name": name, "params": params}
    doc = {
        "schema_version": SCHEMA_VERSION,
        "name": options.name,
        "task": {
            "type": options.task_type,
            "input_shape": list(options.input_shape),
            "output_shape": list(options.output_shape),
            "label_type": options.label_type,
        },
        "model": {"framework": options.framework, "arch_hash": options.arch_hash},
        "plugins": [
            {"distribution": req.distribution, "specifier": req.specifier, "provides": list(req.provides)}
            for req in requirements_for(registry, [(k, components[f]["name"]) for f, k in MANIFEST_COMPONENTS.items()])
        ],
        "round_limit": options.round_limit,
        "byzantine_f": options.byzantine_f,
        "expires_at": options.expires_at,
        "bootstrap_peers": list(options.bootstrap_peers),
        "created_at": format_time(utc_now()),
        **({"membership": options.membership} if options.membership != "open" else {}),
        **components,
    }
    # Validated exactly like a manifest read from disk, so errors carry the same field paths.
    manifest = structure_manifest(doc)
    return sign_manifest(manifest, key) if key is not None else manifest
