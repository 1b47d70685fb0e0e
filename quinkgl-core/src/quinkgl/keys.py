"""Ed25519 creator keys: generate, store (PKCS#8 PEM, mode 0600), load, and the ``ed25519:<hex>`` text form."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from quinkgl.errors import KeyFileError
from quinkgl.fsutil import atomic_write_bytes, read_regular_file

PUBKEY_PREFIX = "ed25519:"
MAX_KEY_FILE_BYTES = 64 * 1024  # a PEM Ed25519 key is about 120 bytes


def generate_private_key() -> Ed25519PrivateKey:
    """A new random Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def write_private_key(key: Ed25519PrivateKey, path: str, *, overwrite: bool = False) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM with mode 0600; refuse to replace a file unless ``overwrite``."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        atomic_write_bytes(path, pem, mode=0o600, overwrite=overwrite)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key (pass --force to replace it)") from None
    except OSError as err:
        raise KeyFileError(f"cannot write {path}: {err.strerror}") from None


def load_private_key(path: str) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from a PEM file, with a clear error for anything else."""
    try:
        data = read_regular_file(path, MAX_KEY_FILE_BYTES)
    except OSError as err:
        raise KeyFileError(f"cannot read key file {path}: {err.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"{path} is encrypted; QuinkGL needs an unencrypted PKCS#8 key") from None
    except Exception:  # cryptography raises ValueError or UnsupportedAlgorithm for non-keys
        raise KeyFileError(f"{path} is not a PEM private key (create one with `quinkgl keygen`)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """``ed25519:<64 hex>`` for a key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return PUBKEY_PREFIX + public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """Parse ``ed25519:<64 hex>``; raises ValueError with the reason otherwise."""
    body = text.strip()
    if not body.startswith(PUBKEY_PREFIX):
        raise ValueError(f"public key must start with '{PUBKEY_PREFIX}': {text!r}")
    try:
        raw = bytes.fromhex(body[len(PUBKEY_PREFIX) :])
    except ValueError:
        raise ValueError(f"public key is not hex: {text!r}") from None
    if len(raw) != 32:
        raise ValueError(f"public key must be 32 bytes (64 hex digits), got {len(raw)}: {text!r}")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    """``ed25519:<128 hex>`` signature of ``data``."""
    return PUBKEY_PREFIX + key.sign(data).hex()


def verify(pubkey_text: str, signature_text: str, data: bytes) -> bool:
    """Whether ``signature_text`` is a valid signature of ``data`` by ``pubkey_text``."""
    try:
        public = parse_public_key(pubkey_text)
        raw = bytes.fromhex(signature_text.removeprefix(PUBKEY_PREFIX))
        public.verify(raw, data)
    except (ValueError, InvalidSignature):
        return False
    return True
