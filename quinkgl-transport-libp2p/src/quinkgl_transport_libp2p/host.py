"""Construction of the libp2p host with the security choices this transport relies on.

py-libp2p 0.8.1's default host also accepts **plaintext** and secio sessions; here the security options are
Noise only, and the muxer is Yamux only. ``ConnectionConfig(max_connections_per_peer=1)`` avoids the 250 ms
happy-eyeballs wait on every connect. Identify's observed-address discovery is off, and the announced
addresses come from an address factory that replaces a wildcard listen address (``0.0.0.0`` / ``::``) by the
machine's concrete non-loopback interface addresses (loopback only when there is no other), with the operator's
``announce_addrs`` first. So neither ``0.0.0.0`` nor ``127.0.0.1`` reaches a peer on another machine, through
peer exchange or identify.

Listener traps handled here: libp2p's TCP listener sets ``SO_REUSEPORT``, so a second process bound to the
same port would silently *share* it, and ``host.run()`` does not raise when binding fails. So before start a
fixed port is probed with a plain (non-``SO_REUSEPORT``) bind, which fails if anyone is listening there, and
after start the bound addresses are checked.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Sequence

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.utils.address_validation import get_available_interfaces

from quinkgl.transport import TransportError

logger = logging.getLogger(__name__)


class PortInUseError(TransportError):
    """The configured fixed port is already bound by another process (or another peer in this one)."""


class _RateLimitedForwarder(logging.Handler):
    """Passes records of a logger tree on to the root logger's handlers, through a rate-limiting filter.

    (A filter on a logger applies only to records logged on that very logger, not to its children's.)
    """

    def __init__(self, tree: str) -> None:
        super().__init__()
        self._tree = logging.getLogger(tree)

    def emit(self, record: logging.LogRecord) -> None:
        # Child loggers of libp2p may carry their own levels: the level set on the tree's root (the CLI sets
        # "libp2p" to CRITICAL unless -v) still decides what is shown.
        if record.levelno >= self._tree.getEffectiveLevel():
            logging.getLogger().callHandlers(record)


def configure_libp2p_logging(repeat_filter: logging.Filter | None = None) -> None:
    """py-libp2p sets ``propagate=False`` on its logger; let its records reach the application's handlers.

    With ``repeat_filter``, records of libp2p and of this package reach them through that filter instead, so
    repeated lines are rate-limited and strangers cannot fill the log (libp2p logs ERROR lines for some of
    their connections). Installed once per process.
    """
    lib_logger = logging.getLogger("libp2p")
    if repeat_filter is None:
        if not lib_logger.handlers:  # LIBP2P_DEBUG installs its own handlers: leave that setup alone
            lib_logger.propagate = True
        return
    for name in ("libp2p", "quinkgl_transport_libp2p"):
        target = logging.getLogger(name)
        if any(isinstance(h, _RateLimitedForwarder) for h in target.handlers):
            continue
        if name == "libp2p" and target.handlers:  # LIBP2P_DEBUG's own setup
            continue
        forwarder = _RateLimitedForwarder(name)
        forwarder.addFilter(repeat_filter)
        target.addHandler(forwarder)
        target.propagate = False


def key_pair_from_seed(seed: bytes) -> KeyPair:
    """The libp2p Ed25519 key pair of a 32-byte seed."""
    return create_new_key_pair(seed)


def ip_multiaddr(host: str, port: int) -> multiaddr.Multiaddr:
    """``/ip4/<host>/tcp/<port>`` or ``/ip6/...`` for an IP literal."""
    ip = ipaddress.ip_address(host.strip("[]"))
    proto = "ip6" if ip.version == 6 else "ip4"
    return multiaddr.Multiaddr(f"/{proto}/{ip}/tcp/{port}")


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`PortInUseError` if something listens on ``host:port`` (``port`` 0 is always free).

    The probe binds without ``SO_REUSEPORT`` (with ``SO_REUSEADDR`` so TIME_WAIT leftovers do not count), which
    fails while any socket, including a ``SO_REUSEPORT`` libp2p listener, is listening on that address.
    """
    if port == 0:
        return
    ip = ipaddress.ip_address(host.strip("[]"))
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind((str(ip), port))
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise PortInUseError(
                f"cannot listen on {host}:{port}: the port is already in use "
                f"({exc.strerror}); another QuinkGL peer may be running there. Choose another --port or use 0."
            ) from exc
        raise TransportError(f"cannot listen on {host}:{port}: {exc}") from exc
    finally:
        probe.close()


def _is_wildcard(addr: multiaddr.Multiaddr) -> bool:
    for proto, value in addr.items():
        if proto.name in ("ip4", "ip6"):
            return value in ("0.0.0.0", "::")
    return False


def _tcp_port(addr: multiaddr.Multiaddr) -> int | None:
    try:
        value = addr.value_for_protocol("tcp")
    except Exception:
        return None
    return int(value) if value is not None else None


def _is_loopback(addr: multiaddr.Multiaddr) -> bool:
    for proto, value in addr.items():
        if proto.name in ("ip4", "ip6"):
            try:
                return ipaddress.ip_address(value).is_loopback
            except ValueError:
                return False
    return False


def concrete_addrs(wildcard: multiaddr.Multiaddr, port: int) -> list[multiaddr.Multiaddr]:
    """The addresses to announce for a wildcard listener: this machine's interface addresses of its IP version.

    Loopback is announced only when the machine has no other interface address: peers on other machines
    would dial *themselves* at ``127.0.0.1``, and same-machine peers reach the interface addresses as well (the
    peer registry records the listen addresses separately).
    """
    is_v6 = any(p.name == "ip6" for p in wildcard.protocols())
    same_family = [a for a in get_available_interfaces(port) if any(p.name == "ip6" for p in a.protocols()) == is_v6]
    outside = [a for a in same_family if not _is_loopback(a) and not _is_wildcard(a)]
    if outside:
        return outside
    return [multiaddr.Multiaddr(f"/ip6/::1/tcp/{port}" if is_v6 else f"/ip4/127.0.0.1/tcp/{port}")]


def make_addrs_factory(announce: Sequence[multiaddr.Multiaddr]):
    """Address factory: operator-given addresses first, then concrete addresses for every wildcard listener."""
    announce = list(announce)

    def factory(candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        out: list[multiaddr.Multiaddr] = list(announce)
        for addr in candidates:
            if _is_wildcard(addr):
                port = _tcp_port(addr)
                if port is None:
                    continue
                out.extend(concrete_addrs(addr, port))
            else:
                out.append(addr)
        seen: set[str] = set()
        unique: list[multiaddr.Multiaddr] = []
        for addr in out:
            if str(addr) not in seen:
                seen.add(str(addr))
                unique.append(addr)
        return unique

    return factory


def build_host(
    key_pair: KeyPair,
    *,
    listen: multiaddr.Multiaddr,
    announce: Sequence[multiaddr.Multiaddr] = (),
    dial_timeout: float = 5.0,
) -> IHost:
    """A Noise-only, Yamux-only host with one connection per peer and no mDNS / UPnP / bootstrap service."""
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    connection_config = ConnectionConfig(
        max_connections_per_peer=1,
        dial_timeout=dial_timeout,
        inbound_upgrade_timeout=dial_timeout,
        outbound_upgrade_timeout=dial_timeout,
        outbound_stream_protocol_negotiation_timeout=dial_timeout,
        inbound_stream_protocol_negotiation_timeout=dial_timeout,
    )
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={YAMUX_PROTOCOL_ID: Yamux},  # type: ignore[dict-item]  # libp2p's own types disagree
        listen_addrs=[listen],
        connection_config=connection_config,
        addrs_factory=make_addrs_factory(announce),
        disable_identify_address_discovery=True,
        enable_mDNS=False,
        enable_upnp=False,
    )


def verify_listening(host: IHost, listen: multiaddr.Multiaddr) -> list[multiaddr.Multiaddr]:
    """Return the bound transport addresses, or raise if ``host.run()`` silently failed to listen."""
    bound = list(host.get_transport_addrs())
    if not bound:
        raise TransportError(f"libp2p host did not start listening on {listen} (the port may be busy)")
    wanted = _tcp_port(listen)
    if wanted:
        ports = {_tcp_port(a) for a in bound}
        if wanted not in ports:
            raise PortInUseError(f"libp2p host is listening on {bound}, not on the requested port {wanted}")
    return bound
