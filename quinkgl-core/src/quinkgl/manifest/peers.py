"""Bootstrap peer addresses: ``host:port``, ``host:port/p2p/<peer id>`` or a libp2p multiaddr."""

from __future__ import annotations

import ipaddress
import re
from typing import Optional

import attrs

_PEER_ID_RE = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{20,128}\Z")  # base58btc
_HOST_RE = re.compile(
    r"^(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)


@attrs.frozen
class PeerAddress:
    """A parsed bootstrap address; ``peer_id`` is None when only ``host:port`` was given."""

    host: str
    port: int
    peer_id: Optional[str] = None

    @property
    def multiaddr(self) -> str:
        """The libp2p multiaddr for this address (without ``/p2p`` when the peer ID is unknown)."""
        try:
            proto = "ip6" if ipaddress.ip_address(self.host).version == 6 else "ip4"
        except ValueError:
            proto = "dns"
        text = f"/{proto}/{self.host}/tcp/{self.port}"
        return f"{text}/p2p/{self.peer_id}" if self.peer_id else text


def _check_host(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_RE.match(host):
            raise ValueError(f"not a valid host name or IP address: {host!r}") from None
    return host


def _check_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port must be 1-65535; got {text!r}")
    return int(text)


def _check_peer_id(text: str) -> str:
    if not _PEER_ID_RE.match(text):
        raise ValueError(f"not a valid libp2p peer ID: {text!r}")
    return text


def _parse_multiaddr(text: str) -> PeerAddress:
    parts = text.strip("/").split("/")
    if len(parts) not in (4, 6) or parts[0] not in ("ip4", "ip6", "dns", "dns4", "dns6") or parts[2] != "tcp":
        raise ValueError(f"expected /ip4|ip6|dns/<host>/tcp/<port>[/p2p/<peer id>]; got {text!r}")
    if parts[0] == "ip4" and ipaddress.ip_address(parts[1]).version != 4:
        raise ValueError(f"not an IPv4 address: {parts[1]!r}")
    peer_id = None
    if len(parts) == 6:
        if parts[4] != "p2p":
            raise ValueError(f"expected /p2p/<peer id> after the port; got {text!r}")
        peer_id = _check_peer_id(parts[5])
    return PeerAddress(_check_host(parts[1]), _check_port(parts[3]), peer_id)


def parse_peer_address(text: str) -> PeerAddress:
    """Parse a bootstrap peer address, raising ValueError with the reason when it is not one."""
    if not isinstance(text, str) or not text or len(text) > 512:
        raise ValueError(f"not a peer address: {text!r}")
    if text.startswith("/"):
        try:
            return _parse_multiaddr(text)
        except ValueError as err:
            raise ValueError(str(err)) from None
    address, _, peer_part = text.partition("/p2p/")
    peer_id = _check_peer_id(peer_part) if peer_part else None
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [ipv6]:port; got {text!r}")
    else:
        host, sep, port = address.rpartition(":")
        if not sep:
            raise ValueError(f"expected host:port (e.g. 192.168.1.5:7001); got {text!r}")
    return PeerAddress(_check_host(host), _check_port(port), peer_id)
