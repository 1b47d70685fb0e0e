"""Connection diagnostics (``quinkgl doctor``, and the hint ``quinkgl run`` prints when it finds nobody).

For each bootstrap peer the checks run in order and stop at the first failure, so the answer names *why* in
words a person can act on:

1. the name resolves (``dns``);
2. a plain TCP connection opens (``refused``: nothing listens on that port; ``timed out``: a firewall drops the
   packets or the host is down; ``unreachable``: no route to that network);
3. a libp2p Noise handshake succeeds (``not quinkgl``: something answers but not a libp2p peer with Noise);
4. the authenticated peer ID is the pinned one, when the address pins one (``wrong peer``);
5. the peer answers ``/quinkgl/hello/1.0.0`` (``not quinkgl``: a libp2p peer, but not a QuinkGL ≥ 0.5 peer);
6. it runs the same arch hash (``other arch``) and the same swarm (``other swarm``).

Otherwise the peer is ``reachable``. The hello answer also says whether that peer serves as a relay and, with a
dial-back to our listen port, whether this host is reachable from outside.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from quinkgl.transport import TransportError

from . import hello
from .bootstrap import BootstrapTarget, dial_unknown, parse_bootstrap_addr, resolve

logger = logging.getLogger(__name__)

REACHABLE = "reachable"
BUSY_RETRIES = 3  # asks again when the answerer says it dialled someone back less than a second ago
BUSY_RETRY_S = 1.2

#: status -> what to do about it (shown after the reason)
ADVICE = {
    "dns": "check the host name",
    "refused": "is `quinkgl run` running there, on that port? (a firewall that rejects also says this)",
    "timed out": "a firewall may drop the packets, or the host is down; open the TCP port on that machine",
    "unreachable": "this machine has no route to that address (wrong address or network?)",
    "not quinkgl": "that address is not a QuinkGL peer; check host and port",
    "wrong peer": "another peer answers at that address than the pinned /p2p/ ID; update the pin or the address",
    "other swarm": "that peer runs another manifest (swarm); use the same .qgl file",
    "other arch": "that peer's model has another arch hash; use the same model code and manifest",
    "error": "see the reason",
}


@attrs.frozen
class PeerCheck:
    """What was found at one bootstrap address."""

    address: str
    status: str  # REACHABLE or a key of ADVICE
    reason: str
    peer_id: str | None = None
    relay: bool = False
    observed: str | None = None  # how that peer sees our address
    dial_back: str | None = None  # that peer's plain TCP connect to our listen port

    @property
    def ok(self) -> bool:
        return self.status == REACHABLE

    def words(self) -> str:
        if self.ok:
            return f"{self.address}: reachable, peer {self.peer_id}{' (relay)' if self.relay else ''}"
        return f"{self.address}: {self.status} — {self.reason}; {ADVICE.get(self.status, '')}".rstrip("; ")

    def as_dict(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "ok": self.ok, "advice": None if self.ok else ADVICE.get(self.status)}


async def check_peer(
    host: Any, target: BootstrapTarget, *, swarm_tag: bytes, arch_hash: str | None, dial_back_port: int, timeout: float
) -> PeerCheck:
    """Run the checks of the module docstring against one bootstrap address with ``host`` (a started host)."""
    where = target.describe()
    try:
        ips = await resolve(target)
    except TransportError as exc:
        return PeerCheck(where, "dns", str(exc))
    last: PeerCheck | None = None
    for ip in ips:
        last = await _check_ip(
            host, target, ip, swarm_tag=swarm_tag, arch_hash=arch_hash, dial_back_port=dial_back_port, timeout=timeout
        )
        if last.ok:
            return last
    assert last is not None
    return last


async def _ask_hello(host: Any, peer: Any, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One hello exchange on a fresh stream; raises ``trio.TooSlowError`` past ``timeout``."""
    with trio.fail_after(timeout):
        stream = await host.new_stream(peer, [hello.PROTOCOL_ID])
        try:
            await stream.write(hello.encode(request))
            return await hello.read_message(stream, timeout)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
                await stream.close()


async def _check_ip(
    host: Any,
    target: BootstrapTarget,
    ip: str,
    *,
    swarm_tag: bytes,
    arch_hash: str | None,
    dial_back_port: int,
    timeout: float,
) -> PeerCheck:
    where = target.describe()
    tcp = await hello.tcp_probe(ip, target.port, timeout)
    if tcp != "ok":
        status = tcp if tcp in ("refused", "timed out", "unreachable") else "error"
        reason = {
            "refused": f"{ip}:{target.port} refused the TCP connection",
            "timed out": f"no answer from {ip}:{target.port} within {timeout:g} s",
            "unreachable": f"network unreachable for {ip}",
        }.get(tcp, tcp)
        return PeerCheck(where, status, reason)
    try:
        with trio.fail_after(timeout):
            peer = await dial_unknown(host, ip, target.port, expected=None, remember_ttl=None)
    except trio.TooSlowError:
        return PeerCheck(where, "not quinkgl", f"TCP connects but no libp2p/Noise handshake within {timeout:g} s")
    except TransportError as exc:
        if "is this peer itself" in str(exc):
            return PeerCheck(where, "error", "that address is this peer itself")
        return PeerCheck(where, "not quinkgl", f"TCP connects but the libp2p/Noise handshake failed ({exc})")
    peer_text = peer.to_base58()
    if target.peer_id is not None and peer_text != target.peer_id:
        return PeerCheck(
            where, "wrong peer", f"peer {peer_text} answered, not the pinned {target.peer_id}", peer_id=peer_text
        )
    request = {"swarm_tag": swarm_tag.hex(), "arch_hash": arch_hash, "dial_back": dial_back_port}
    try:
        reply = await _ask_hello(host, peer, request, timeout + hello.DIAL_BACK_TIMEOUT_S)
        for _ in range(BUSY_RETRIES):  # the answerer dials back at most once a second; ask again, boundedly
            if reply.get("dial_back") != "busy":
                break
            await trio.sleep(BUSY_RETRY_S)
            reply = await _ask_hello(host, peer, request, timeout + hello.DIAL_BACK_TIMEOUT_S)
    except trio.TooSlowError:
        return PeerCheck(
            where, "not quinkgl", f"libp2p peer {peer_text} did not answer the QuinkGL hello in time", peer_id=peer_text
        )
    except Exception as exc:
        return PeerCheck(
            where,
            "not quinkgl",
            f"libp2p peer {peer_text} does not speak QuinkGL's hello protocol "
            f"(not a QuinkGL peer, or QuinkGL older than 0.5): {type(exc).__name__}",
            peer_id=peer_text,
        )
    found = attrs.evolve(
        PeerCheck(where, REACHABLE, ""),
        peer_id=peer_text,
        relay=bool(reply.get("relay")),
        observed=str(reply.get("observed") or "") or None,
        dial_back=None if reply.get("dial_back") is None else str(reply.get("dial_back")),
    )
    if reply.get("same_arch") is False:
        return attrs.evolve(found, status="other arch", reason=f"peer {peer_text} runs a model with another arch hash")
    if reply.get("same_swarm") is not True:
        return attrs.evolve(
            found, status="other swarm", reason=f"peer {peer_text} belongs to another swarm (another manifest)"
        )
    return found


async def check_all(
    host: Any, addresses: Sequence[str], *, swarm_tag: bytes, arch_hash: str | None, dial_back_port: int, timeout: float
) -> list[PeerCheck]:
    """Check every address concurrently; the result keeps the order of ``addresses``."""
    results: list[PeerCheck | None] = [None] * len(addresses)

    async def one(index: int, text: str) -> None:
        try:
            target = parse_bootstrap_addr(text)
        except ValueError as exc:
            results[index] = PeerCheck(text, "error", str(exc))
            return
        try:
            results[index] = await check_peer(
                host, target, swarm_tag=swarm_tag, arch_hash=arch_hash, dial_back_port=dial_back_port, timeout=timeout
            )
        except Exception as exc:  # a diagnosis must never end in a traceback
            results[index] = PeerCheck(target.describe(), "error", f"{type(exc).__name__}: {exc}")

    async with trio.open_nursery() as nursery:
        for index, text in enumerate(addresses):
            nursery.start_soon(one, index, text)
    return [r for r in results if r is not None]


def outside_reachability(checks: Sequence[PeerCheck]) -> str:
    """``yes`` when a reachable peer could dial back to us, ``no`` when every one that tried could not."""
    tried = [c.dial_back for c in checks if c.ok and c.dial_back not in (None, "not asked", "busy")]
    if not tried:
        return "unknown"
    return "yes" if "ok" in tried else "no"


def hint(checks: Sequence[PeerCheck], manifest_hint: str = "demo.qgl") -> str:
    """The few lines ``quinkgl run`` prints when no peer showed up: one per bootstrap peer, then what to try."""
    if not checks:
        return (
            "no bootstrap peer is configured and no peer was found on this machine: add --bootstrap-peer "
            "HOST:PORT (a peer started with --host 0.0.0.0 --port 7001), or the manifest's bootstrap_peers"
        )
    lines = [c.words() for c in checks]
    lines.append(f"run `quinkgl doctor --manifest {manifest_hint}` for a full diagnosis")
    return "\n  ".join(["no peer of the swarm found yet:", *lines])


__all__ = ["ADVICE", "REACHABLE", "PeerCheck", "check_all", "check_peer", "hint", "outside_reachability"]


@attrs.frozen
class DoctorReport:
    """Everything ``quinkgl doctor`` found."""

    listen: list[str]
    announce: list[str]
    port_note: str | None  # e.g. the fixed port is in use (a peer may already run here)
    checks: list[PeerCheck]

    @property
    def ok(self) -> bool:
        return any(c.ok for c in self.checks)

    @property
    def relay_available(self) -> bool:
        return any(c.ok and c.relay for c in self.checks)

    @property
    def reachable_from_outside(self) -> str:
        return outside_reachability(self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "listen": self.listen,
            "announce": self.announce,
            "port_note": self.port_note,
            "reachable_from_outside": self.reachable_from_outside,
            "relay_available": self.relay_available,
            "bootstrap_peers": [c.as_dict() for c in self.checks],
        }


async def diagnose(
    *,
    swarm_id: str,
    arch_hash: str | None,
    host: str,
    port: int,
    bootstrap_peers: Sequence[str],
    announce_addrs: Sequence[str] = (),
    timeout: float = 5.0,
) -> DoctorReport:
    """Start a throw-away libp2p host as ``quinkgl run`` would (ephemeral identity), check every bootstrap peer.

    It joins nothing: no announcement topic, no registry entry, no training.
    """
    import os

    from . import framing
    from .host import PortInUseError, build_host, check_port_free, ip_multiaddr, key_pair_from_seed, verify_listening
    from .transport import _parse_announce, _resolve_listen_ip

    listen_ip = _resolve_listen_ip(host)
    port_note = None
    try:
        check_port_free(listen_ip, port)
    except PortInUseError:
        port_note = (
            f"port {port} is already in use on {listen_ip} (a peer may already run here); "
            "checked from a free port instead"
        )
        port = 0
    listen = ip_multiaddr(listen_ip, port)
    announce = [_parse_announce(a) for a in announce_addrs]
    lp_host = build_host(
        key_pair_from_seed(os.urandom(32)), listen=listen, announce=announce, dial_timeout=max(1, int(timeout))
    )
    own = f"/p2p/{lp_host.get_id().to_base58()}"
    async with lp_host.run([listen]):
        try:
            bound = verify_listening(lp_host, listen)
            bound_port = int(bound[0].value_for_protocol("tcp"))
            checks = await check_all(
                lp_host,
                list(dict.fromkeys(bootstrap_peers)),
                swarm_tag=framing.swarm_tag(swarm_id),
                arch_hash=arch_hash,
                dial_back_port=bound_port,
                timeout=timeout,
            )
            announced = [str(a).replace(own, "") for a in lp_host.get_addrs()]
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5), contextlib.suppress(Exception):
                await lp_host.close()
    return DoctorReport([str(a) for a in bound], announced, port_note, checks)


__all__ += ["DoctorReport", "diagnose"]
