"""Guards around py-libp2p 0.8.1 for hostile input on any protocol and for connection churn.

**Malformed input.** py-libp2p's stream handlers catch only the exceptions they expect: a malformed protobuf
on ``/meshsub/1.1.0`` (six bytes ``0a ff ff ff ff 0f``, varint-framed) raises ``DecodeError`` out of pubsub's
read loop, which takes the Swarm service down and leaves the peer deaf. :func:`install_stream_guard` wraps
every stream handler of the host, now and registered later, so that any exception escaping a handler resets
that stream, closes the connection to the peer that sent it and is counted (``rpc_malformed``) — the host
keeps running. Pubsub tasks that parse a message are guarded the same way in :mod:`.announce`. An exception
caused by the connection going away under the handler (a peer that leaves while gossipsub answers it: mplex
raises a bare ``RuntimeError`` from a ``MuxedConnUnavailable``) is a disconnect, not input: the stream is reset
and the peer dropped the same way, but it is neither counted nor logged as malformed (:func:`is_disconnect`).

**Inbound slots.** The Swarm takes an inbound slot (250 of them) per accepted connection and gives it back
only when the whole swarm stops: its inbound handler waits for the swarm's end rather than the connection's.
So 250 connect/disconnect cycles lock a peer out of every later inbound connection. :func:`release_inbound_slots`
replaces that handler on one swarm instance: identical up to the upgrade, it then waits for *this*
connection to close, so the slot is released with the connection.
"""

from __future__ import annotations

import contextlib
import logging
import types
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import IHost, IMuxedConn, INetStream
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.network.connection.exceptions import RawConnError
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.stream.exceptions import StreamError
from libp2p.stream_muxer.exceptions import MuxedConnError, MuxedStreamError

logger = logging.getLogger(__name__)

StreamHandler = Callable[[INetStream], Awaitable[None]]
OnMalformed = Callable[[str, Any, BaseException], None]


# A connection that went away: not something the peer sent. Size caps and truncated frames
# (MsgioException, IncompleteReadError) are input and stay malformed.
_DISCONNECTS = (
    MuxedConnError,
    MuxedStreamError,
    StreamError,
    ConnectionClosedError,
    RawConnError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    ConnectionError,
)


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it was raised from (``__cause__``/``__context__``, a few links deep) is the
    connection going away rather than malformed input."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, _DISCONNECTS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _peer_of(stream: INetStream) -> Any:
    return getattr(getattr(stream, "muxed_conn", None), "peer_id", None)


def guard_handler(host: IHost, protocol: str, handler: StreamHandler, on_malformed: OnMalformed) -> StreamHandler:
    """``handler`` with every escaping exception turned into: reset the stream, drop the peer, count it."""
    if getattr(handler, "__quinkgl_guarded__", False):
        return handler

    async def guarded(stream: INetStream) -> None:
        try:
            await handler(stream)
        except Exception as exc:
            peer = _peer_of(stream)
            if is_disconnect(exc):
                logger.debug("peer %s went away during %s (%s)", peer, protocol, type(exc).__name__)
            else:
                try:
                    on_malformed(protocol, peer, exc)
                except Exception:
                    logger.exception("counting a malformed stream failed")
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                with contextlib.suppress(Exception):
                    await stream.reset()
                if peer is not None:
                    with contextlib.suppress(Exception):
                        await host.get_network().close_peer(peer)

    guarded.__quinkgl_guarded__ = True  # type: ignore[attr-defined]
    return guarded


class _GuardedHandlers(dict):
    """Multiselect's protocol -> handler table that guards every handler stored in it."""

    def __init__(self, host: IHost, on_malformed: OnMalformed, initial: dict[Any, Any]) -> None:
        super().__init__()
        self._host = host
        self._on_malformed = on_malformed
        for protocol, handler in initial.items():
            self[protocol] = handler

    def __setitem__(self, protocol: Any, handler: Any) -> None:
        if handler is not None and protocol is not None:
            handler = guard_handler(self._host, str(protocol), handler, self._on_malformed)
        super().__setitem__(protocol, handler)


def install_stream_guard(host: IHost, on_malformed: OnMalformed) -> None:
    """Guard every stream handler of ``host``: those registered now and any registered later."""
    mux = host.get_mux()
    handlers = getattr(mux, "handlers", None)
    if not isinstance(handlers, dict):  # pragma: no cover - py-libp2p is pinned
        raise RuntimeError("py-libp2p's multiselect has no handler table; the stream guard cannot be installed")
    mux.handlers = _GuardedHandlers(host, on_malformed, dict(handlers))


async def _handle_inbound_until_closed(self: Any, read_write_closer: Any, maddr: Any, failure_event: Any) -> None:
    """``Swarm._do_handle_inbound_connection`` of py-libp2p 0.8.1, waiting for the connection's end instead of
    the swarm's (the caller releases the inbound slot when this returns)."""
    remote_maddr = self._build_remote_multiaddr(read_write_closer)
    if remote_maddr is not None and not await self.connection_gate.is_allowed(remote_maddr):
        with contextlib.suppress(Exception):
            await read_write_closer.close()
        return
    if isinstance(read_write_closer, IMuxedConn):  # pre-multiplexed transports (QUIC): not used here
        await self.__quinkgl_original_inbound__(read_write_closer, maddr, failure_event)
        return
    raw_conn = None
    try:
        raw_conn = RawConnection(read_write_closer, False)
        muxed = await self.upgrade_inbound_raw_conn(raw_conn, maddr)
    except Exception as exc:
        logger.debug("inbound connection failed during the upgrade: %r", exc)
        with contextlib.suppress(Exception):
            await (raw_conn if raw_conn is not None else read_write_closer).close()
        return
    closed = getattr(muxed, "event_closed", None)
    if isinstance(closed, trio.Event):
        async with trio.open_nursery() as nursery:

            async def _swarm_end() -> None:
                await self.manager.wait_finished()
                nursery.cancel_scope.cancel()

            nursery.start_soon(_swarm_end)
            await closed.wait()
            nursery.cancel_scope.cancel()
    else:  # pragma: no cover - every muxer of 0.8.1 has event_closed
        await self.manager.wait_finished()


def release_inbound_slots(swarm: Any) -> None:
    """Make ``swarm`` give an inbound slot back when that connection closes (see the module docstring)."""
    if getattr(swarm, "__quinkgl_original_inbound__", None) is not None:
        return
    original = getattr(swarm, "_do_handle_inbound_connection", None)
    if original is None or not hasattr(swarm, "_inbound_limiter"):  # pragma: no cover - py-libp2p is pinned
        raise RuntimeError("py-libp2p's Swarm has no inbound handler to patch; the slot-leak fix cannot apply")
    swarm.__quinkgl_original_inbound__ = original
    swarm._do_handle_inbound_connection = types.MethodType(_handle_inbound_until_closed, swarm)


def inbound_slots_in_use(swarm: Any) -> int:
    """How many inbound slots the swarm holds now (for tests and diagnostics)."""
    limiter = getattr(swarm, "_inbound_limiter", None)
    return int(limiter.borrowed_tokens) if limiter is not None else 0
