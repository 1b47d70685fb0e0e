"""The request/response stream protocol ``/quinkgl/pull/1.0.0``: :meth:`Libp2pTransport.request` and its server.

One stream carries one request and its answer (requester on the left)::

    REQUEST HEADER (40 bytes: b"QGLP", version 1, 3 reserved zero bytes,
                    SHA-256 of the swarm ID (32 bytes), request length (u32, big endian))
    REQUEST        (length bytes, at most quinkgl.transport.MAX_REQUEST_BYTES)
                                                -> server checks magic, version, swarm and length BEFORE
                                                   reading the request, then runs the request handler
                                                   (which may wait until it has the asked-for model)
                                         <-        1 status byte: OK, or a refusal followed by
                                                   1 length byte + the reason (UTF-8, at most 255 bytes)
    then, after OK, one ``/quinkgl/model/1.0.0`` transfer (see :mod:`.framing`) with the roles reversed:
    the server sends the response, the requester receives it under its own max_payload_bytes (checked from
    the header, before any response byte is read) and acknowledges its SHA-256.

Deadlines: the requester bounds the whole exchange with ``request``'s timeout; the server reads the request
within the stream idle timeout, gives the handler at most :data:`SERVE_TIMEOUT_S`, and serves at most
:data:`MAX_ACTIVE_PER_PEER` requests of one peer at a time (more are refused as ``busy``).

The transport object is used through a few attributes (host, tag, config, params, counters, the handler);
keeping this protocol in its own module leaves ``transport.py`` with a two-line hook per direction.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import time
from collections import Counter
from typing import TYPE_CHECKING

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from quinkgl.transport import MAX_REQUEST_BYTES, RequestRefused, TransportError

from . import framing

if TYPE_CHECKING:
    from .transport import Libp2pTransport

logger = logging.getLogger(__name__)

PROTOCOL_ID = "/quinkgl/pull/1.0.0"
MAGIC = b"QGLP"
VERSION = 1
HEADER = struct.Struct("!4sB3x32sI")
OK = 0
REFUSED = 1
SERVE_TIMEOUT_S = 600.0  # the runtime bounds its handler by --gossip-interval; this is the transport's backstop
MAX_ACTIVE_PER_PEER = 4

_active: Counter[tuple[int, ID]] = Counter()  # (id(transport), peer) -> requests being served


class _Stream:
    """A libp2p stream as a :class:`framing.ByteStream` (``b""`` at EOF, other failures as ``aborted``)."""

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

    async def finish(self, ok: bool) -> None:
        """Close after a complete exchange, reset otherwise; shielded and bounded (2 s)."""
        # the peer may already be gone: nothing to do then
        with trio.CancelScope(shield=True), trio.move_on_after(2), contextlib.suppress(Exception):
            await (self._stream.close() if ok else self._stream.reset())


# --------------------------------------------------------------------------------------------------------------
# Requester
# --------------------------------------------------------------------------------------------------------------


async def request(transport: Libp2pTransport, peer_id: str, message: bytes, *, timeout: float) -> bytes:
    """:meth:`quinkgl.transport.Transport.request` over libp2p."""
    host = transport._host
    if host is None or transport._closed:
        raise TransportError("the transport is not running")
    if len(message) > MAX_REQUEST_BYTES:
        raise TransportError(f"request of {len(message)} bytes exceeds {MAX_REQUEST_BYTES}")
    try:
        target = ID.from_base58(peer_id)
    except Exception as exc:
        raise TransportError(f"{peer_id!r} is not a libp2p peer ID") from exc
    if target == host.get_id():
        raise TransportError("cannot send a request to this peer itself")
    started = time.monotonic()
    opening = False
    with trio.move_on_after(max(timeout, 0.0)):
        try:
            await transport._dialler.ensure_connected(host, target)
            opening = True
            stream = _Stream(await host.new_stream(target, [PROTOCOL_ID]))  # type: ignore[list-item]
            opening = False
        except TransportError:
            raise
        except Exception as exc:
            await transport._drop_connection(host, target, "no stream could be opened on it")
            raise TransportError(f"cannot open a pull stream to {peer_id}: {exc}") from exc
        ok = False
        try:
            response = await _exchange(transport, stream, message, peer_id)
            ok = True
        except framing.FrameError as exc:
            transport._reject(f"response_{exc.reason}")
            raise TransportError(f"request to {peer_id} failed: {exc}") from None
        finally:
            await stream.finish(ok)
        transport._streams.bytes_sent += len(message)
        transport._streams.bytes_received += len(response)
        transport._streams.payloads_received += 1
        return response
    if opening and not transport._relays_for_us(peer_id):
        # Connected, yet not even a stream opened in the whole deadline: after an outage (a cut link) the session
        # stays "established" while TCP backs off; a fresh dial recovers at once when the link is back. Never
        # the connection to a relay holding our slot (that would drop our relayed address).
        await transport._drop_connection(host, target, "no pull stream opened on it in time")
    raise TransportError(f"request to {peer_id} timed out after {time.monotonic() - started:.2f} s")


async def _exchange(transport: Libp2pTransport, stream: _Stream, message: bytes, peer_id: str) -> bytes:
    await stream.write(HEADER.pack(MAGIC, VERSION, transport._streams.tag, len(message)) + message)
    status = (await framing.read_exactly(stream, 1, idle_timeout=float("inf"), what="request status"))[0]
    if status != OK:
        idle = float(transport.params.stream_idle_timeout_s)
        size = (await framing.read_exactly(stream, 1, idle_timeout=idle, what="refusal"))[0]
        reason = (await framing.read_exactly(stream, size, idle_timeout=idle, what="refusal")) if size else b""
        raise TransportError(f"peer {peer_id} refused the request: {reason.decode('utf-8', 'replace') or status}")
    return await framing.receive_payload(
        stream,
        tag=transport._streams.tag,
        max_bytes=transport.config.max_payload_bytes,
        idle_timeout=float(transport.params.stream_idle_timeout_s),
    )


# --------------------------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------------------------


async def serve(transport: Libp2pTransport, raw: INetStream) -> None:
    """Answer one inbound request stream; every failure is counted (``request_*``), never raised."""
    peer = raw.muxed_conn.peer_id
    stream = _Stream(raw)
    key = (id(transport), peer)
    ok = False
    _active[key] += 1
    try:
        if not transport._streams.admitted(peer):  # before reading a byte: a peer outside the view gets nothing
            transport._reject("not_admitted")
            return
        if _active[key] > MAX_ACTIVE_PER_PEER:
            await _refuse(stream, "busy")
            transport._reject("request_busy")
            ok = True  # close, not reset: a reset may discard the refusal before the requester reads it
            return
        message = await _read_request(transport, stream)
        if message is None:
            ok = True
            return
        response = await _answer(transport, peer, message)
        if isinstance(response, str):
            await _refuse(stream, response)
            ok = True
            return
        await stream.write(bytes([OK]))
        await framing.send_payload(stream, response, tag=transport._streams.tag)
        transport._streams.bytes_sent += len(response)
        transport._streams.payloads_sent += 1
        ok = True
    except (framing.FrameError, framing.SendRefused, trio.TooSlowError) as exc:
        transport._reject("request_aborted")
        logger.info("pull request from %s broke off: %s", peer, exc)
    except Exception as exc:  # never let a broken stream escape into libp2p's tasks
        transport._reject("request_error")
        logger.warning("pull request from %s failed: %r", peer, exc)
    finally:
        _active[key] -= 1
        if _active[key] <= 0:
            del _active[key]
        await stream.finish(ok)


async def _read_request(transport: Libp2pTransport, stream: _Stream) -> bytes | None:
    idle = float(transport.params.stream_idle_timeout_s)
    raw = await framing.read_exactly(stream, HEADER.size, idle_timeout=idle, what="request header")
    magic, version, tag, length = HEADER.unpack(raw)
    reason = None
    if magic != MAGIC or version != VERSION:
        reason = "bad_header"
    elif tag != transport._streams.tag:
        reason = "wrong_swarm"
    elif length > MAX_REQUEST_BYTES:
        reason = "too_large"
    if reason is not None:
        transport._reject(f"request_{reason}")
        await _refuse(stream, reason)
        return None
    message = await framing.read_exactly(stream, length, idle_timeout=idle, what="request") if length else b""
    transport._streams.bytes_received += HEADER.size + length
    return message


async def _answer(transport: Libp2pTransport, peer: ID, message: bytes) -> bytes | str:
    """The handler's response, or the reason it refused."""
    handler = transport._on_request
    if handler is None:
        return "no request handler"
    try:
        with trio.fail_after(SERVE_TIMEOUT_S):
            response = await handler(peer.to_base58(), message)
    except RequestRefused as exc:
        logger.debug("refused a pull request from %s: %s", peer, exc)
        return str(exc)
    return bytes(response)


async def _refuse(stream: _Stream, reason: str) -> None:
    text = reason.encode("utf-8")[:255]
    with trio.move_on_after(2.0):
        with contextlib.suppress(framing.FrameError):
            await stream.write(bytes([REFUSED, len(text)]) + text)
