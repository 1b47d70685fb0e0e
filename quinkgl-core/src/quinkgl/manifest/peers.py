"""Peer addresses: the one grammar for ``host:port``, ``host:port/p2p/<peer id>`` and libp2p multiaddrs.

Core owns it; the manifest's ``bootstrap_peers``, ``quinkgl run --bootstrap-peer`` and the libp2p transport
(bootstrap, announce addresses, peer exchange) all parse with :func:`parse_peer_address`. Accepted forms::

    127.0.0.1:4001            [::1]:4001            peer.example.org:4001
    127.0.0.1:4001/p2p/12D3KooW...
    /ip4/127.0.0.1/tcp/4001   /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...
    /ip6/::1/tcp/4001/...     /dns4/peer.example.org/tcp/4001/...   (also /dns, /dns6)

Rules: ASCII only and no whitespace anywhere (an address with a stray newline is an error, not silently
trimmed); port 1-65535; IPv6 in ``host:port`` form must be bracketed; a host name is a valid DNS name; a peer ID
is base58btc that decodes to a libp2p multihash (identity of at most 42 bytes, or sha2-256) — checked here
without importing libp2p.
"""

from __future__ import annotations

import ipaddress
import re

import attrs

MAX_ADDRESS_LENGTH = 512
_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {char: index for index, char in enumerate(_BASE58_ALPHABET)}
_MULTIHASH_IDENTITY = 0x00
_MULTIHASH_SHA2_256 = 0x12
_MAX_INLINE_KEY = 42  # libp2p peer ID spec: keys of at most 42 bytes are inlined with the identity hash
_HOST_RE = re.compile(
    r"^(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)
_PROTOCOLS = ("ip4", "ip6", "dns", "dns4", "dns6")


@attrs.frozen
class PeerAddress:
    """A parsed peer address; ``peer_id`` is None when only ``host:port`` was given.

    ``host`` is an IP address as :mod:`ipaddress` writes it, or a DNS name; ``protocol`` is the multiaddr
    protocol (``ip4``, ``ip6``, ``dns``, ``dns4`` or ``dns6``; ``dns`` for a name given as ``host:port``).
    """

    host: str
    port: int
    peer_id: str | None = None
    protocol: str = attrs.field(default="")

    def __attrs_post_init__(self) -> None:
        if not self.protocol:
            object.__setattr__(self, "protocol", _protocol_of(self.host))

    @property
    def is_name(self) -> bool:
        """True when ``host`` is a DNS name that must be resolved before dialling."""
        return self.protocol.startswith("dns")

    @property
    def multiaddr(self) -> str:
        """The libp2p multiaddr for this address (without ``/p2p`` when the peer ID is unknown)."""
        text = f"/{self.protocol}/{self.host}/tcp/{self.port}"
        return f"{text}/p2p/{self.peer_id}" if self.peer_id else text


def _protocol_of(host: str) -> str:
    try:
        return "ip6" if ipaddress.ip_address(host).version == 6 else "ip4"
    except ValueError:
        return "dns"


def base58_decode(text: str) -> bytes:
    """Decode base58btc (the Bitcoin alphabet); ValueError for any other character."""
    number = 0
    for char in text:
        digit = _BASE58_INDEX.get(char)
        if digit is None:
            raise ValueError(f"{char!r} is not a base58 character")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    leading_zeros = len(text) - len(text.lstrip("1"))
    return b"\x00" * leading_zeros + body


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    for index in range(offset, min(len(data), offset + 9)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    raise ValueError("truncated varint")


def check_peer_id(text: str) -> str:
    """Return ``text`` if it is a libp2p peer ID (base58btc multihash), else raise ValueError saying why."""
    if not 2 <= len(text) <= 128:
        raise ValueError(f"not a valid libp2p peer ID: {text!r} (expected a base58 multihash such as 12D3KooW…)")
    try:
        data = base58_decode(text)
        code, offset = _read_varint(data, 0)
        length, offset = _read_varint(data, offset)
    except ValueError:
        raise ValueError(f"not a valid libp2p peer ID: {text!r} (expected a base58 multihash)") from None
    if len(data) - offset != length:
        raise ValueError(f"not a valid libp2p peer ID: {text!r} (does not decode as a multihash)")
    if code == _MULTIHASH_IDENTITY and 0 < length <= _MAX_INLINE_KEY:
        return text
    if code == _MULTIHASH_SHA2_256 and length == 32:
        return text
    raise ValueError(f"not a valid libp2p peer ID: {text!r} (multihash is neither identity nor sha2-256)")


def _check_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        if not _HOST_RE.match(host):
            raise ValueError(f"not a valid host name or IP address: {host!r}") from None
    return host


def _check_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port must be 1-65535; got {text!r}")
    return int(text)


def _parse_multiaddr(text: str) -> PeerAddress:
    parts = text[1:].split("/")
    if len(parts) not in (4, 6) or parts[0] not in _PROTOCOLS or parts[2] != "tcp":
        raise ValueError(f"expected /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>[/p2p/<peer id>]; got {text!r}")
    protocol, host, _, port = parts[:4]
    peer_id = None
    if len(parts) == 6:
        if parts[4] != "p2p":
            raise ValueError(f"expected /p2p/<peer id> after the port; got {text!r}")
        peer_id = check_peer_id(parts[5])
    if protocol in ("ip4", "ip6"):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address") from None
        if ip.version != int(protocol[-1]):
            raise ValueError(f"{host!r} is not an {protocol} address")
        return PeerAddress(str(ip), _check_port(port), peer_id, protocol)
    if not _HOST_RE.match(host):
        raise ValueError(f"not a valid host name: {host!r}")
    return PeerAddress(host, _check_port(port), peer_id, protocol)


def parse_peer_address(text: str) -> PeerAddress:
    """Parse a peer address, raising ValueError with the reason when it is not one (see the module docstring)."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"not a peer address: {text!r}")
    if len(text) > MAX_ADDRESS_LENGTH:
        raise ValueError(f"peer address of {len(text)} characters (limit {MAX_ADDRESS_LENGTH})")
    if not text.isascii() or any(char.isspace() or not char.isprintable() for char in text):
        raise ValueError(f"peer address {text!r} contains whitespace or non-ASCII characters")
    if text.startswith("/"):
        return _parse_multiaddr(text)
    address, sep, peer_part = text.partition("/p2p/")
    peer_id = check_peer_id(peer_part) if sep else None
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        if not sep or _protocol_of(host) != "ip6":
            raise ValueError(f"expected [ipv6]:port; got {text!r}")
    else:
        host, sep, port = address.rpartition(":")
        if not sep or not host:
            raise ValueError(
                f"expected host:port (e.g. 192.168.1.5:7001), host:port/p2p/<peer id> or a multiaddr; got {text!r}"
            )
        if ":" in host:
            raise ValueError(f"write IPv6 addresses as [addr]:port; got {text!r}")
    return PeerAddress(_check_host(host), _check_port(port), peer_id)
