"""Signing manifests and checking their signatures (Ed25519 over the canonical bytes)."""

from __future__ import annotations

import enum

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from quinkgl import keys
from quinkgl.manifest.codec import canonical_bytes
from quinkgl.manifest.model import Manifest


class SignatureStatus(enum.Enum):
    """What a manifest's signature says about it."""

    VALID = "valid"
    INVALID = "invalid"
    UNSIGNED = "unsigned"


def sign_manifest(manifest: Manifest, key: Ed25519PrivateKey) -> Manifest:
    """Return ``manifest`` with ``creator_pubkey`` set to ``key``'s public key and a fresh signature."""
    unsigned = attrs.evolve(manifest, creator_pubkey=keys.public_key_text(key), signature=None)
    return attrs.evolve(unsigned, signature=keys.sign(key, canonical_bytes(unsigned)))


def signature_status(manifest: Manifest) -> SignatureStatus:
    """VALID when the signature verifies under ``creator_pubkey``; UNSIGNED when both are absent."""
    if manifest.signature is None and manifest.creator_pubkey is None:
        return SignatureStatus.UNSIGNED
    if manifest.signature is None or manifest.creator_pubkey is None:
        return SignatureStatus.INVALID  # half a signature is a stripped or forged one
    ok = keys.verify(manifest.creator_pubkey, manifest.signature, canonical_bytes(manifest))
    return SignatureStatus.VALID if ok else SignatureStatus.INVALID
