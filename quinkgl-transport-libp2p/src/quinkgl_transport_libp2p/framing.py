"""Framing of the model-transfer stream protocol ``/quinkgl/model/1.0.0``.

One stream carries one payload. The exchange (sender on the left)::

    HEADER  (48 bytes: b"QGLM", version 1, 3 reserved zero bytes,
             SHA-256 of the swarm ID (32 bytes), payload length (u64, big endian))
                                                   -> receiver checks magic, version, swarm, length
                                                      against max_payload_bytes BEFORE reading more
                                            <-        1 status byte: ACCEPT, or the reason it refuses
    PAYLOAD (length bytes)
    DIGEST  (32 bytes: SHA-256 of the payload)
                                                   -> receiver hashes while reading, compares
                                            <-        1 status byte OK + the SHA-256 it computed

Why this shape:

* A sender killed mid-transfer looks like a **clean EOF** on libp2p streams, so the length prefix plus the
  trailing digest are what tell a complete payload from a truncated one; anything short is ``truncated``.
* The size cap is enforced from the header, before a single payload byte is buffered. Nothing is reserved for
  the declared length: the buffer grows with the bytes that actually arrive (``on_progress`` lets the caller
  account them against a global cap and abort).
* The sender gets an explicit answer both before (accept / refuse with a reason) and after (SHA-256 ack)
  the payload, so ``send`` only returns once the peer holds the exact bytes.
* The receiver reads continuously (Yamux fails a writer whose reader stalls for > 5 s) and every read has
  an idle deadline, so a stalled sender cannot pin a receiver forever. A trickling sender cannot either: the
  header has its own deadline, and after a grace period the payload must average ``min_rate`` bytes/s
  (``too_slow``), which also puts an overall deadline on the transfer.

Pure Python over a minimal byte-stream interface; the libp2p stream adapter lives in ``transport.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import struct
from collections.abc import Callable
from typing import Protocol

import trio

PROTOCOL_ID = "/quinkgl/model/1.0.0"

MAGIC = b"QGLM"
VERSION = 1
HEADER = struct.Struct("!4sB3x32sQ")
HEADER_SIZE = HEADER.size  # 48
DIGEST_SIZE = 32
ACK_SIZE = 1 + DIGEST_SIZE
READ_CHUNK = 4 * 1024 * 1024
WRITE_CHUNK = 1024 * 1024

# Status bytes the receiver answers with, and the reason names used in stats / errors.
ACCEPT = 0
STATUS_REASONS: dict[int, str] = {
    1: "too_large",
    2: "wrong_swarm",
    3: "bad_header",
    4: "busy",
    5: "digest_mismatch",
    6: "too_slow",
}
REASON_STATUS: dict[str, int] = {v: k for k, v in STATUS_REASONS.items()}


class ByteStream(Protocol):
    """What framing needs from a stream. ``read`` returns at most ``n`` bytes, ``b""`` only at EOF."""

    async def read(self, n: int) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


class FrameError(Exception):
    """An inbound transfer was refused or broken; ``reason`` is the counter name (e.g. ``truncated``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class SendRefused(Exception):
    """The receiver refused the payload (``reason`` as in :data:`STATUS_REASONS`) or broke the protocol."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"peer refused the payload: {reason}" + (f" ({detail})" if detail else ""))


def swarm_tag(swarm_id: str) -> bytes:
    """The 32-byte swarm tag carried in every header."""
    return hashlib.sha256(swarm_id.encode("utf-8")).digest()


def encode_header(tag: bytes, length: int) -> bytes:
    if len(tag) != 32:
        raise ValueError("swarm tag must be 32 bytes")
    if length < 0:
        raise ValueError("length must be non-negative")
    return HEADER.pack(MAGIC, VERSION, tag, length)


async def read_exactly(stream: ByteStream, n: int, *, idle_timeout: float, what: str) -> bytes:
    """Read exactly ``n`` bytes; EOF first raises ``FrameError("truncated")``, no progress ``"stalled"``."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        with trio.move_on_after(idle_timeout) as scope:
            chunk = await stream.read(n - got)
        if scope.cancelled_caught:
            raise FrameError("stalled", f"no data for {idle_timeout:g} s while reading {what}")
        if not chunk:
            raise FrameError("truncated", f"EOF after {got} of {n} bytes of {what}")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


# --------------------------------------------------------------------------------------------------------------
# Receiver
# --------------------------------------------------------------------------------------------------------------


async def receive_payload(
    stream: ByteStream,
    *,
    tag: bytes,
    max_bytes: int,
    idle_timeout: float,
    admit: Callable[[int], str | None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    header_deadline: float | None = None,
    min_rate: float = 0.0,
    grace_s: float = 0.0,
) -> bytes:
    """Run the receiver side of one transfer and return the verified payload.

    ``admit(length)`` may return a refusal reason (e.g. ``"busy"``) after the header checks pass;
    ``on_progress(n)`` is called for every chunk received and may raise :class:`FrameError` to abort.
    The header must arrive within ``header_deadline`` s; once accepted, the payload and digest must average
    ``min_rate`` bytes/s after ``grace_s`` s (else ``too_slow``), i.e. arrive within
    ``grace_s + length / min_rate`` s overall.
    Raises :class:`FrameError` with the reason on any refusal or protocol violation; when the peer can still
    be told, the refusal status has already been written.
    """
    with trio.move_on_after(header_deadline if header_deadline is not None else math.inf) as header_scope:
        raw = await read_exactly(stream, HEADER_SIZE, idle_timeout=idle_timeout, what="header")
    if header_scope.cancelled_caught:
        raise FrameError("stalled", f"no complete header within {header_deadline:g} s")
    magic, version, their_tag, length = HEADER.unpack(raw)
    reason: str | None = None
    if magic != MAGIC or version != VERSION:
        reason, detail = "bad_header", f"magic {magic!r} version {version}"
    elif their_tag != tag:
        reason, detail = "wrong_swarm", "swarm tag differs"
    elif length > max_bytes:
        reason, detail = "too_large", f"{length} bytes > max_payload_bytes {max_bytes}"
    elif admit is not None and (refusal := admit(length)) is not None:
        reason, detail = refusal, ""
    if reason is not None:
        await _try_write(stream, bytes([REASON_STATUS.get(reason, REASON_STATUS["bad_header"])]), idle_timeout)
        raise FrameError(reason, detail)

    with trio.fail_after(idle_timeout):
        await stream.write(bytes([ACCEPT]))

    buf = bytearray()  # grows with what arrives: a lying header reserves nothing
    hasher = hashlib.sha256()
    got = 0
    start = trio.current_time()
    overall = grace_s + (length + DIGEST_SIZE) / min_rate if min_rate > 0 else math.inf
    with trio.CancelScope(deadline=start + overall) as overall_scope:
        # One cancel scope whose deadline moves with every chunk (a scope per read costs more than the copy).
        with trio.CancelScope(deadline=trio.current_time() + idle_timeout) as scope:
            while got < length:
                chunk = await stream.read(min(length - got, READ_CHUNK))
                if not chunk:
                    raise FrameError("truncated", f"EOF after {got} of {length} payload bytes")
                now = trio.current_time()
                scope.deadline = now + idle_timeout
                n = len(chunk)
                if on_progress is not None:
                    on_progress(n)
                buf += chunk
                hasher.update(chunk)
                got += n
                elapsed = now - start
                if min_rate > 0 and elapsed > grace_s and got < min_rate * (elapsed - grace_s):
                    await _try_write(stream, bytes([REASON_STATUS["too_slow"]]), idle_timeout)
                    raise FrameError("too_slow", f"{got} bytes in {elapsed:.1f} s (minimum {min_rate:g} bytes/s)")
        if scope.cancelled_caught:
            raise FrameError("stalled", f"no data for {idle_timeout:g} s at {got} of {length} payload bytes")
        trailer = await read_exactly(stream, DIGEST_SIZE, idle_timeout=idle_timeout, what="digest")
    if overall_scope.cancelled_caught:
        raise FrameError("too_slow", f"{got} of {length} bytes within the overall deadline of {overall:.1f} s")
    digest = hasher.digest()
    if trailer != digest:
        await _try_write(stream, bytes([REASON_STATUS["digest_mismatch"]]) + digest, idle_timeout)
        raise FrameError("digest_mismatch", "payload SHA-256 differs from the sender's")
    with trio.fail_after(idle_timeout):
        await stream.write(bytes([ACCEPT]) + digest)
    return bytes(buf)


async def _try_write(stream: ByteStream, data: bytes, timeout: float) -> None:
    with trio.move_on_after(min(timeout, 2.0)):
        with contextlib.suppress(Exception):  # the peer may already be gone; the refusal is counted either way
            await stream.write(data)


# --------------------------------------------------------------------------------------------------------------
# Sender
# --------------------------------------------------------------------------------------------------------------


async def send_payload(stream: ByteStream, payload: bytes, *, tag: bytes) -> str:
    """Run the sender side of one transfer; return the hex SHA-256 the receiver acknowledged.

    The caller bounds the whole call with its own deadline. Raises :class:`SendRefused` when the receiver
    refuses or answers anything but the matching digest, :class:`FrameError` (``truncated``) when the
    receiver hangs up.
    """
    digest = hashlib.sha256(payload).digest()
    await stream.write(encode_header(tag, len(payload)))
    status = (await read_exactly(stream, 1, idle_timeout=float("inf"), what="accept status"))[0]
    if status != ACCEPT:
        raise SendRefused(STATUS_REASONS.get(status, f"status {status}"))
    view = memoryview(payload)
    for start in range(0, len(payload), WRITE_CHUNK):
        await stream.write(bytes(view[start : start + WRITE_CHUNK]))
    await stream.write(digest)
    ack = await read_exactly(stream, ACK_SIZE, idle_timeout=float("inf"), what="acknowledgement")
    if ack[0] != ACCEPT:
        raise SendRefused(STATUS_REASONS.get(ack[0], f"status {ack[0]}"))
    if ack[1:] != digest:
        raise SendRefused("digest_mismatch", "acknowledged SHA-256 differs from the payload's")
    return digest.hex()
