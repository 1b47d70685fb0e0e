"""Trust policies for manifests: ``open``, ``tofu`` and ``pinned``.

* ``open``   — accept; an unsigned or invalid signature is only a warning.
* ``tofu``   — the signature must verify; the first creator key seen for a manifest *name* is remembered in a
  per-user file and a later manifest of that name with another key (or unsigned) is refused.
* ``pinned`` — the signature must verify and the creator must be one of the ``trusted_keys``.

The TOFU cache is keyed by manifest name, not swarm ID: the swarm ID covers the creator key, so keying by it could
never detect an impostor (the flaw of 0.3.x).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import fcntl
import json
import os
import stat
from collections.abc import Iterable, Iterator

import attrs

from quinkgl import keys, paths
from quinkgl.errors import ExpiredError, SignatureError, TrustError
from quinkgl.fsutil import atomic_write_bytes, read_regular_file
from quinkgl.manifest.model import Manifest
from quinkgl.manifest.signing import SignatureStatus, signature_status
from quinkgl.manifest.times import format_time, is_expired, utc_now


class TrustPolicy(str, enum.Enum):
    """How a peer decides whether to accept a manifest."""

    OPEN = "open"
    TOFU = "tofu"
    PINNED = "pinned"


@attrs.frozen
class TrustDecision:
    """An accepted manifest: the policy applied, what the signature said, and warnings to show."""

    policy: TrustPolicy
    signature: SignatureStatus
    creator: str | None
    warnings: tuple[str, ...] = ()
    first_seen: bool = False


MAX_TOFU_STORE_BYTES = 16 * 1024 * 1024  # ~100,000 manifest names


class TofuStore:
    """The per-user TOFU cache: manifest name → creator key, safe for concurrent peer processes."""

    def __init__(self, path: str | None = None):
        self.path = path or paths.tofu_store_path()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        lock_path = self.path + ".lock"
        try:  # O_NONBLOCK: a FIFO planted as the lock file fails here instead of hanging
            fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise TrustError(f"cannot open the TOFU lock file {lock_path}: {err.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise TrustError(f"TOFU lock file {lock_path} is not a regular file; remove it deliberately")
            fcntl.flock(fd, fcntl.LOCK_EX)  # five peers starting at once must not lose each other's entries
            try:
                yield self._read()
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _read(self) -> dict:
        try:
            data = json.loads(read_regular_file(self.path, MAX_TOFU_STORE_BYTES))
        except FileNotFoundError:
            return {"version": 1, "manifests": {}}
        except (OSError, ValueError, RecursionError) as err:
            # Never reset silently: that would forget every pinned creator.
            raise TrustError(f"TOFU store {self.path} is unreadable ({err}); fix or remove it deliberately") from None
        if not isinstance(data, dict) or not isinstance(data.get("manifests"), dict):
            raise TrustError(f"TOFU store {self.path} is not a QuinkGL TOFU file; fix or remove it deliberately")
        return data

    def _entry(self, data: dict, name: str) -> str | None:
        """The creator key recorded for ``name`` (None if none); a damaged entry is a TrustError, not a guess."""
        entry = data["manifests"].get(name)
        if entry is None:
            return None
        creator = entry.get("creator_pubkey") if isinstance(entry, dict) else None
        if not isinstance(creator, str):
            raise TrustError(
                f"TOFU store {self.path}: the entry for manifest {name!r} is damaged (not an object "
                "with a creator_pubkey); fix or remove it deliberately"
            )
        return creator

    def lookup(self, name: str) -> str | None:
        """The creator key first seen for manifest ``name``, if any."""
        return self._entry(self._read(), name)

    def check_and_remember(self, name: str, creator: str) -> bool:
        """Record ``creator`` for ``name`` on first sight (True); raise TrustError if another key is recorded."""
        with self._locked() as data:
            known = self._entry(data, name)
            if known is not None:
                if known != creator:
                    raise TrustError(
                        f"TOFU conflict: manifest {name!r} was first seen signed by {known}, "
                        f"but this one is signed by {creator}. If the creator really changed keys, remove the "
                        f"entry from {self.path}."
                    )
                return False
            data["manifests"][name] = {"creator_pubkey": creator, "first_seen": format_time(utc_now())}
            atomic_write_bytes(self.path, json.dumps(data, indent=2, sort_keys=True).encode(), mode=0o600)
            return True


def _parse_trusted(trusted_keys: Iterable[str]) -> set[str]:
    result = set()
    for text in trusted_keys:
        try:
            keys.parse_public_key(text)
        except ValueError as err:
            raise TrustError(f"--trusted-pubkey: {err}") from None
        result.add(text.strip())
    return result


def check_not_expired(manifest: Manifest, now: dt.datetime | None = None) -> None:
    """Raise :class:`ExpiredError` if the manifest's ``expires_at`` has passed."""
    if is_expired(manifest.expires_at, now):
        raise ExpiredError(f"manifest {manifest.name!r} expired at {manifest.expires_at}")


def check_signature(manifest: Manifest) -> SignatureStatus:
    """Raise :class:`SignatureError` for a signature that does not verify; return the status otherwise."""
    status = signature_status(manifest)
    if status is SignatureStatus.INVALID:
        raise SignatureError(
            f"signature check failed for manifest {manifest.name!r}: the manifest was modified after signing, "
            "or the signature/creator_pubkey fields were replaced"
        )
    return status


def check_pinned(manifest: Manifest, status: SignatureStatus, trusted: set[str]) -> None:
    """Raise :class:`TrustError` unless the manifest is signed by one of ``trusted``."""
    if status is SignatureStatus.UNSIGNED:
        raise TrustError(f"manifest {manifest.name!r} is unsigned, but a trusted creator key is required")
    if manifest.creator_pubkey not in trusted:
        raise TrustError(
            f"manifest {manifest.name!r} is signed by {manifest.creator_pubkey}, which is not a trusted key "
            f"(trusted: {', '.join(sorted(trusted))})"
        )


def evaluate_trust(
    manifest: Manifest,
    policy: TrustPolicy | str,
    *,
    trusted_keys: Iterable[str] = (),
    tofu_store: TofuStore | None = None,
    now: dt.datetime | None = None,
) -> TrustDecision:
    """Apply ``policy`` (and expiry) to ``manifest``: return the decision or raise the matching error."""
    policy = TrustPolicy(policy)
    trusted = _parse_trusted(trusted_keys)
    check_not_expired(manifest, now)
    warnings: list[str] = []
    if policy is TrustPolicy.OPEN:
        status = signature_status(manifest)
        if status is SignatureStatus.INVALID:
            warnings.append("signature INVALID (accepted because --trust-policy open)")
        elif status is SignatureStatus.UNSIGNED:
            warnings.append("manifest is unsigned (accepted because --trust-policy open)")
        if trusted:
            check_pinned(manifest, check_signature(manifest), trusted)
        return TrustDecision(policy, status, manifest.creator_pubkey, tuple(warnings))

    status = check_signature(manifest)
    if policy is TrustPolicy.PINNED:
        if not trusted:
            raise TrustError("--trust-policy pinned needs at least one --trusted-pubkey")
        check_pinned(manifest, status, trusted)
        return TrustDecision(policy, status, manifest.creator_pubkey)

    store = tofu_store or TofuStore()
    if trusted:
        check_pinned(manifest, status, trusted)
    if status is SignatureStatus.UNSIGNED:
        known = store.lookup(manifest.name)
        if known is not None:
            raise TrustError(
                f"TOFU conflict: manifest {manifest.name!r} was first seen signed by {known}, but this one is unsigned"
            )
        warnings.append("manifest is unsigned: TOFU has no creator key to remember (sign it with --sign-with)")
        return TrustDecision(policy, status, None, tuple(warnings))
    assert manifest.creator_pubkey is not None
    first = store.check_and_remember(manifest.name, manifest.creator_pubkey)
    return TrustDecision(policy, status, manifest.creator_pubkey, first_seen=first)


def verify_manifest(
    manifest: Manifest, trusted_keys: Iterable[str] = (), now: dt.datetime | None = None
) -> SignatureStatus:
    """The checks of ``quinkgl manifest verify``: the signature verifies, the creator is trusted (when keys are
    given) and the manifest has not expired. Raises the matching error; returns the signature status."""
    status = check_signature(manifest)
    trusted = _parse_trusted(trusted_keys)
    if trusted:
        check_pinned(manifest, status, trusted)
    check_not_expired(manifest, now)
    return status
