"""``/quinkgl/hello/1.0.0``: "are we in the same swarm, and can you reach me?" — for ``quinkgl doctor``.

Every running peer answers it. The asker sends one JSON object (at most :data:`MAX_MESSAGE` bytes)::

    {"swarm_tag": "<hex SHA-256 of the asker's swarm ID>", "arch_hash": "sha256:…", "dial_back": <port or 0>}

and the answerer replies with one JSON object and closes the stream::

    {"quinkgl": 1, "same_swarm": bool, "same_arch": bool | null, "relay": bool, "observed": "<ip>:<port>",
     "dial_back": "ok" | "refused" | "timed out" | "unreachable" | "not asked" | "busy"}

The answerer reveals only yes/no answers about the asker's own values (never its swarm ID or arch hash), its
view of the asker's address, and whether it serves as a relay. ``dial_back`` asks the answerer to open a plain
TCP connection (no data sent) to the *asker's own observed IP* at that port: it tells the asker whether it is
reachable from outside. It is never directed at another IP, runs at most once per second per answerer and within
2 s, so it cannot be used to make a peer scan third parties.

Pure trio + JSON; the libp2p stream is passed in by the transport.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import trio

PROTOCOL_ID = "/quinkgl/hello/1.0.0"
MAX_MESSAGE = 1024
DIAL_BACK_TIMEOUT_S = 2.0

logger = logging.getLogger(__name__)


async def read_message(stream: Any, timeout: float) -> dict[str, Any]:
    """Read one JSON object (until EOF, at most :data:`MAX_MESSAGE` bytes) within ``timeout``."""
    data = b""
    with trio.fail_after(timeout):
        while len(data) <= MAX_MESSAGE:
            try:
                chunk = await stream.read(MAX_MESSAGE + 1 - len(data))
            except Exception:  # StreamEOF and resets end the message
                break
            if not chunk:
                break
            data += chunk
            if data.endswith(b"\n"):
                break
    if len(data) > MAX_MESSAGE:
        raise ValueError("hello message too long")
    value = json.loads(data.decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError("hello message is not an object")
    return value


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode() + b"\n"


async def tcp_probe(ip: str, port: int, timeout: float) -> str:
    """``ok``, ``refused``, ``timed out``, ``unreachable`` or ``error: …`` for a plain TCP connect."""
    family = trio.socket.AF_INET6 if ":" in ip else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        with trio.fail_after(timeout):
            await sock.connect((ip, port))
        return "ok"
    except trio.TooSlowError:
        return "timed out"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
            return "unreachable"
        return f"error: {exc.strerror or exc}"
    finally:
        sock.close()


class HelloResponder:
    """The answering side, bound to one peer's swarm tag, arch hash and relay role."""

    def __init__(self, swarm_tag: bytes, arch_hash: str | None, relay: Callable[[], bool]) -> None:
        self._swarm_tag = swarm_tag.hex()
        self._arch_hash = arch_hash
        self._relay = relay
        self._last_dial_back = 0.0

    async def handle(self, stream: Any) -> None:
        try:
            request = await read_message(stream, timeout=5.0)
            observed = _observed(stream)
            reply: dict[str, Any] = {
                "quinkgl": 1,
                "same_swarm": request.get("swarm_tag") == self._swarm_tag,
                "same_arch": None if self._arch_hash is None else request.get("arch_hash") == self._arch_hash,
                "relay": bool(self._relay()),
                "observed": f"{observed[0]}:{observed[1]}" if observed else "",
                "dial_back": "not asked",
            }
            port = request.get("dial_back")
            if isinstance(port, int) and 0 < port < 65536 and observed:
                now = time.monotonic()
                if now - self._last_dial_back < 1.0:
                    reply["dial_back"] = "busy"
                else:
                    self._last_dial_back = now
                    reply["dial_back"] = await tcp_probe(observed[0], port, DIAL_BACK_TIMEOUT_S)
            await stream.write(encode(reply))
            await stream.close()
        except Exception as exc:  # a bad request ends this stream only
            logger.debug("hello from a peer failed: %r", exc)
            with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
                await stream.reset()


def _observed(stream: Any) -> tuple[str, int] | None:
    """The remote (ip, port) of the stream's raw connection, when the library exposes it."""
    try:
        remote = stream.get_remote_address()
    except Exception:
        remote = None
    if remote:
        return str(remote[0]), int(remote[1])
    return None


__all__ = ["MAX_MESSAGE", "PROTOCOL_ID", "HelloResponder", "encode", "read_message", "tcp_probe"]
