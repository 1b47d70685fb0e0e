"""The peer's long-lived identity: one Ed25519 key, persisted so the peer ID survives restarts.

The key is stored as an unencrypted PKCS#8 PEM file (the same format ``quinkgl keygen`` writes) with mode
0600 in the transport's ``state_dir``. It is created atomically (``O_EXCL`` on a temporary name, fsync, then
``link``), so two processes starting at once with the same ``state_dir`` end up with the same key, and an
existing key is never overwritten. Without a ``state_dir`` the identity is ephemeral.

This module deliberately does not import libp2p: it returns the raw 32-byte Ed25519 seed, which is the
private key in both ``cryptography`` and py-libp2p.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from quinkgl.errors import KeyFileError
from quinkgl.fsutil import read_regular_file

logger = logging.getLogger(__name__)

IDENTITY_FILENAME = "libp2p-identity.pem"
MAX_IDENTITY_BYTES = 64 * 1024
_MAX_KEY_BYTES = MAX_IDENTITY_BYTES


class IdentityError(KeyFileError):
    """The identity key file exists but cannot be used (exit code ``KEY_ERROR``, like any unusable key file)."""


def _seed_of(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.Raw,
        format=serialization.PrivateFormat.Raw,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _pem_of(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def identity_path(state_dir: str | os.PathLike[str]) -> Path:
    """Where the identity key of a peer whose state lives in ``state_dir`` is kept."""
    return Path(state_dir) / IDENTITY_FILENAME


def read_identity(path: Path) -> bytes:
    """Return the 32-byte Ed25519 seed stored at ``path`` (PKCS#8 PEM)."""
    try:
        data = read_regular_file(path, MAX_IDENTITY_BYTES)  # a FIFO or /dev/zero planted here fails, never hangs
    except OSError as exc:
        raise IdentityError(f"cannot read identity key {path}: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"identity key {path} is not an unencrypted PKCS#8 PEM key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise IdentityError(f"identity key {path} is not an Ed25519 key")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("identity key %s is readable by other users (mode %o); tightening to 0600", path, mode)
        with contextlib.suppress(OSError):  # read-only file systems
            os.chmod(path, 0o600)
    return _seed_of(key)


def _write_new(path: Path, pem: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() fails if the target exists: the first writer wins, nobody is overwritten.
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_create_identity(state_dir: str | os.PathLike[str] | None) -> tuple[bytes, bool]:
    """Return ``(seed, persisted)``.

    With a ``state_dir`` the key is loaded from, or created in, ``state_dir/libp2p-identity.pem``
    (``persisted`` is True). Without one a fresh key is generated and nothing is written.
    """
    if state_dir is None:
        return _seed_of(ed25519.Ed25519PrivateKey.generate()), False
    directory = Path(state_dir)
    path = identity_path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.path.lexists(path):
            return read_identity(path), True
        key = ed25519.Ed25519PrivateKey.generate()
        _write_new(path, _pem_of(key))
    except FileExistsError:
        # Another process created it between our check and our link: use theirs.
        return read_identity(path), True
    except OSError as exc:
        raise IdentityError(f"cannot create identity key {path}: {exc}") from exc
    logger.info("created libp2p identity key %s", path)
    return _seed_of(key), True
