"""Throughput of a ~50 MB model payload over the libp2p transport vs a raw libp2p stream of the same bytes.

Both run in this one process (two peers on 127.0.0.1, same Noise + Yamux connection, same run):

* ``framing``: ``Libp2pTransport.send`` — header, accept, payload, SHA-256 digest, SHA-256 acknowledgement
  (includes hashing on both sides and handing the bytes to the receiver's handler).
* ``raw``: a bare stream on the same connection — write the bytes, half-close, the receiver reads to EOF and
  answers one byte.

Usage: python bench/bench_libp2p_transfer.py [--mb 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time

import trio

from quinkgl.transport import TransportConfig
from quinkgl_transport_libp2p.params import Libp2pParams

RAW_PROTOCOL = "/quinkgl-bench/raw/1.0.0"


async def main(mb: int, repeat: int) -> None:
    from libp2p.network.stream.exceptions import StreamEOF
    from libp2p.peer.id import ID

    from quinkgl_transport_libp2p.transport import Libp2pTransport

    payload = os.urandom(mb * 1024 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    registry = tempfile.mkdtemp(prefix="qgl-bench-registry-")
    received: list[bytes] = []
    arrived = trio.Event()

    def make(name: str) -> Libp2pTransport:
        cfg = TransportConfig(
            swarm_id="sha256:" + "be" * 32,
            node_id=name,
            max_payload_bytes=len(payload) + 1,
            options={"registry_dir": registry},
        )
        t = Libp2pTransport(Libp2pParams(), cfg)
        t.set_handlers(on_announcement=lambda s, d: None, on_payload=lambda s, p: received.append(p))
        return t

    async def raw_handler(stream) -> None:
        total = 0
        while True:
            try:
                chunk = await stream.read(4 * 1024 * 1024)
            except StreamEOF:
                break
            if not chunk:
                break
            total += len(chunk)
        await stream.write(b"\x01")
        await stream.close()
        arrived.set()

    a, b = make("a"), make("b")
    async with a, b:
        b.host.set_stream_handler(RAW_PROTOCOL, raw_handler)
        await a.wait_connected([b.peer_id], timeout=10)
        target = ID.from_base58(b.peer_id)
        framed, raw = [], []
        for _ in range(repeat):
            received.clear()
            t0 = time.perf_counter()
            await a.send(b.peer_id, payload, timeout=120)
            framed.append(time.perf_counter() - t0)
            assert hashlib.sha256(received[0]).hexdigest() == digest

            t0 = time.perf_counter()
            stream = await a.host.new_stream(target, [RAW_PROTOCOL])
            view = memoryview(payload)
            for start in range(0, len(payload), 1024 * 1024):
                await stream.write(bytes(view[start : start + 1024 * 1024]))
            await stream.close_write()
            ack = await stream.read(1)
            raw.append(time.perf_counter() - t0)
            assert ack == b"\x01"
            await stream.close()

    size_mb = len(payload) / 1e6
    for name, times in (("framing (/quinkgl/model/1.0.0, SHA-256 ack)", framed), ("raw libp2p stream", raw)):
        med = statistics.median(times)
        runs = ", ".join(f"{size_mb / t:.0f}" for t in times)
        print(f"{name:45s} median {size_mb / med:6.1f} MB/s  ({med:.3f} s for {size_mb:.1f} MB; runs MB/s: {runs})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trio.run(main, args.mb, args.repeat)
