"""The model stream ``/quinkgl/model/1.0.0`` over libp2p: the stream adapter, inbound admission and sending.

:mod:`.framing` defines the byte protocol over a minimal stream interface; this module binds it to libp2p
streams. :class:`ModelStreams` handles every inbound model stream (admission, caps, counting, delivery to the
application) and opens outbound ones on an existing connection (dialling is :mod:`.dialling`'s job).

Inbound admission, in order, before the bytes named are read (bounds in :class:`.limits.NetworkLimits`):

1. ``admits(peer)`` (the runtime's view: a peer that has announced our swarm and architecture) — else the
   stream is reset before a single byte is read (``not_admitted``);
2. a global cap on transfers in progress and a per-peer one — else ``busy`` is answered, again before the
   header is read;
3. the header (within a deadline) and its checks — swarm, size cap;
4. the payload, buffered incrementally (nothing reserved for the declared size) and counted against a global
   cap on buffered bytes, at a minimum average rate, i.e. within an overall deadline.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable

import trio
from libp2p.abc import IHost, INetStream
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from quinkgl.transport import PayloadHandler, TransportConfig, TransportError

from . import framing
from .limits import NetworkLimits
from .params import Libp2pParams

logger = logging.getLogger(__name__)


async def finish_stream(stream: INetStream, ok: bool) -> None:
    """Close a stream after a complete exchange, reset it otherwise; shielded and bounded (2 s)."""
    with trio.CancelScope(shield=True), trio.move_on_after(2):
        try:
            if ok:
                await stream.close()
            else:
                await stream.reset()
        except Exception:  # the peer may already be gone; nothing more to do
            pass


class StreamAdapter:
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


class ModelStreams:
    """Inbound and outbound model transfers of one transport.

    ``reject(reason)`` counts a refusal; ``on_payload()`` returns the application's payload handler (looked up
    at delivery time, since handlers may be set after start).
    """

    def __init__(
        self,
        *,
        params: Libp2pParams,
        config: TransportConfig,
        reject: Callable[[str], None],
        on_payload: Callable[[], PayloadHandler | None],
        admits: Callable[[], Callable[[str], bool] | None] = lambda: None,
        limits: NetworkLimits | None = None,
    ) -> None:
        self.params = params
        self.config = config
        self.limits = limits if limits is not None else NetworkLimits()
        self.tag = framing.swarm_tag(config.swarm_id)
        self._reject = reject
        self._on_payload = on_payload
        self._admits = admits
        self._inbound_active: Counter[ID] = Counter()
        self.inbound_total = 0  # transfers in progress, all peers together
        self.buffered_bytes = 0  # payload bytes held by transfers in progress
        self.peak_buffered_bytes = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.payloads_sent = 0
        self.payloads_received = 0

    # ---------------------------------------------------------------------------------------------------------
    # Outbound
    # ---------------------------------------------------------------------------------------------------------

    async def send(self, host: IHost, target: ID, payload: bytes) -> None:
        """Send ``payload`` to a connected ``target`` on a new model stream (the caller bounds the time)."""
        try:
            stream = await host.new_stream(target, [framing.PROTOCOL_ID])  # type: ignore[list-item]
        except Exception as exc:
            raise TransportError(f"cannot open a model stream to {target}: {exc}") from exc
        ok = False
        try:
            await framing.send_payload(StreamAdapter(stream), payload, tag=self.tag)
            ok = True
        finally:
            await finish_stream(stream, ok)
        self.payloads_sent += 1
        self.bytes_sent += len(payload)

    # ---------------------------------------------------------------------------------------------------------
    # Inbound
    # ---------------------------------------------------------------------------------------------------------

    def admitted(self, peer: ID) -> bool:
        """Whether the runtime admits ``peer`` (always, until it installs a predicate)."""
        admits = self._admits()
        if admits is None:
            return True
        try:
            return bool(admits(peer.to_base58()))
        except Exception:
            logger.exception("the admission predicate failed for %s", peer)
            return False

    async def handle(self, stream: INetStream) -> None:
        """The stream handler registered for :data:`framing.PROTOCOL_ID`."""
        peer = stream.muxed_conn.peer_id
        if not self.admitted(peer):
            self._reject("not_admitted")
            logger.info("refused a model stream from %s: not a peer of this swarm's view", peer)
            await finish_stream(stream, False)
            return
        adapter = StreamAdapter(stream)
        limits = self.limits
        if (
            self.inbound_total >= limits.inbound_max_concurrent
            or self._inbound_active[peer] >= self.params.max_inbound_transfers_per_peer
        ):
            self._reject("payload_busy")
            with trio.move_on_after(2):
                with contextlib.suppress(framing.FrameError):
                    await adapter.write(bytes([framing.REASON_STATUS["busy"]]))
            await finish_stream(stream, True)  # close (not reset), so the sender reads the "busy" status
            return
        self.inbound_total += 1
        self._inbound_active[peer] += 1
        held = 0

        def progress(n: int) -> None:
            nonlocal held
            if self.buffered_bytes + n > limits.inbound_max_buffered_bytes:
                raise framing.FrameError("busy", f"{self.buffered_bytes} bytes buffered by inbound transfers")
            held += n
            self.buffered_bytes += n
            self.peak_buffered_bytes = max(self.peak_buffered_bytes, self.buffered_bytes)

        ok = False
        payload = b""
        try:
            payload = await framing.receive_payload(
                adapter,
                tag=self.tag,
                max_bytes=self.config.max_payload_bytes,
                idle_timeout=float(self.params.stream_idle_timeout_s),
                on_progress=progress,
                header_deadline=limits.inbound_header_deadline_s,
                min_rate=limits.inbound_min_rate,
                grace_s=limits.inbound_grace_s,
            )
            ok = True
        except framing.FrameError as exc:
            self._reject(f"payload_{exc.reason}")
            if exc.reason == "bad_header":
                self._reject("rpc_malformed")
            logger.info("refused a model transfer from %s: %s", peer, exc.reason)
        except trio.TooSlowError:
            self._reject("payload_stalled")
            logger.info("model transfer from %s stalled", peer)
        except Exception as exc:  # never let a broken stream escape into libp2p's tasks
            self._reject("payload_error")
            logger.warning("model transfer from %s failed: %r", peer, exc)
        finally:
            self.buffered_bytes -= held
            self.inbound_total -= 1
            self._inbound_active[peer] -= 1
            if self._inbound_active[peer] <= 0:
                del self._inbound_active[peer]
            await finish_stream(stream, ok)
        if not ok:
            return
        self.payloads_received += 1
        self.bytes_received += len(payload)
        handler = self._on_payload()
        if handler is not None:
            try:
                handler(peer.to_base58(), payload)
            except Exception:
                logger.exception("payload handler failed for a payload from %s", peer)
