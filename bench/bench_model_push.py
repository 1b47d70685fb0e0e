"""Model push throughput between two peer processes: the framework path next to a raw libp2p stream.

The script is the sender; it starts a receiver (this file again, ``--role receiver``) as a subprocess. Both run
a ``Libp2pTransport`` on 127.0.0.1 and find each other through a temporary same-machine registry directory; the
receiver prints ``READY <peer id>`` on stdout, which the sender reads with a bounded timeout. Both build the same
float32 state dict from ``--seed`` (``--mb`` MB of 1024x1024 weights plus 1024-element biases), so the receiver
knows the expected spec.

Per push (one warm-up, then ``--repeat`` timed pushes; the two paths alternate within each iteration):

* ``framework``: timed on the sender from "start serialize" to "receiver confirms decoded":
  ``wire.encode_update`` (in a worker thread, as the runtime does) -> ``Libp2pTransport.send`` (framing header,
  accept, payload, SHA-256 digest and SHA-256 ack; returns once the receiver holds the exact bytes) -> the
  receiver's payload handler queues it, a task runs ``wire.decode_update`` in a worker thread (size cap, header
  and payload digests, safetensors layout vs spec, NaN/Inf check) and then confirms with a tiny payload sent back
  over the same transport, carrying its own decode time. That confirmation costs one small ``send`` (new Yamux
  stream, two framing round trips on loopback); ``confirm RTT`` below measures exactly that on its own (tiny
  ping -> tiny reply) so its share can be subtracted by eye.
* ``raw``: the same encoded bytes over a bare libp2p stream on the same connection (protocol
  ``/quinkgl-bench/raw/1.0.0``): write in 1 MiB chunks, half-close, the receiver reads to EOF, joins the chunks
  and answers one byte; timed on the sender from opening the stream to that byte.

Breakdown rows are medians of each component on its own, so they need not add up to the total exactly.

Receiver memory: the receiver never builds the model (it derives the spec from the shapes), notes its resident
memory when it is ready, and after the first push (the warm-up, before any raw transfer) reports its peak
resident memory above that: what one transfer plus its decode held at most, next to the model's size. The
decoded tensors are dropped right after each decode.

Usage: python bench/bench_model_push.py [--mb 50] [--repeat 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import trio

from quinkgl import wire
from quinkgl.transport import TransportConfig

RAW_PROTOCOL = "/quinkgl-bench/raw/1.0.0"
SWARM_ID = "sha256:" + "b5" * 32
CHUNK = 1024 * 1024
STEP_TIMEOUT_S = 120.0


def model_spec(mb: float) -> dict[str, wire.TensorSpec]:
    """``n`` 1024x1024 float32 weights plus 1024-float biases, n chosen to total about ``mb`` MB (1e6 bytes):
    the spec of :func:`build_model`'s model, without building it."""
    spec: dict[str, wire.TensorSpec] = {}
    for i in range(max(1, round(mb * 1e6 / (4 * (1024 * 1024 + 1024))))):
        spec[f"layer{i}.weight"] = ((1024, 1024), "float32")
        spec[f"layer{i}.bias"] = ((1024,), "float32")
    return spec


def resident_bytes() -> int:
    """This process's resident memory now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_model(mb: float, seed: int) -> dict[str, torch.Tensor]:
    """The model of :func:`model_spec`, random weights from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(*shape, generator=gen) for name, (shape, _) in model_spec(mb).items()}


def make_transport(name: str, registry: str, max_bytes: int, channel: trio.MemorySendChannel):
    from quinkgl_transport_libp2p.params import Libp2pParams
    from quinkgl_transport_libp2p.transport import Libp2pTransport

    cfg = TransportConfig(
        swarm_id=SWARM_ID, node_id=name, max_payload_bytes=max_bytes, options={"registry_dir": registry}
    )

    def on_payload(sender: str, payload: bytes) -> None:
        channel.send_nowait((sender, payload, time.perf_counter()))

    t = Libp2pTransport(Libp2pParams(), cfg)
    t.set_handlers(on_announcement=lambda s, d: None, on_payload=on_payload)
    return t


# ------------------------------------------------------------------------------------------------------------
# Receiver (subprocess)
# ------------------------------------------------------------------------------------------------------------


async def receiver(args: argparse.Namespace) -> None:
    from libp2p.network.stream.exceptions import StreamEOF

    spec = model_spec(args.mb)
    cap = wire.max_update_bytes(spec)
    send_ch, recv_ch = trio.open_memory_channel(8)

    async def raw_handler(stream) -> None:
        chunks = []
        while True:
            try:
                chunk = await stream.read(4 * CHUNK)
            except StreamEOF:
                break
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        await stream.write(b"\x01" if len(data) > 0 else b"\x00")
        await stream.close()

    transport = make_transport("bench-receiver", args.registry, cap, send_ch)
    async with transport:
        transport.host.set_stream_handler(RAW_PROTOCOL, raw_handler)
        ready_rss = resident_bytes()
        print(f"READY {transport.peer_id}", flush=True)
        with trio.move_on_after(args.deadline):
            async for sender, payload, arrived in recv_ch:
                if payload == b"BYE!":
                    break
                if payload == b"PING":
                    await transport.send(sender, b"{}", timeout=STEP_TIMEOUT_S)
                    continue
                decoded = await trio.to_thread.run_sync(
                    lambda data=payload: wire.decode_update(data, expected=spec, swarm_id=SWARM_ID, max_bytes=cap)
                )
                decode_s = time.perf_counter() - arrived
                assert decoded.header.sender == sender, "sender mismatch"
                reply = {"decode_s": decode_s, "tensors": len(decoded.tensors), "round": decoded.header.round}
                del decoded, payload
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
                reply["peak_above_ready"] = peak - ready_rss
                await transport.send(sender, json.dumps(reply).encode(), timeout=STEP_TIMEOUT_S)


# ------------------------------------------------------------------------------------------------------------
# Sender (this process)
# ------------------------------------------------------------------------------------------------------------


async def sender(args: argparse.Namespace, proc: subprocess.Popen) -> dict[str, list[float]]:
    from libp2p.peer.id import ID

    model = build_model(args.mb, args.seed)
    cap = wire.max_update_bytes(wire.model_spec(model))
    send_ch, replies = trio.open_memory_channel(8)
    transport = make_transport("bench-sender", args.registry, cap, send_ch)
    times: dict[str, list[float]] = {k: [] for k in ("framework", "encode", "send", "decode", "rest", "raw", "rtt")}

    async def reply(peer: str) -> dict:
        with trio.fail_after(STEP_TIMEOUT_S):
            sender_id, payload, _ = await replies.receive()
        assert sender_id == peer
        return json.loads(payload)

    async with transport:
        with trio.fail_after(60):
            line = await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
        if not line.startswith(b"READY "):
            raise RuntimeError(f"receiver did not start (said {line!r}, exit code {proc.poll()})")
        peer = line.split()[1].decode()
        await transport.wait_connected([peer], timeout=30)
        target = ID.from_base58(peer)
        size = 0
        for i in range(args.repeat + 1):
            keep = i > 0  # iteration 0 is the warm-up
            t0 = time.perf_counter()
            msg = await trio.to_thread.run_sync(
                lambda r=i: wire.encode_update(
                    model, swarm_id=SWARM_ID, sender=transport.peer_id, round=r, num_samples=1
                )
            )
            t1 = time.perf_counter()
            await transport.send(peer, msg, timeout=STEP_TIMEOUT_S)
            t2 = time.perf_counter()
            info = await reply(peer)
            t3 = time.perf_counter()
            assert info["round"] == i and info["tensors"] == len(model)
            size = len(msg)
            if i == 0:  # before any raw transfer: what the first push and its decode held at most
                times["receiver_peak"] = [float(info["peak_above_ready"])]

            with trio.fail_after(STEP_TIMEOUT_S):
                r0 = time.perf_counter()
                stream = await transport.host.new_stream(target, [RAW_PROTOCOL])
                view = memoryview(msg)
                for start in range(0, len(msg), CHUNK):
                    await stream.write(bytes(view[start : start + CHUNK]))
                await stream.close_write()
                ack = await stream.read(1)
                r1 = time.perf_counter()
                await stream.close()
            assert ack == b"\x01", ack

            with trio.fail_after(STEP_TIMEOUT_S):
                p0 = time.perf_counter()
                await transport.send(peer, b"PING", timeout=STEP_TIMEOUT_S)
                await reply(peer)
                p1 = time.perf_counter()
            if keep:
                for key, value in (
                    ("framework", t3 - t0),
                    ("encode", t1 - t0),
                    ("send", t2 - t1),
                    ("decode", info["decode_s"]),
                    ("rest", t3 - t2 - info["decode_s"]),
                    ("raw", r1 - r0),
                    ("rtt", p1 - p0),
                ):
                    times[key].append(value)
        await transport.send(peer, b"BYE!", timeout=10)
    times["size"] = [float(size)]
    times["model_bytes"] = [float(sum(t.numel() * t.element_size() for t in model.values()))]
    return times


def report(times: dict[str, list[float]], n_tensors: int, pid: int) -> None:
    size_mb = times["size"][0] / 1e6
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"model: {n_tensors} tensors, encoded message {size_mb:.2f} MB; receiver PID {pid}; "
        f"median of {len(times['raw'])} pushes after 1 warm-up\n"
    )
    rows = [
        ("framework: encode -> confirmed decoded", "framework", True),
        ("  encode (sender, worker thread)", "encode", False),
        ("  send(): transfer + SHA-256 ack", "send", True),
        ("  decode (receiver: digests, layout, NaN)", "decode", False),
        ("  confirm reply + queueing (rest)", "rest", False),
        ("raw libp2p stream, same bytes", "raw", True),
        ("confirm RTT (tiny ping -> tiny reply)", "rtt", False),
    ]
    print(f"{'path':44s} {'median s':>9s} {'MB/s':>8s}   runs (s)")
    for label, key, rate in rows:
        mbs = f"{size_mb / med[key]:8.1f}" if rate else " " * 8
        runs = ", ".join(f"{v:.3f}" for v in times[key])
        print(f"{label:44s} {med[key]:9.3f} {mbs}   {runs}")
    print(
        f"\nratio framework/raw: {med['framework'] / med['raw']:.2f}x   "
        f"send()/raw (transfer only): {med['send'] / med['raw']:.2f}x"
    )
    peak, model_bytes = times["receiver_peak"][0], times["model_bytes"][0]
    print(
        f"receiver peak resident memory above idle, first push + decode: {peak / 1e6:.1f} MB = "
        f"{peak / model_bytes:.2f}x the model ({model_bytes / 1e6:.1f} MB)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--role", choices=("sender", "receiver"), default="sender")
    parser.add_argument("--registry", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=600, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "receiver":
        trio.run(receiver, args)
        return 0

    args.registry = tempfile.mkdtemp(prefix="qgl-bench-push-")
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--role",
        "receiver",
        "--mb",
        str(args.mb),
        "--seed",
        str(args.seed),
        "--registry",
        args.registry,
        "--deadline",
        str(60 + (args.repeat + 1) * 3 * STEP_TIMEOUT_S),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    try:
        times = trio.run(sender, args, proc)
        report(times, len(build_model(args.mb, args.seed)), proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)  # it leaves on BYE!
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        proc.stdout.close()
        shutil.rmtree(args.registry, ignore_errors=True)
    if proc.returncode != 0:
        print(f"receiver exited with code {proc.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
