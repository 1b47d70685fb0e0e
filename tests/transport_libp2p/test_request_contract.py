"""The request/response part of the transport contract (``Transport.request`` + ``on_request``), run against
both transports: the in-process memory hub and libp2p over loopback (``/quinkgl/pull/1.0.0``)."""

from __future__ import annotations

import itertools
from contextlib import asynccontextmanager

import pytest
import trio
from transport_libp2p.p2p_helpers import SWARM, make_transport, run

from quinkgl.transport import MAX_REQUEST_BYTES, RequestRefused, TransportConfig, TransportError

_hubs = itertools.count()


@asynccontextmanager
async def pair(kind, tmp_path, handler, *, max_payload_bytes=1 << 20):
    """Two started transports of ``kind``, connected; ``b`` answers requests with ``handler``."""
    if kind == "memory":
        from quinkgl.transports.memory import MemoryParams, MemoryTransport

        hub = f"contract-{next(_hubs)}"
        a, b = (
            MemoryTransport(
                MemoryParams(hub=hub), TransportConfig(swarm_id=SWARM, node_id=n, max_payload_bytes=max_payload_bytes)
            )
            for n in ("a", "b")
        )
    else:
        registry = tmp_path / "registry"
        registry.mkdir(exist_ok=True)
        a, _ = make_transport(name="a", registry_dir=registry, max_payload_bytes=max_payload_bytes)
        b, _ = make_transport(name="b", registry_dir=registry, max_payload_bytes=max_payload_bytes)
    for t in (a, b):
        t.set_handlers(
            on_announcement=lambda s, d: None, on_payload=lambda s, d: None, on_request=handler if t is b else None
        )
    async with a, b:
        if kind == "libp2p":
            await a.wait_connected([b.peer_id], timeout=10)
        yield a, b


KINDS = ["memory", "libp2p"]


@pytest.mark.parametrize("kind", KINDS)
def test_request_returns_the_handlers_answer_with_the_authenticated_sender(kind, tmp_path):
    seen = []

    async def handler(sender, message):
        seen.append((sender, message))
        return b"answer:" + message

    async def main():
        async with pair(kind, tmp_path, handler) as (a, b):
            assert await a.request(b.peer_id, b"hello", timeout=10) == b"answer:hello"
            assert seen == [(a.peer_id, b"hello")]
            assert a.stats().bytes_received >= len(b"answer:hello")

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_a_handler_may_wait_before_answering(kind, tmp_path):
    ready = trio.Event()

    async def handler(sender, message):
        await ready.wait()
        return b"x" * 200_000

    async def main():
        async with pair(kind, tmp_path, handler) as (a, b):
            async with trio.open_nursery() as nursery:
                result = []

                async def ask():
                    result.append(await a.request(b.peer_id, b"r", timeout=20))

                nursery.start_soon(ask)
                await trio.sleep(0.2)  # not synchronisation: the request must simply still be pending
                assert not result
                ready.set()
            assert result == [b"x" * 200_000]

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_refusals_oversized_requests_and_responses_raise_transport_error(kind, tmp_path):
    async def handler(sender, message):
        if message == b"no":
            raise RequestRefused("behind", "not trained yet")
        if message == b"big":
            return b"y" * (2 << 20)  # over the requester's 1 MiB max_payload_bytes
        return b"ok"

    async def main():
        async with pair(kind, tmp_path, handler) as (a, b):
            with pytest.raises(TransportError, match="behind"):
                await a.request(b.peer_id, b"no", timeout=10)
            with pytest.raises(TransportError):
                await a.request(b.peer_id, b"z" * (MAX_REQUEST_BYTES + 1), timeout=10)
            with pytest.raises(TransportError):
                await a.request(b.peer_id, b"big", timeout=10)
            with pytest.raises(TransportError, match="no request handler"):
                await b.request(a.peer_id, b"q", timeout=10)
            assert await a.request(b.peer_id, b"fine", timeout=10) == b"ok"  # the pair still works

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_a_source_that_never_answers_costs_the_timeout_and_no_more(kind, tmp_path):
    async def handler(sender, message):
        await trio.sleep_forever()

    async def main():
        async with pair(kind, tmp_path, handler) as (a, b):
            started = trio.current_time()
            with pytest.raises(TransportError, match="timed out"):
                await a.request(b.peer_id, b"r", timeout=1.0)
            assert trio.current_time() - started < 10  # bounded (generous under load)
            with pytest.raises(TransportError):
                await a.request("mem-nobody" if kind == "memory" else b.peer_id[:-3] + "abc", b"r", timeout=2)

    run(main)
