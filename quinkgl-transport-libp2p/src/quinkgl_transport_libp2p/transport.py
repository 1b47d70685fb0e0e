"""``Libp2pTransport``: the :class:`quinkgl.transport.Transport` contract over py-libp2p 0.8.1.

Ties together the identity (:mod:`.identity`), the hardened host (:mod:`.host`), announcements over GossipSub
(:mod:`.announce`), peer exchange over those announcements (:mod:`.peer_exchange`), dialling announced
addresses (:mod:`.dialling`), model transfers over ``/quinkgl/model/1.0.0`` (:mod:`.framing`,
:mod:`.model_stream`), the same-machine peer registry (:mod:`.discovery`, :mod:`.registry_discovery`) and
bootstrap dialling (:mod:`.bootstrap`, :mod:`.bootstrapper`).

Lifecycle: ``__aenter__`` loads the identity, refuses a busy fixed port, starts the host and checks it really
listens, starts GossipSub (publishing its announced addresses with every announcement), registers in the peer
registry, makes one bounded attempt at every bootstrap peer, then keeps discovery / bootstrap running in the
background. ``__aexit__`` unregisters and closes everything.

Reaching peers: the registry and bootstrap connect a peer to some of its swarm; the rest is spread by peer
exchange. Every announcement carries its publisher's addresses, authenticated to the publishing peer ID by
GossipSub's strict signing; they are filed (TTL, capped) in an address book and the peerstore. ``send`` to a
peer without a connection dials them (:mod:`.dialling`).

Hostile input: every stream handler runs behind :mod:`.stream_guard` (which also fixes py-libp2p's inbound-slot
leak), and every bound on what a stranger can make this peer parse, hold, dial or log is in :mod:`.limits`
(documented in docs/security.md). ``set_handlers(..., admits=...)`` lets the runtime refuse peers outside its
view before any of their payload bytes are read and before dialling them.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, suppress
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID

from quinkgl.manifest.peers import parse_peer_address
from quinkgl.transport import (
    AnnouncementHandler,
    PayloadHandler,
    PeerHandler,
    RequestHandler,
    TransportConfig,
    TransportError,
    TransportStats,
)

from . import doctor, framing, hello, pull
from . import relay as relay_mod
from .announce import Announcer
from .bootstrap import BootstrapTarget, parse_bootstrap_addr
from .bootstrapper import Bootstrapper
from .dialling import Dialler
from .discovery import PeerRegistry, resolve_registry_dir
from .host import (
    build_host,
    check_port_free,
    configure_libp2p_logging,
    ip_multiaddr,
    key_pair_from_seed,
    verify_listening,
)
from .identity import load_or_create_identity
from .limits import PUBLIC, NetworkLimits, RepeatFilter, addr_scope, ip_scope, may_dial
from .model_stream import ModelStreams
from .params import Libp2pParams
from .peer_exchange import DEFAULT_TTL_S, AddressBook, addrs_for_origin, own_addrs
from .registry_discovery import RegistryDiscovery
from .stream_guard import install_stream_guard, release_inbound_slots

logger = logging.getLogger(__name__)
#: Shown by ``quinkgl run`` without -v (the "quinkgl" logger tree is at INFO): what addresses peers announce.
net_log = logging.getLogger("quinkgl.net")


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
    try:
        return multiaddr.Multiaddr(parse_peer_address(addr).multiaddr)
    except Exception as exc:
        raise TransportError(f"invalid announce address {addr!r}: {exc}") from exc


class Libp2pTransport:
    """One peer's libp2p endpoint for one swarm (see the module docstring)."""

    def __init__(self, params: Libp2pParams | None, config: TransportConfig) -> None:
        self.params = params if params is not None else Libp2pParams()
        self.config = config
        self._on_announcement: AnnouncementHandler | None = None
        self._on_payload: PayloadHandler | None = None
        self._on_peer_lost: PeerHandler | None = None
        self._admits: Callable[[str], bool] | None = None
        self.limits = NetworkLimits.from_options(config.options)
        self._on_request: RequestHandler | None = None
        self._rejected: Counter[str] = Counter()
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
        self._dialing: set[str] = set()  # peers being dialled (send or registry): the registry loop skips them
        self._pex = AddressBook(
            ttl_s=float(config.options.get("peer_exchange_ttl_s", DEFAULT_TTL_S)),
            max_peers=self.limits.max_tracked_origins,
            on_evict=self._forget_addrs,
        )
        self._dialler = Dialler(
            params=self.params,
            book=self._pex,
            dialing=self._dialing,
            limits=self.limits,
            admits=lambda: self._admits,
            reject=lambda reason: self._reject(reason),
            relay_dial=self._relay_dial,
        )
        self._streams = ModelStreams(
            params=self.params,
            config=config,
            reject=lambda reason: self._reject(reason),
            on_payload=lambda: self._on_payload,
            admits=lambda: self._admits,
            limits=self.limits,
        )
        self._closed = False
        self._conn_event = trio.Event()
        # Observer (listen-only) mode, for `quinkgl monitor`: receives announcements, publishes none, accepts no
        # models and writes no registry entry, so no peer ever learns of it as a swarm member or a source.
        self._observer = bool(config.options.get("observer", False))
        self._relay: Any = None  # relay.Relay once started
        self._relay_stats: Counter[str] = Counter()
        self._bootstrapper: Bootstrapper | None = None

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
        admits: Callable[[str], bool] | None = None,
        on_request: RequestHandler | None = None,
    ) -> None:
        """Install the callbacks. ``admits(peer_id)``, when given, is consulted before any payload byte of a
        peer is read and before a peer is dialled: a peer it refuses has its streams reset (``not_admitted``)
        and is never dialled."""
        self._on_announcement = on_announcement
        self._on_payload = on_payload
        self._on_peer_lost = on_peer_lost
        self._admits = admits
        self._on_request = on_request

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
            bytes_sent=self._streams.bytes_sent,
            bytes_received=self._streams.bytes_received,
            payloads_sent=self._streams.payloads_sent,
            payloads_received=self._streams.payloads_received,
            rejected=dict(self._rejected),
            relayed_bytes=self._relay_stats["relayed_bytes"],
        )

    def exchanged_addrs(self, peer_id: str) -> list[str]:
        """Unexpired addresses of ``peer_id`` learned from its own announcements (peer exchange), newest first.

        Not part of the transport contract: for diagnostics and tests.
        """
        return self._pex.addrs(peer_id)

    def bootstrap_peers(self) -> dict[str, str]:
        """Bootstrap address -> the peer ID that answered there (learned or pinned)."""
        return dict(self._bootstrap_learned)

    def _is_member(self, peer: ID) -> bool:
        """A peer whose signed announcement on this swarm's topic we received (so it holds the manifest)."""
        return bool(self._pex.addrs(peer.to_base58()))

    def _count_relay(self, key: str, n: int) -> None:
        self._relay_stats[key] += n

    def relay_stats(self) -> dict[str, int]:
        """``relayed_bytes`` (as a relay) and ``relay_refused_non_member``; for logs and tests."""
        return dict(self._relay_stats)

    def _relays_for_us(self, peer_id: str) -> bool:
        """Whether ``peer_id`` is a relay on which this peer holds a slot (its connection carries our circuits)."""
        return self._relay is not None and peer_id in self._relay.reserved

    async def _relay_dial(self, addr: str, target: ID) -> None:
        if self._relay is None:
            raise TransportError("no relay client is running")
        await self._relay.dial(addr, target)

    def _reject(self, reason: str) -> None:
        self._rejected[reason] += 1

    def _on_malformed(self, protocol: str, peer: ID | None, exc: BaseException) -> None:
        """A stream handler raised (malformed input on ``protocol``): the guard resets it and drops the peer."""
        self._reject("rpc_malformed")
        logger.warning("dropped peer %s: malformed input on %s (%s)", peer, protocol, type(exc).__name__)

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
        configure_libp2p_logging(RepeatFilter(self.limits.log_lines_per_minute))
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
        release_inbound_slots(swarm)
        install_stream_guard(host, self._on_malformed)
        # The auto-connector would redial any peer in the peerstore, ignoring swarm membership and the
        # one-dialler tie-break; discovery and bootstrap here decide whom to dial.
        auto = getattr(swarm, "auto_connector", None)
        if auto is not None:

            async def _no_auto_connect() -> None:
                return None

            auto.maybe_connect = _no_auto_connect
        if not self._observer:  # an observer serves nothing: no model stream, no pull answers
            host.set_stream_handler(framing.PROTOCOL_ID, self._streams.handle)  # type: ignore[arg-type]
            host.set_stream_handler(pull.PROTOCOL_ID, self._handle_pull_stream)  # type: ignore[arg-type]
        serves_relay = bool(cfg.options.get("relay"))
        responder = hello.HelloResponder(self._streams.tag, cfg.options.get("arch_hash"), lambda: serves_relay)
        host.set_stream_handler(hello.PROTOCOL_ID, responder.handle)  # type: ignore[arg-type]  # for `doctor`
        swarm.register_notifee(_PeerLostNotifee(self))
        self._announcer = Announcer(
            host,
            swarm_id=cfg.swarm_id,
            max_bytes=params.max_announcement_bytes,
            deliver=self._deliver_announcement,
            reject=lambda reason: self._reject(reason),
            learn=self._learn_addrs,
            limits=self.limits,
            drop_peer=self._drop_peer,
        )

        await self._stack.enter_async_context(host.run([listen]))
        # Leaving host.run() alone leaves the TCP listener open (its close() is cancelled inside the swarm's
        # shutdown), so the port keeps answering: close the host explicitly, shielded, before run() exits.
        self._stack.push_async_callback(self._close_host, host)
        bound = verify_listening(host, listen)
        from .relay import Relay  # circuit relay v2: serve with --relay; reserve when nobody can dial us

        self._relay = Relay(
            host, serve=bool(cfg.options.get("relay")), is_member=self._is_member, count=self._count_relay
        )
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
            if not self._observer:
                self._registry.register(self._listen_addrs)
            discovery = RegistryDiscovery(
                host=host,
                registry=self._registry,
                params=params,
                options=cfg.options,
                peer_id=self._peer_id,
                listen_addrs=lambda: self._listen_addrs,
                connected_peers=self.connected_peers,
                dialing=self._dialing,
                observer=self._observer,
            )
            nursery.start_soon(discovery.run, nursery)

        self._bootstrapper = Bootstrapper(
            host=host,
            targets=self._bootstrap_targets,
            params=params,
            connected_peers=self.connected_peers,
            learned=self._bootstrap_learned,
            check_reachability=None if self._observer else self._check_reachability,
        )
        await self._bootstrapper.start(nursery)

    # --------------------------------------------------------------------------------------------------------
    # Announcements
    # --------------------------------------------------------------------------------------------------------

    async def announce(self, document: bytes) -> None:
        if self._announcer is None or self._closed:
            raise TransportError("the transport is not running")
        if self._observer:
            raise TransportError("an observer (listen-only) transport publishes no announcements")
        await self._announcer.publish(document)

    def _deliver_announcement(self, sender: str, document: bytes) -> None:
        if self._on_announcement is not None:
            self._on_announcement(sender, document)

    def _drop_peer(self, peer: ID) -> None:
        """Close every connection to ``peer`` (in the background)."""
        host, nursery = self._host, self._nursery
        if host is None or nursery is None or self._closed:
            return

        async def close() -> None:
            with trio.move_on_after(5):
                with suppress(Exception):
                    await host.get_network().close_peer(peer)

        nursery.start_soon(close)

    def _forget_addrs(self, origin: str) -> None:
        """The address book dropped ``origin`` (it is full): drop the peerstore's copy of its addresses too."""
        host = self._host
        if host is not None:
            try:
                peer = ID.from_base58(origin)
                if not host.get_network().get_connections(peer):
                    host.get_peerstore().clear_peerdata(peer)
                else:
                    host.get_peerstore().clear_addrs(peer)
            except Exception:
                pass

    def _peer_scope(self, peer: ID | None) -> int:
        """The scope (loopback / private / public) of our connection to ``peer``; public when unknown."""
        host = self._host
        if peer is None or host is None:
            return PUBLIC
        scopes = []
        for conn in host.get_network().get_connections(peer):
            try:
                remote = conn.muxed_conn.get_remote_address()  # type: ignore[attr-defined]
            except Exception:
                remote = None
            if remote:
                scopes.append(ip_scope(str(remote[0])))
        return max(scopes) if scopes else PUBLIC

    def _learn_addrs(self, origin: str, addrs: list[str], forwarder: ID | None = None) -> None:
        """Peer exchange: file the addresses of an announcement under its authenticated origin, keeping only
        those no more local than the connection they arrived over."""
        if origin == self._peer_id:
            return
        kept, ignored = addrs_for_origin(origin, addrs)
        if ignored:
            self._rejected["announce_addr_ignored"] += ignored  # names another peer, or undialable
        scope = self._peer_scope(forwarder)
        previous = self._dialler.learnt_scope.get(origin)
        self._dialler.learnt_scope.put(origin, scope if previous is None else min(scope, previous))
        in_scope = [a for a in kept if may_dial(addr_scope(a), scope)]
        if len(in_scope) < len(kept):
            self._rejected["announce_addr_scope"] += len(kept) - len(in_scope)
        kept = in_scope
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

    # --------------------------------------------------------------------------------------------------------
    # Peer sampling (optional contract, quinkgl.transport): descriptors signed with the identity key
    # --------------------------------------------------------------------------------------------------------

    def sign_sampling(self, data: bytes) -> bytes:
        """Sign a peer-sampling descriptor with this peer's identity key (Ed25519)."""
        if self._host is None:
            raise TransportError("the transport is not started")
        return bytes(self._host.get_private_key().sign(data))

    def verify_sampling(self, peer_id: str, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` over ``data`` is by the key ``peer_id`` is derived from (Ed25519 IDs carry it)."""
        try:
            key = ID.from_base58(peer_id).extract_public_key()
            return key is not None and bool(key.verify(data, signature))
        except Exception:
            return False

    def learn_peer_addrs(self, peer_id: str, addrs: list[str], via: str) -> None:
        """File the addresses of a descriptor ``peer_id`` signed, received from ``via``, like announced ones
        (the same caps, TTL and scope rule: never more local than our connection to ``via``)."""
        try:
            forwarder = ID.from_base58(via)
            ID.from_base58(peer_id)
        except Exception:
            return
        self._learn_addrs(peer_id, list(addrs), forwarder)

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
                await self._dialler.ensure_connected(host, target)
                try:
                    await self._streams.send(host, target, payload)
                except TransportError:
                    await self._drop_connection(host, target, "no stream could be opened on it")
                    raise
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

    async def _drop_connection(self, host: IHost, target: ID, why: str) -> None:
        """Close a connection that no longer works, so the next send, request or bootstrap round dials afresh.

        After a network outage (a cut link, a sleeping laptop) a Yamux session can stay "established" while no
        stream opens on it any more; keeping it would stop every later exchange with that peer and every re-dial.
        """
        if not host.get_network().get_connections(target):
            return
        net_log.info("dropping the connection to %s: %s", target, why)
        with trio.CancelScope(shield=True), trio.move_on_after(3):
            try:
                await host.disconnect(target)
            except Exception:  # already closing; nothing more to do
                logger.debug("closing the connection to %s failed", target, exc_info=True)

    async def _check_reachability(self, peer: ID, ip: str, port: int) -> None:
        """Ask a bootstrap peer to dial us back; if it cannot and it is a relay, reserve a slot and announce it."""
        host = self._host
        own_ports = [int(a.split("/")[4]) for a in self._listen_addrs if a.split("/")[3:4] == ["tcp"]]
        if host is None or self._relay is None or not own_ports:
            return
        reply: dict[str, Any] = {}
        for _attempt in range(3):  # a peer dials back at most once a second ("busy"): ask again
            try:
                reply = await relay_mod.ask_dial_back(
                    host,
                    peer,
                    swarm_tag=self._streams.tag,
                    arch_hash=self.config.options.get("arch_hash"),
                    port=own_ports[0],
                    timeout=float(self.params.dial_timeout_s),
                )
            except Exception as exc:
                logger.info("reachability check with %s failed: %r", peer, exc)
                return
            if reply.get("dial_back") != "busy":
                break
            await trio.sleep(1.1)
        net_log.info(
            "%s can dial us back: %s%s",
            peer,
            reply.get("dial_back"),
            " (it serves as a relay)" if reply.get("relay") else "",
        )
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
        own = self._bootstrapper.own if self._bootstrapper is not None else set()
        others = [t.text for t in self._bootstrap_targets if t.text not in own]
        checks = await doctor.check_all(
            host,
            others,
            swarm_tag=self._streams.tag,
            arch_hash=self.config.options.get("arch_hash"),
            dial_back_port=0,
            timeout=float(self.params.dial_timeout_s),
        )
        return doctor.hint(checks, manifest_hint)

    async def request(self, peer_id: str, message: bytes, *, timeout: float) -> bytes:
        return await pull.request(self, peer_id, message, timeout=timeout)  # /quinkgl/pull/1.0.0, see pull.py

    async def _handle_pull_stream(self, stream: INetStream) -> None:
        await pull.serve(self, stream)

    def _peer_lost(self, peer: ID) -> None:
        if self._closed:
            return
        logger.debug("lost connection to %s", peer)
        if self._on_peer_lost is not None:
            try:
                self._on_peer_lost(peer.to_base58())
            except Exception:
                logger.exception("peer-lost handler failed for %s", peer)


def create_transport(params: Libp2pParams | None, config: TransportConfig) -> Libp2pTransport:
    """The factory registered for the ``libp2p`` transport."""
    if params is not None and not isinstance(params, Libp2pParams):
        raise TransportError(f"libp2p transport params must be Libp2pParams, got {type(params).__name__}")
    return Libp2pTransport(params, config)


__all__ = ["Libp2pTransport", "create_transport"]
