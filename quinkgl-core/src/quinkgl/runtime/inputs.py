"""What a peer starts from: a trusted manifest and a model/data source (peer script or standard dataset)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from quinkgl.errors import UsageError
from quinkgl.manifest.codec import load_manifest
from quinkgl.trust import TofuStore, TrustDecision, evaluate_trust


@attrs.frozen
class PeerInputs:
    """A manifest that passed the trust policy, the decision (with warnings), and the hook source."""

    manifest: Any
    trust: TrustDecision
    source: Any  # ScriptPlugin or StandardPlugin


def load_inputs(
    manifest_path: str,
    *,
    script: str | None = None,
    data: str | None = None,
    trust_policy: str = "tofu",
    trusted_keys: Iterable[str] = (),
    tofu_store: TofuStore | None = None,
) -> PeerInputs:
    """Load the manifest, apply the trust policy, then load the peer script (Mode B) or dataset (Mode A).

    Trust is checked before the script is imported: an untrusted manifest never runs user code."""
    if (script is None) == (data is None):
        raise UsageError("give exactly one of --script PEER_SCRIPT (Mode B) or --data DATASET (Mode A)")
    manifest = load_manifest(manifest_path)
    decision = evaluate_trust(manifest, trust_policy, trusted_keys=trusted_keys, tofu_store=tofu_store)
    if script is not None:
        from quinkgl.script import ScriptPlugin

        source: Any = ScriptPlugin.from_file(script)
    else:
        from quinkgl.standard import StandardPlugin

        source = StandardPlugin(data or "", manifest)
    return PeerInputs(manifest, decision, source)
