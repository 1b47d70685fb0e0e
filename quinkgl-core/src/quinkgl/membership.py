"""Membership certificates: who may take part in a swarm whose manifest says ``membership: certified``.

A certificate is a small signed JSON document::

    {"format": "quinkgl-membership", "version": 1, "swarm_id": "sha256:…", "peer_id": "12D3KooW…",
     "issued_at": "2026-01-01T00:00:00Z", "expires_at": "2026-12-31T23:59:59Z" | null,
     "creator_pubkey": "ed25519:…", "signature": "ed25519:…"}

The signature is Ed25519 by the manifest's creator over the canonical bytes of every field but ``signature``
(sorted keys, no whitespace, UTF-8), exactly like a manifest's. A certificate names one swarm and one peer ID: a
copy taken from another peer is useless, because peers bind it to the (transport-authenticated) sender. Peers
of a certified swarm carry their certificate in their announcements; the others accept a peer into their view
only with a certificate that passes :func:`check_certificate`, and never exchange models with anyone outside it.

For libp2p the peer ID is derived from the peer's identity key (:func:`peer_id_from_identity_key`), so the
creator can issue a certificate before the peer first starts. No libp2p import is needed for that.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from typing import Any

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from quinkgl import keys
from quinkgl.errors import MembershipError
from quinkgl.fsutil import atomic_write_bytes, read_regular_file
from quinkgl.manifest.times import format_time, parse_time, utc_now

CERT_FORMAT = "quinkgl-membership"
CERT_VERSION = 1
MAX_CERT_BYTES = 4096  # a certificate is about 400 bytes; it travels in every announcement
MEMBERSHIP_OPEN = "open"
MEMBERSHIP_CERTIFIED = "certified"
MEMBERSHIPS = (MEMBERSHIP_OPEN, MEMBERSHIP_CERTIFIED)
_FIELDS = ("format", "version", "swarm_id", "peer_id", "issued_at", "expires_at", "creator_pubkey", "signature")
_SWARM_RE = re.compile(r"sha256:[0-9a-f]{64}")
_PEER_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII: a libp2p base58 ID, or an in-process name
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@attrs.frozen(kw_only=True)
class MembershipCertificate:
    """One peer's admission to one swarm, signed by the swarm's creator."""

    swarm_id: str
    peer_id: str
    issued_at: str
    expires_at: str | None
    creator_pubkey: str
    signature: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the certificate (as written to disk and carried in announcements)."""
        return {"format": CERT_FORMAT, "version": CERT_VERSION, **attrs.asdict(self)}

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers: every field but ``signature``, canonical JSON."""
        doc = self.to_dict()
        doc.pop("signature")
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def expires_at_unix(self) -> float | None:
        """``expires_at`` as a POSIX timestamp (None: never expires)."""
        return None if self.expires_at is None else parse_time(self.expires_at).timestamp()


def issue_certificate(
    key: Ed25519PrivateKey,
    *,
    swarm_id: str,
    peer_id: str,
    expires_at: str | None = None,
    now: dt.datetime | None = None,
) -> MembershipCertificate:
    """A certificate admitting ``peer_id`` to ``swarm_id``, signed with the creator's ``key``."""
    unsigned = parse_certificate(
        {
            "format": CERT_FORMAT,
            "version": CERT_VERSION,
            "swarm_id": swarm_id,
            "peer_id": peer_id,
            "issued_at": format_time(now or utc_now()),
            "expires_at": None if expires_at is None else format_time(_parse_expiry(expires_at)),
            "creator_pubkey": keys.public_key_text(key),
            "signature": "ed25519:" + "0" * 128,
        }
    )
    return attrs.evolve(unsigned, signature=keys.sign(key, unsigned.signed_bytes()))


def _parse_expiry(text: str) -> dt.datetime:
    try:
        return parse_time(text)
    except ValueError as err:
        raise MembershipError(f"expires_at: {err}", "malformed") from None


def parse_certificate(obj: Any) -> MembershipCertificate:
    """Check a decoded certificate's shape (not its signature); raises :class:`MembershipError`."""
    if not isinstance(obj, dict) or obj.get("format") != CERT_FORMAT:
        raise MembershipError("not a QuinkGL membership certificate", "malformed")
    if obj.get("version") != CERT_VERSION or type(obj.get("version")) is not int:
        raise MembershipError(f"membership certificate version {obj.get('version')!r} is not supported", "malformed")
    if set(obj) != set(_FIELDS):
        raise MembershipError(f"membership certificate fields must be exactly {', '.join(_FIELDS)}", "malformed")
    checks = (
        ("swarm_id", _SWARM_RE),
        ("peer_id", _PEER_ID_RE),
        ("creator_pubkey", keys_re(64)),
        ("signature", keys_re(128)),
    )
    for field, pattern in checks:
        value = obj[field]
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise MembershipError(f"membership certificate field {field!r} is malformed", "malformed")
    for field in ("issued_at", "expires_at"):
        value = obj[field]
        if value is None and field == "expires_at":
            continue
        if not isinstance(value, str) or len(value) > 64:
            raise MembershipError(f"membership certificate field {field!r} is malformed", "malformed")
        _parse_expiry(value)
    return MembershipCertificate(**{k: obj[k] for k in _FIELDS if k not in ("format", "version")})


def keys_re(hex_digits: int) -> re.Pattern[str]:
    """``ed25519:`` followed by exactly ``hex_digits`` lowercase hex digits."""
    return re.compile(rf"ed25519:[0-9a-f]{{{hex_digits}}}")


def check_certificate(
    cert: MembershipCertificate,
    *,
    swarm_id: str,
    creator_pubkey: str | None,
    peer_id: str,
    now: dt.datetime | None = None,
) -> None:
    """Raise :class:`MembershipError` unless ``cert`` admits ``peer_id`` to ``swarm_id`` now, signed by the creator."""
    if creator_pubkey is None:
        raise MembershipError(
            "a certified swarm needs a signed manifest (its creator issues the certificates)", "wrong_creator"
        )
    if cert.creator_pubkey != creator_pubkey:
        raise MembershipError("the membership certificate was not issued by the manifest's creator", "wrong_creator")
    if not keys.verify(creator_pubkey, cert.signature, cert.signed_bytes()):
        raise MembershipError("the membership certificate's signature does not verify", "bad_signature")
    if cert.swarm_id != swarm_id:
        raise MembershipError(f"the membership certificate is for swarm {cert.swarm_id}, not {swarm_id}", "other_swarm")
    if cert.peer_id != peer_id:
        raise MembershipError(f"the membership certificate is for peer {cert.peer_id}, not {peer_id}", "other_peer")
    if cert.expires_at is not None and (now or utc_now()) >= parse_time(cert.expires_at):
        raise MembershipError(f"the membership certificate expired at {cert.expires_at}", "expired")


def load_certificate(path: str | os.PathLike[str]) -> MembershipCertificate:
    """Read a certificate file (a regular file of at most 4 KiB); raises :class:`MembershipError`."""
    try:
        raw = read_regular_file(path, MAX_CERT_BYTES)
    except OSError as err:
        raise MembershipError(
            f"cannot read membership certificate {os.fspath(path)}: {err.strerror}", "missing"
        ) from None
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MembershipError(f"{os.fspath(path)} is not a membership certificate (not JSON)", "malformed") from None
    try:
        return parse_certificate(obj)
    except MembershipError as err:
        raise MembershipError(f"{os.fspath(path)}: {err}", err.reason) from None


def write_certificate(cert: MembershipCertificate, path: str | os.PathLike[str]) -> None:
    """Write a certificate file (atomically; it is public, like the manifest)."""
    data = json.dumps(cert.to_dict(), sort_keys=True, indent=2).encode() + b"\n"
    atomic_write_bytes(os.fspath(path), data, mode=0o644)


# --------------------------------------------------------------------------------------------- libp2p peer IDs


def peer_id_from_public_key(raw: bytes) -> str:
    """The libp2p peer ID (base58btc, ``12D3KooW…``) of a 32-byte Ed25519 public key.

    libp2p encodes the key as a protobuf ``PublicKey{Type: Ed25519 (1), Data: raw}`` and, since that is at most
    42 bytes, uses the identity multihash of it (code 0x00) as the peer ID."""
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key has 32 bytes")
    protobuf = b"\x08\x01\x12\x20" + raw
    return _base58(b"\x00" + bytes([len(protobuf)]) + protobuf)


def peer_id_from_identity_key(path: str | os.PathLike[str]) -> str:
    """The libp2p peer ID of the identity key file a peer's transport persists (PKCS#8 PEM Ed25519)."""
    key = keys.load_private_key(os.fspath(path))
    return peer_id_from_public_key(
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def check_libp2p_peer_id(text: str) -> str:
    """``text`` if it is a libp2p peer ID (base58btc of an identity or sha2-256 multihash); ValueError otherwise."""
    if not isinstance(text, str) or not 20 <= len(text) <= 128 or any(c not in _BASE58 for c in text):
        raise ValueError(f"not a libp2p peer ID (base58, such as 12D3KooW…): {text!r}")
    number = 0
    for char in text:
        number = number * 58 + _BASE58.index(char)
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    data = b"\0" * (len(text) - len(text.lstrip("1"))) + body
    identity = len(data) >= 2 and data[0] == 0x00 and data[1] == len(data) - 2
    sha256 = len(data) == 34 and data[0] == 0x12 and data[1] == 0x20
    if not (identity or sha256):
        raise ValueError(f"not a libp2p peer ID (its bytes are not a multihash): {text!r}")
    return text


def _base58(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = _BASE58[digit] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


# --------------------------------------------------------------------------------------------- the gate


class MembershipGate:
    """What a peer of a certified swarm checks on every announcement: the sender's certificate.

    Verified certificates are remembered per sender (by signature), so a peer announcing every second costs one
    signature check, not one per announcement."""

    def __init__(self, swarm_id: str, creator_pubkey: str | None):
        self.swarm_id = swarm_id
        self.creator_pubkey = creator_pubkey

    def admit(self, peer_id: str, cert_doc: Any, known_signature: str | None = None) -> MembershipCertificate:
        """The sender's valid certificate; raises :class:`MembershipError` (``reason`` says why) otherwise."""
        if cert_doc is None:
            raise MembershipError("no membership certificate", "missing")
        cert = parse_certificate(cert_doc)
        if known_signature is not None and cert.signature == known_signature and cert.peer_id == peer_id:
            if cert.expires_at is not None and utc_now() >= parse_time(cert.expires_at):
                raise MembershipError(f"the membership certificate expired at {cert.expires_at}", "expired")
            return cert
        check_certificate(cert, swarm_id=self.swarm_id, creator_pubkey=self.creator_pubkey, peer_id=peer_id)
        return cert


def check_own_certificate(manifest: Any, cert: MembershipCertificate | None, peer_id: str, source: str = "") -> None:
    """Raise :class:`MembershipError` unless ``cert`` lets this peer (``peer_id``) take part in ``manifest``'s swarm
    (nothing to check for an open swarm)."""
    if getattr(manifest, "membership", MEMBERSHIP_OPEN) != MEMBERSHIP_CERTIFIED:
        return
    if cert is None:
        own_certificate(manifest, None, peer_id)
        return
    try:
        check_certificate(cert, swarm_id=manifest.swarm_id, creator_pubkey=manifest.creator_pubkey, peer_id=peer_id)
    except MembershipError as err:
        raise MembershipError(f"{source + ': ' if source else ''}{err}", err.reason) from None


def own_certificate(manifest: Any, cert_path: str | None, peer_id: str) -> MembershipCertificate | None:
    """The peer's own certificate for a certified swarm (checked against its peer ID); None for an open swarm.

    Raises :class:`MembershipError` when the swarm is certified and the certificate is missing or not valid for
    this peer, so a peer that could not take part fails at start with the reason."""
    if getattr(manifest, "membership", MEMBERSHIP_OPEN) != MEMBERSHIP_CERTIFIED:
        return None
    if not cert_path:
        raise MembershipError(
            f"swarm {manifest.name!r} admits only certified members: pass --membership-cert FILE (the manifest's "
            f"creator issues one with `quinkgl admit --peer-id {peer_id} …`)",
            "missing",
        )
    cert = load_certificate(cert_path)
    check_own_certificate(manifest, cert, peer_id, cert_path)
    return cert
