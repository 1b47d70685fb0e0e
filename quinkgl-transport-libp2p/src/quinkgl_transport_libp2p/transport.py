"""``Libp2pTransport``: the :class:`quinkgl.transport.Transport` contract over py-libp2p 0.8.1.

Ties together the identity (:mod:`.identity`), the hardened host (:mod:`.host`), announcements over GossipSub
(:mod:`.announce`), peer exchange over those announcements (:mod:`.peer_exchange`), model transfers over
``/quinkgl/model/1.0.0`` (:mod:`.framing`), the same-machine peer registry (:mod:`.discovery`) and bootstrap
dialling (:mod:`.bootstrap`).

Lifecycle: ``__aenter__`` loads the identity, refuses a busy fixed port, starts the host and checks it really
listens, starts GossipSub (publishing its announced addresses with every announcement), registers in the peer
registry, makes one bounded attempt at every bootstrap peer, then keeps discovery / bootstrap running in the
background. ``__aexit__`` unregisters and closes everything.

Reaching peers: the registry and bootstrap connect a peer to some of its swarm; the rest is spread by peer
exchange. Every announcement carries its publisher's addresses, authenticated to the publishing peer ID by
GossipSub's strict signing; they are filed (TTL, capped) in an address book and the peerstore. ``send`` to a
peer without a connection dials those addresses one after another within the send's deadline, expecting that
peer ID (Noise verifies it). A dial already in flight to the same peer is awaited instead of duplicated, and a
dial that finds a connection established meanwhile (the peer dialled us) drops its own, so a pair keeps one
connection where avoidable.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any, Sequence

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from quinkgl.transport import (
    AnnouncementHandler,
    PayloadHandler,
    PeerHandler,
    TransportConfig,
    TransportError,
    TransportStats,
)

from . import doctor, framing, hello
from . import relay as relay_mod
from .announce import Announcer
from .bootstrap import BootstrapTarget, dial_unknown, parse_bootstrap_addr, resolve
from .peer_exchange import DEFAULT_TTL_S, AddressBook, addrs_for_origin, own_addrs, parse_addr
from .discovery import PeerRegistry, RegistryEntry, resolve_registry_dir, should_dial
from .host import (
    build_host,
    check_port_free,
    configure_libp2p_logging,
    ip_multiaddr,
    key_pair_from_seed,
    verify_listening,
)
from .identity import load_or_create_identity
from .params import Libp2pParams

logger = logging.getLogger(__name__)
#: Shown by ``quinkgl run`` without -v (the "quinkgl" logger tree is at INFO): what addresses peers announce.
net_log = logging.getLogger("quinkgl.net")

_REGISTRY_POLL_S = 0.25
_REGISTRY_FALLBACK_S = 3.0  # the larger peer ID dials too if the smaller one has not connected by then
_BOOTSTRAP_RETRY_MAX_S = 30.0
_BOOTSTRAP_RETRY_ALONE_S = 2.0


async def _finish_stream(stream: INetStream, ok: bool) -> None:
    """Close a model stream after a complete transfer, reset it otherwise; shielded and bounded (2 s)."""
    with trio.CancelScope(shield=True), trio.move_on_after(2):
        try:
            if ok:
                await stream.close()
            else:
                await stream.reset()
        except Exception:  # the peer may already be gone; nothing more to do
            pass


class _StreamAdapter:
    """A libp2p stream as a :class:`framing.ByteStream` (``b""`` at EOF, resets as ``aborted``)."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream

    async def read(self, n: int) -> bytes:
        try:
            return await self._stream.read(n)
        except StreamEOF:
            return b""
        except Exception as exc:
            raise framing.FrameError("aborted", f"{type(exc).__name__}: {exc}") from exc

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.write(data)
        except Exception as exc:
            raise framing.FrameError("aborted", f"{type(exc).__name__}: {exc}") from exc


class _PeerLostNotifee(INotifee):
    """Calls back when the last connection to a peer closes."""

    def __init__(self, transport: Libp2pTransport) -> None:
        self._transport = transport

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._transport._connections_changed()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._transport._connections_changed()
        peer = getattr(conn.muxed_conn, "peer_id", None)
        if peer is not None and not network.get_connections(peer):
            self._transport._peer_lost(peer)

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


def _resolve_listen_ip(host: str) -> str:
    """The IP literal to bind for ``config.host`` (names go through the OS resolver)."""
    bare = host.strip("[]")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(bare, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TransportError(f"cannot resolve listen host {host!r}: {exc}") from exc
    return str(infos[0][4][0])


def _parse_announce(addr: str) -> multiaddr.Multiaddr:
    text = addr.strip()
    try:
        if text.startswith("/"):
            maddr = multiaddr.Multiaddr(text)
        else:
            target = parse_bootstrap_addr(text)
            proto = "dns" if target.is_name else ("ip6" if ":" in target.host else "ip4")
            maddr = multiaddr.Multiaddr(f"/{proto}/{target.host}/tcp/{target.port}")
    except Exception as exc:
        raise TransportError(f"invalid announce address {addr!r}: {exc}") from exc
    return maddr


class Libp2pTransport:
    """One peer's libp2p endpoint for one swarm (see the module docstring)."""

    def __init__(self, params: Libp2pParams | None, config: TransportConfig) -> None:
        self.params = params if params is not None else Libp2pParams()
        self.config = config
        self._on_announcement: AnnouncementHandler | None = None
        self._on_payload: PayloadHandler | None = None
        self._on_peer_lost: PeerHandler | None = None
        self._rejected: Counter[str] = Counter()
        self._bytes_sent = 0
        self._bytes_received = 0
        self._payloads_sent = 0
        self._payloads_received = 0
        self._inbound_active: Counter[ID] = Counter()
        self._host: IHost | None = None
        self._announcer: Announcer | None = None
        self._registry: PeerRegistry | None = None
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._peer_id: str | None = None
        self._listen_addrs: list[str] = []
        self._bootstrap_targets: list[BootstrapTarget] = [parse_bootstrap_addr(a) for a in config.bootstrap_peers]
        self._bootstrap_learned: dict[str, str] = {}
        self._announce_addrs = [_parse_announce(a) for a in config.announce_addrs]
        self._tag = framing.swarm_tag(config.swarm_id)
        self._dialing: set[str] = set()
        self._send_dials: dict[ID, trio.Event] = {}  # dials started by send(), awaited by concurrent sends
        self._pex = AddressBook(ttl_s=float(config.options.get("peer_exchange_ttl_s", DEFAULT_TTL_S)))
        self._closed = False
        self._conn_event = trio.Event()
        self._relay: Any = None  # relay.Relay once started
        self._relay_stats: Counter[str] = Counter()
        self._reachability_checked: set[str] = set()
        self._bootstrap_self: set[str] = set()  # bootstrap addresses that turned out to be this peer itself

    # --------------------------------------------------------------------------------------------------------
    # Contract: properties and handlers
    # --------------------------------------------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        if self._peer_id is None:
            raise TransportError("the transport is not started (use 'async with')")
        return self._peer_id

    @property
    def listen_addrs(self) -> Sequence[str]:
        return list(self._listen_addrs)

    @property
    def host(self) -> IHost:
        """The underlying libp2p host (for diagnostics and tests)."""
        if self._host is None:
            raise TransportError("the transport is not started")
        return self._host

    @property
    def topic(self) -> str:
        if self._announcer is None:
            raise TransportError("the transport is not started")
        return self._announcer.topic

    def set_handlers(
        self,
        *,
        on_announcement: AnnouncementHandler,
        on_payload: PayloadHandler,
        on_peer_lost: PeerHandler | None = None,
    ) -> None:
        self._on_announcement = on_announcement
        self._on_payload = on_payload
        self._on_peer_lost = on_peer_lost

    def connected_peers(self) -> Sequence[str]:
        if self._host is None:
            return []
        return [p.to_base58() for p in self._host.get_connected_peers()]

    async def wait_connected(self, peer_ids: Sequence[str], timeout: float) -> None:
        """Wait until every peer in ``peer_ids`` is connected, or raise :class:`TransportError` after ``timeout``.

        Not part of the transport contract: for tests and for a runtime that wants to wait for its bootstrap
        peers. Event-driven (woken by the swarm's connect / disconnect notifications).
        """
        wanted = set(peer_ids)
        with trio.move_on_after(timeout):
            while not wanted <= set(self.connected_peers()):
                await self._conn_event.wait()
            return
        missing = sorted(wanted - set(self.connected_peers()))
        raise TransportError(f"not connected to {', '.join(missing)} after {timeout:g} s")

    def _connections_changed(self) -> None:
        event, self._conn_event = self._conn_event, trio.Event()
        event.set()

    def stats(self) -> TransportStats:
        return TransportStats(
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            payloads_sent=self._payloads_sent,
            payloads_received=self._payloads_received,
            rejected=dict(self._rejected),
        )

    def exchanged_addrs(self, peer_id: str) -> list[str]:
        """Unexpired addresses of ``peer_id`` learned from its own announcements (peer exchange), newest first.

        Not part of the transport contract: for diagnostics and tests.
        """
        return self._pex.addrs(peer_id)

    def bootstrap_peers(self) -> dict[str, str]:
        """Bootstrap address -> the peer ID that answered there (learned or pinned)."""
        return dict(self._bootstrap_learned)

    def _reject(self, reason: str) -> None:
        self._rejected[reason] += 1

    def _is_member(self, peer: ID) -> bool:
        """A peer whose signed announcement on this swarm's topic we received (so it holds the manifest)."""
        return bool(self._pex.addrs(peer.to_base58()))

    def _count_relay(self, key: str, n: int) -> None:
        self._relay_stats[key] += n

    def relay_stats(self) -> dict[str, int]:
        """``relayed_bytes`` (as a relay) and ``relay_refused_non_member``; for logs and tests."""
        return dict(self._relay_stats)

    # --------------------------------------------------------------------------------------------------------
    # Lifecycle
    # --------------------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Libp2pTransport:
        if self._stack is not None:
            raise TransportError("a Libp2pTransport can be entered only once")
        self._stack = AsyncExitStack()
        await self._stack.__aenter__()
        try:
            await self._start()
        except BaseException:
            exc_info = sys.exc_info()
            await self._close_stack(*exc_info)
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        await self._close_stack(*exc_info)
        return None

    async def _close_stack(self, *exc_info: Any) -> None:
        self._closed = True
        if self._relay_stats:
            net_log.info("relay: %s", ", ".join(f"{k}={v}" for k, v in sorted(self._relay_stats.items())))
        if self._registry is not None:
            self._registry.unregister()
        stack, self._stack = self._stack, None
        if stack is None:
            return
        # No extra cancel scope around this: the stack holds nurseries entered in __aenter__, and they must be
        # exited in the same cancel-scope nesting they were entered in.
        try:
            await stack.__aexit__(*exc_info)
        except Exception:
            logger.warning("error while closing the libp2p transport", exc_info=True)
        self._host = None

    @staticmethod
    async def _close_host(host: IHost) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await host.close()
            except Exception:
                logger.warning("error while closing the libp2p host", exc_info=True)

    async def _start(self) -> None:
        configure_libp2p_logging()
        assert self._stack is not None
        cfg, params = self.config, self.params
        seed, persisted = load_or_create_identity(cfg.state_dir)
        key_pair = key_pair_from_seed(seed)
        listen_ip = _resolve_listen_ip(cfg.host)
        check_port_free(listen_ip, cfg.port)
        listen = ip_multiaddr(listen_ip, cfg.port)

        host = build_host(key_pair, listen=listen, announce=self._announce_addrs, dial_timeout=params.dial_timeout_s)
        self._host = host
        self._peer_id = host.get_id().to_base58()
        swarm = host.get_network()
        # The auto-connector would redial any peer in the peerstore, ignoring swarm membership and the
        # one-dialler tie-break; discovery and bootstrap here decide whom to dial.
        auto = getattr(swarm, "auto_connector", None)
        if auto is not None:

            async def _no_auto_connect() -> None:
                return None

            auto.maybe_connect = _no_auto_connect
        host.set_stream_handler(framing.PROTOCOL_ID, self._handle_model_stream)  # type: ignore[arg-type]
        serves_relay = bool(cfg.options.get("relay"))
        responder = hello.HelloResponder(self._tag, cfg.options.get("arch_hash"), lambda: serves_relay)
        host.set_stream_handler(hello.PROTOCOL_ID, responder.handle)  # type: ignore[arg-type]  # for `doctor`
        swarm.register_notifee(_PeerLostNotifee(self))
        self._announcer = Announcer(
            host,
            swarm_id=cfg.swarm_id,
            max_bytes=params.max_announcement_bytes,
            deliver=self._deliver_announcement,
            reject=self._reject,
            learn=self._learn_addrs,
        )

        await self._stack.enter_async_context(host.run([listen]))
        # Leaving host.run() alone leaves the TCP listener open (its close() is cancelled inside the swarm's
        # shutdown), so the port keeps answering: close the host explicitly, shielded, before run() exits.
        self._stack.push_async_callback(self._close_host, host)
        bound = verify_listening(host, listen)
        from .relay import Relay  # circuit relay v2: serve with --relay; reserve when nobody can dial us

        self._relay = Relay(host, serve=bool(cfg.options.get("relay")), is_member=self._is_member,
                            count=self._count_relay)
        await self._relay.start(self._stack)
        self._listen_addrs = [str(a) for a in host.get_addrs()]
        self._announcer.set_addrs(own_addrs(self._listen_addrs, self._peer_id))
        logger.info(
            "libp2p peer %s listening on %s (identity %s)",
            self._peer_id,
            ", ".join(str(a) for a in bound),
            "persisted" if persisted else "ephemeral",
        )
        await self._stack.enter_async_context(self._announcer.running())
        nursery = await self._stack.enter_async_context(trio.open_nursery())
        self._nursery = nursery
        self._stack.callback(nursery.cancel_scope.cancel)  # runs first on exit: stop background tasks

        if params.local_discovery and cfg.options.get("registry", True):
            self._registry = PeerRegistry(
                resolve_registry_dir(cfg.options), swarm_id=cfg.swarm_id, peer_id=self._peer_id
            )
            self._registry.register(self._listen_addrs)
            nursery.start_soon(self._registry_loop)

        if self._bootstrap_targets:
            with trio.move_on_after(params.dial_timeout_s + 1):
                async with trio.open_nursery() as first:
                    for target in self._bootstrap_targets:
                        first.start_soon(self._bootstrap_once, target)
            for target in self._bootstrap_targets:
                nursery.start_soon(self._bootstrap_loop, target)

    # --------------------------------------------------------------------------------------------------------
    # Announcements
    # --------------------------------------------------------------------------------------------------------

    async def announce(self, document: bytes) -> None:
        if self._announcer is None or self._closed:
            raise TransportError("the transport is not running")
        await self._announcer.publish(document)

    def _deliver_announcement(self, sender: str, document: bytes) -> None:
        if self._on_announcement is not None:
            self._on_announcement(sender, document)

    def _learn_addrs(self, origin: str, addrs: list[str]) -> None:
        """Peer exchange: file the addresses of an announcement under its authenticated origin."""
        if origin == self._peer_id:
            return
        kept, ignored = addrs_for_origin(origin, addrs)
        if ignored:
            self._rejected["announce_addr_ignored"] += ignored  # names another peer, or undialable
        if not kept:
            return
        changed = self._pex.learn(origin, kept)
        if changed:
            net_log.info("peer %s announces %s", origin, ", ".join(kept))
        host = self._host
        if host is None:
            return
        peer = ID.from_base58(origin)
        maddrs: list[multiaddr.Multiaddr] = []
        for text in self._pex.addrs(origin):
            try:
                maddrs.append(multiaddr.Multiaddr(text))
            except Exception:
                continue
        peerstore = host.get_peerstore()
        if changed:
            peerstore.clear_addrs(peer)  # the book is capped; keep the peerstore's copy to the same list
        # The peerstore's TTL is per peer: refreshed by every announcement, it expires with the newest address.
        peerstore.add_addrs(peer, maddrs, max(1, math.ceil(self._pex.remaining_ttl(origin))))

    async def wait_announce_ready(self, peer_id: str, timeout: float) -> None:
        """Wait until an announcement published now would reach ``peer_id`` (it is in our GossipSub mesh).

        Not part of the transport contract; useful to tests and to a runtime that wants to avoid a first
        announcement racing the mesh set-up.
        """
        if self._announcer is None:
            raise TransportError("the transport is not running")
        try:
            await self._announcer.wait_for_peer(ID.from_base58(peer_id), timeout)
        except trio.TooSlowError as exc:
            raise TransportError(f"{peer_id} did not join the announcement mesh within {timeout:g} s") from exc

    # --------------------------------------------------------------------------------------------------------
    # Payloads
    # --------------------------------------------------------------------------------------------------------

    async def send(self, peer_id: str, payload: bytes, *, timeout: float) -> None:
        host = self._host
        if host is None or self._closed:
            raise TransportError("the transport is not running")
        if len(payload) > self.config.max_payload_bytes:
            raise TransportError(
                f"payload of {len(payload)} bytes exceeds max_payload_bytes {self.config.max_payload_bytes}"
            )
        try:
            target = ID.from_base58(peer_id)
        except Exception as exc:
            raise TransportError(f"{peer_id!r} is not a libp2p peer ID") from exc
        if target == host.get_id():
            raise TransportError("cannot send a payload to this peer itself")
        started = time.monotonic()
        error: BaseException | None = None
        with trio.move_on_after(max(timeout, 0.0)) as scope:
            try:
                await self._send(host, target, payload)
                self._payloads_sent += 1
                self._bytes_sent += len(payload)
                return
            except framing.SendRefused as exc:
                error = exc
            except framing.FrameError as exc:
                error = exc
            except TransportError as exc:
                error = exc
            except Exception as exc:
                error = exc
        if scope.cancelled_caught:
            await self._drop_connection(host, target, "a send on it timed out")
            raise TransportError(
                f"sending {len(payload)} bytes to {peer_id} timed out after {time.monotonic() - started:.2f} s"
            )
        assert error is not None
        if isinstance(error, TransportError):
            raise error
        raise TransportError(f"sending to {peer_id} failed: {error}") from error

    async def _send(self, host: IHost, target: ID, payload: bytes) -> None:
        await self._ensure_connected(host, target)
        try:
            stream = await host.new_stream(target, [framing.PROTOCOL_ID])  # type: ignore[list-item]
        except Exception as exc:
            await self._drop_connection(host, target, "no stream could be opened on it")
            raise TransportError(f"cannot open a model stream to {target}: {exc}") from exc
        ok = False
        try:
            await framing.send_payload(_StreamAdapter(stream), payload, tag=self._tag)
            ok = True
        finally:
            await _finish_stream(stream, ok)

    async def _drop_connection(self, host: IHost, target: ID, why: str) -> None:
        """Close a connection that no longer works, so the next send or bootstrap round dials afresh.

        After a network outage (a cut link, a sleeping laptop) a Yamux session can stay "established" while no
        stream opens on it any more; keeping it would stop every later send to that peer and every re-dial.
        """
        if not host.get_network().get_connections(target):
            return
        net_log.info("dropping the connection to %s: %s", target, why)
        with trio.CancelScope(shield=True), trio.move_on_after(3):
            try:
                await host.disconnect(target)
            except Exception:  # already closing; nothing more to do
                logger.debug("closing the connection to %s failed", target, exc_info=True)

    async def _ensure_connected(self, host: IHost, target: ID) -> None:
        """Connect to ``target`` unless connected; bounded by the caller's deadline (send's timeout)."""
        swarm = host.get_network()
        while not swarm.get_connections(target):
            pending = self._send_dials.get(target)
            if pending is None:
                break
            await pending.wait()  # another send is dialling this peer: use its connection, do not dial twice
        if swarm.get_connections(target):
            return
        done = trio.Event()
        self._send_dials[target] = done
        self._dialing.add(target.to_base58())  # the registry loop skips peers being dialled
        try:
            await self._dial_known_addrs(host, target)
        finally:
            done.set()
            if self._send_dials.get(target) is done:
                del self._send_dials[target]
            self._dialing.discard(target.to_base58())

    def _dial_candidates(self, host: IHost, target: ID) -> list[str]:
        """Addresses to try for ``target``: peer exchange (newest first), then any other peerstore address."""
        key = target.to_base58()
        candidates = self._pex.addrs(key)
        try:
            stored = list(host.get_peerstore().addrs(target))
        except Exception:  # PeerStoreError: unknown or expired
            stored = []
        for maddr in stored:
            try:
                canonical, suffix = parse_addr(str(maddr))
            except ValueError:
                continue
            if suffix in (None, key) and canonical not in candidates:
                candidates.append(canonical)
        return candidates

    async def _dial_known_addrs(self, host: IHost, target: ID) -> None:
        key = target.to_base58()
        candidates = self._dial_candidates(host, target)
        if not candidates:
            raise TransportError(f"peer {key} is unreachable: no known address (not announced, not in the peerstore)")
        swarm = host.get_network()
        swarm.unblock_peer(target)  # type: ignore[attr-defined]  # a deliberate dial: skip the 60 s negative cache
        errors: list[str] = []
        for index, addr in enumerate(candidates):
            left = len(candidates) - index
            limit = float(self.params.dial_timeout_s)
            if left > 1:  # leave time for the other addresses within the caller's deadline
                remaining = trio.current_effective_deadline() - trio.current_time()
                limit = min(limit, max(0.5, remaining / left))
            if addr.endswith(relay_mod.CIRCUIT_SUFFIX):  # reachable through a relay (circuit relay v2)
                try:
                    with trio.fail_after(limit):
                        await self._relay.dial(addr, target)
                    logger.debug("connected to %s through %s", key, addr)
                    return
                except trio.TooSlowError:
                    errors.append(f"{addr}: no relayed connection within {limit:.1f} s")
                except TransportError as exc:
                    errors.append(f"{addr}: {exc}")
                continue
            _, proto, name, _, port_s = addr.split("/")
            try:
                with trio.fail_after(limit):
                    if proto.startswith("dns"):
                        ips = await resolve(BootstrapTarget(addr, name, int(port_s), None, True))
                        if proto != "dns":
                            ips = [ip for ip in ips if (":" in ip) == (proto == "dns6")]
                    else:
                        ips = [name]
                    for ip in ips:
                        try:
                            await dial_unknown(host, ip, int(port_s), expected=target, remember_ttl=None)
                            logger.debug("connected to %s at %s", key, addr)
                            return
                        except TransportError as exc:
                            errors.append(f"{addr}: {exc}")
            except trio.TooSlowError:
                errors.append(f"{addr}: no answer within {limit:.1f} s")
            except TransportError as exc:  # name resolution
                errors.append(f"{addr}: {exc}")
            if swarm.get_connections(target):
                return  # the peer dialled us meanwhile
        raise TransportError(f"peer {key} is unreachable: {'; '.join(errors) or 'no usable address'}")

    async def _handle_model_stream(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        adapter = _StreamAdapter(stream)
        limit = self.params.max_inbound_transfers_per_peer
        admitted = False

        def admit(length: int) -> str | None:
            nonlocal admitted
            if self._inbound_active[peer] >= limit:
                return "busy"
            self._inbound_active[peer] += 1
            admitted = True
            return None

        ok = False
        payload = b""
        try:
            payload = await framing.receive_payload(
                adapter,
                tag=self._tag,
                max_bytes=self.config.max_payload_bytes,
                idle_timeout=float(self.params.stream_idle_timeout_s),
                admit=admit,
            )
            ok = True
        except framing.FrameError as exc:
            self._reject(f"payload_{exc.reason}")
            logger.info("refused a model transfer from %s: %s", peer, exc)
        except trio.TooSlowError:
            self._reject("payload_stalled")
            logger.info("model transfer from %s stalled", peer)
        except Exception as exc:  # never let a broken stream escape into libp2p's tasks
            self._reject("payload_error")
            logger.warning("model transfer from %s failed: %r", peer, exc)
        finally:
            if admitted:
                self._inbound_active[peer] -= 1
                if self._inbound_active[peer] <= 0:
                    del self._inbound_active[peer]
            await _finish_stream(stream, ok)
        if not ok:
            return
        self._payloads_received += 1
        self._bytes_received += len(payload)
        if self._on_payload is not None:
            try:
                self._on_payload(peer.to_base58(), payload)
            except Exception:
                logger.exception("payload handler failed for a payload from %s", peer)

    def _peer_lost(self, peer: ID) -> None:
        if self._closed:
            return
        logger.debug("lost connection to %s", peer)
        if self._on_peer_lost is not None:
            try:
                self._on_peer_lost(peer.to_base58())
            except Exception:
                logger.exception("peer-lost handler failed for %s", peer)

    # --------------------------------------------------------------------------------------------------------
    # Discovery: same-machine registry
    # --------------------------------------------------------------------------------------------------------

    async def _registry_loop(self) -> None:
        assert self._registry is not None and self._nursery is not None
        registry = self._registry
        first_seen: dict[str, float] = {}
        next_try: dict[str, float] = {}
        backoff: dict[str, float] = {}
        incarnation: dict[str, tuple[int, float]] = {}  # a restarted peer (new PID) starts with a clean slate
        while True:
            try:
                if not registry.path.exists():
                    registry.register(self._listen_addrs)  # the directory was cleaned under us
                entries = registry.swarm_peers()
            except Exception:
                logger.warning("peer registry scan failed", exc_info=True)
                entries = []
            now = time.monotonic()
            live = {e.peer_id for e in entries}
            for entry in entries:
                if incarnation.get(entry.peer_id) != (entry.pid, entry.started_at):
                    incarnation[entry.peer_id] = (entry.pid, entry.started_at)
                    for table in (first_seen, next_try, backoff):
                        table.pop(entry.peer_id, None)
            for gone in set(incarnation) - live:
                for table in (first_seen, next_try, backoff, incarnation):
                    table.pop(gone, None)  # type: ignore[attr-defined]
            connected = set(self.connected_peers())
            for entry in entries:
                pid = entry.peer_id
                first_seen.setdefault(pid, now)
                if pid in connected:
                    backoff.pop(pid, None)
                    continue
                if pid in self._dialing or now < next_try.get(pid, 0.0):
                    continue
                my_turn = should_dial(self.peer_id, pid) or now - first_seen[pid] >= _REGISTRY_FALLBACK_S
                if not my_turn:
                    continue
                delay = min(backoff.get(pid, 0.5) * 2, 30.0)
                backoff[pid] = delay
                next_try[pid] = now + delay
                self._nursery.start_soon(self._dial_registry_entry, entry)
            await trio.sleep(float(self.config.options.get("registry_poll_s", _REGISTRY_POLL_S)))

    async def _dial_registry_entry(self, entry: RegistryEntry) -> None:
        host = self._host
        if host is None:
            return
        self._dialing.add(entry.peer_id)
        try:
            target = ID.from_base58(entry.peer_id)
            addrs = [multiaddr.Multiaddr(a) for a in entry.addrs]
            addrs = [a.decapsulate(multiaddr.Multiaddr(f"/p2p/{entry.peer_id}")) for a in addrs]
            # Registry peers run on this machine: use loopback when they listen there (the swarm would
            # otherwise prefer any public announce address over loopback).
            loopback = [a for a in addrs if str(a).startswith(("/ip4/127.", "/ip6/::1/"))]
            addrs = loopback or addrs
            host.get_network().unblock_peer(target)  # type: ignore[attr-defined]
            # The registry is authoritative for local peers: forget addresses of an earlier incarnation (the
            # swarm dials only the first address per transport class it knows).
            host.get_peerstore().clear_addrs(target)
            with trio.fail_after(self.params.dial_timeout_s):
                await host.connect(PeerInfo(target, addrs))
            logger.info("connected to local peer %s (registry)", entry.peer_id)
        except Exception as exc:
            logger.debug("dialling registry peer %s failed: %r", entry.peer_id, exc)
        finally:
            self._dialing.discard(entry.peer_id)

    # --------------------------------------------------------------------------------------------------------
    # Bootstrap
    # --------------------------------------------------------------------------------------------------------

    def _bootstrap_connected(self, target: BootstrapTarget) -> bool:
        known = target.peer_id or self._bootstrap_learned.get(target.text)
        return known is not None and known in set(self.connected_peers())

    async def _bootstrap_once(self, target: BootstrapTarget) -> bool:
        host = self._host
        if host is None:
            return False
        if self._bootstrap_connected(target):
            return True
        expected = ID.from_base58(target.peer_id) if target.peer_id else None
        try:
            with trio.fail_after(self.params.dial_timeout_s):
                ips = await resolve(target)
                errors: list[str] = []
                for ip in ips:
                    try:
                        peer = await dial_unknown(host, ip, target.port, expected=expected)
                    except TransportError as exc:
                        if "is this peer itself" in str(exc):  # e.g. the manifest lists this peer: stop dialling
                            self._bootstrap_self.add(target.text)
                            return False
                        errors.append(str(exc))
                        continue
                    peer_text = peer.to_base58()
                    if self._bootstrap_learned.get(target.text) != peer_text:
                        # Unpinned: whoever answers becomes the bootstrap peer, so say loudly who that was.
                        logger.log(
                            logging.INFO if target.peer_id else logging.WARNING,
                            "bootstrap %s answered as peer %s%s",
                            target.describe(),
                            peer_text,
                            "" if target.peer_id else f" (pin it with {target.describe()}/p2p/{peer_text})",
                        )
                    self._bootstrap_learned[target.text] = peer_text
                    if peer_text not in self._reachability_checked and self._nursery is not None:
                        self._reachability_checked.add(peer_text)
                        self._nursery.start_soon(self._check_reachability, peer, ip, target.port)
                    return True
                raise TransportError("; ".join(errors) or "no address")
        except trio.TooSlowError:
            logger.warning("bootstrap %s: no answer within %d s", target.describe(), self.params.dial_timeout_s)
        except TransportError as exc:
            logger.warning("bootstrap %s failed: %s", target.describe(), exc)
        return False

    async def _bootstrap_loop(self, target: BootstrapTarget) -> None:
        delay = 1.0
        while target.text not in self._bootstrap_self:
            if self._bootstrap_connected(target):
                delay = 1.0
                await trio.sleep(1.0)
                continue
            ok = await self._bootstrap_once(target)
            # While this peer is connected to nobody, keep retrying every few seconds (peers of a swarm start
            # at about the same time, and a bootstrap peer still loading may refuse for a while); back off only
            # once the peer has other connections.
            cap = _BOOTSTRAP_RETRY_MAX_S if self.connected_peers() else _BOOTSTRAP_RETRY_ALONE_S
            delay = 1.0 if ok else min(delay * 2, cap)
            await trio.sleep(delay)

    async def _check_reachability(self, peer: ID, ip: str, port: int) -> None:
        """Ask a bootstrap peer to dial us back; if it cannot and it is a relay, reserve a slot and announce it."""
        host = self._host
        own_ports = [int(a.split("/")[4]) for a in self._listen_addrs if a.split("/")[3:4] == ["tcp"]]
        if host is None or self._relay is None or not own_ports:
            return
        reply: dict[str, Any] = {}
        for _attempt in range(3):  # a peer dials back at most once a second ("busy"): ask again
            try:
                reply = await relay_mod.ask_dial_back(host, peer, swarm_tag=self._tag,
                                                      arch_hash=self.config.options.get("arch_hash"),
                                                      port=own_ports[0], timeout=float(self.params.dial_timeout_s))
            except Exception as exc:
                logger.info("reachability check with %s failed: %r", peer, exc)
                return
            if reply.get("dial_back") != "busy":
                break
            await trio.sleep(1.1)
        net_log.info("%s can dial us back: %s%s", peer, reply.get("dial_back"),
                     " (it serves as a relay)" if reply.get("relay") else "")
        if reply.get("dial_back") == "ok" or not reply.get("relay") or self._nursery is None:
            return
        relay_tcp = f"/{'ip6' if ':' in ip else 'ip4'}/{ip}/tcp/{port}"
        for _attempt in range(15):  # the relay admits members only: it must have received our announcement
            try:
                with trio.fail_after(float(self.params.dial_timeout_s)):
                    address = await self._relay.reserve(peer, relay_tcp, self._nursery)
            except Exception as exc:
                logger.info("relay reservation on %s failed: %r", peer, exc)
                await trio.sleep(2.0)
                continue
            if self._announcer is not None and self._peer_id is not None:
                self._announcer.set_addrs(own_addrs([address, *self._listen_addrs], self._peer_id))
            return

    async def connectivity_hint(self, manifest_hint: str = "demo.qgl") -> str:
        """Why no peer was found, in words (the checks of ``quinkgl doctor``, run with this peer's host).

        Not part of the transport contract: the runtime calls it, when present, if discovery found nobody.
        """
        host = self._host
        if host is None:
            return "the transport is not running"
        others = [t.text for t in self._bootstrap_targets if t.text not in self._bootstrap_self]
        checks = await doctor.check_all(host, others, swarm_tag=self._tag,
                                        arch_hash=self.config.options.get("arch_hash"), dial_back_port=0,
                                        timeout=float(self.params.dial_timeout_s))
        return doctor.hint(checks, manifest_hint)


def create_transport(params: Libp2pParams | None, config: TransportConfig) -> Libp2pTransport:
    """The factory registered for the ``libp2p`` transport."""
    if params is not None and not isinstance(params, Libp2pParams):
        raise TransportError(f"libp2p transport params must be Libp2pParams, got {type(params).__name__}")
    return Libp2pTransport(params, config)


__all__ = ["Libp2pTransport", "create_transport"]
