"""Spike: does py-libp2p 0.8.1's circuit relay v2 connect two NATed hosts with QuinkGL's Noise-only host?

Run inside lab namespaces (see tests/network/netlab.py), one role per process:
    relay_spike.py relay PORT                          (public host)
    relay_spike.py dest RELAY_IP PORT RELAY_ID         (NATed host: reserve a slot, wait for a relayed stream)
    relay_spike.py src RELAY_IP PORT RELAY_ID DEST_ID  (other NATed host: dial DEST through the relay, send bytes)
With SPIKE_DCUTR=1 both NATed hosts run DCUtR (identify's observed-address discovery on, listen on a fixed port)
and the source then tries a hole punch over the relayed connection.
Prints one JSON line per event. Evidence for docs/networking.md; not part of the product.
"""

from __future__ import annotations

import json
import os
import sys
import time

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID, STOP_PROTOCOL_ID, CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

from quinkgl_transport_libp2p.host import build_host, key_pair_from_seed, make_addrs_factory

ECHO = "/quinkgl-spike/echo/1.0.0"
LIMITS = RelayLimits(duration=600, data=64 * 1024 * 1024, max_circuit_conns=8, max_reservations=8)
PAYLOAD = 438_464  # one model update of the guide's MLP


def say(**event: object) -> None:
    print(json.dumps({"t": round(time.monotonic(), 3), **event}), flush=True)


DCUTR = os.environ.get("SPIKE_DCUTR") == "1"


def make_host(listen: multiaddr.Multiaddr):  # type: ignore[no-untyped-def]
    if not DCUTR:
        return build_host(key_pair_from_seed(os.urandom(32)), listen=listen)
    from libp2p import new_host
    from libp2p.crypto.x25519 import create_new_key_pair as x25519
    from libp2p.network.config import ConnectionConfig
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
    from libp2p.security.noise.transport import Transport as Noise
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX
    from libp2p.stream_muxer.yamux.yamux import Yamux

    key_pair = key_pair_from_seed(os.urandom(32))
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE: Noise(key_pair, noise_privkey=x25519().private_key)},
        muxer_opt={YAMUX: Yamux},
        listen_addrs=[listen],
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        enable_mDNS=False,
        addrs_factory=make_addrs_factory([]),
        enable_upnp=False,
    )


async def main(role: str, *args: str) -> None:
    port = int(args[0]) if role == "relay" else (7002 if DCUTR else 0)
    host = make_host(multiaddr.Multiaddr(f"/ip4/0.0.0.0/tcp/{port}"))
    listen = multiaddr.Multiaddr(f"/ip4/0.0.0.0/tcp/{port}")
    protocol = CircuitV2Protocol(host, limits=LIMITS, allow_hop=role == "relay")
    roles = RelayRole.HOP | RelayRole.STOP if role == "relay" else RelayRole.STOP | RelayRole.CLIENT
    config = RelayConfig(roles=roles, limits=LIMITS)
    async with host.run([listen]), trio.open_nursery() as nursery:
        say(role=role, peer=host.get_id().to_base58(), addrs=[str(a) for a in host.get_addrs()])
        if role == "relay":
            host.set_stream_handler(PROTOCOL_ID, protocol._handle_hop_stream)
        host.set_stream_handler(STOP_PROTOCOL_ID, protocol._handle_stop_stream)
        dcutr = None
        if DCUTR and role != "relay":
            from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol

            dcutr = DCUtRProtocol(host)
            await nursery.start(_run_service, dcutr)
        async with background_trio_service(protocol):
            transport = CircuitV2Transport(host, protocol, config)
            if role == "relay":
                await trio.sleep(float(os.environ.get("SPIKE_SECONDS", "120")))
                return
            relay_ip, relay_port, relay_id = args[0], args[1], ID.from_base58(args[2])
            relay_addr = multiaddr.Multiaddr(f"/ip4/{relay_ip}/tcp/{relay_port}")
            with trio.fail_after(10):
                await host.connect(PeerInfo(relay_id, [relay_addr]))
            say(event="connected to relay")
            if role == "dest":
                got = trio.Event()

                async def echo(stream) -> None:  # type: ignore[no-untyped-def]
                    total = 0
                    while True:
                        chunk = await stream.read(65536)
                        if not chunk:
                            break
                        total += len(chunk)
                        if total >= PAYLOAD:
                            break
                    await stream.write(b"ok %d" % total)
                    await stream.close()
                    say(event="received through relay", bytes=total, remote=str(stream.muxed_conn.peer_id))
                    got.set()

                host.set_stream_handler(ECHO, echo)
                stream = await host.new_stream(relay_id, [PROTOCOL_ID])
                ok = await transport.reserve(stream, relay_id, nursery)
                say(event="reservation", ok=ok)
                with trio.move_on_after(float(os.environ.get("SPIKE_SECONDS", "60"))):
                    await got.wait()
                nursery.cancel_scope.cancel()
                return
            dest_id = ID.from_base58(args[3])
            circuit = multiaddr.Multiaddr(f"/ip4/{relay_ip}/tcp/{relay_port}/p2p/{relay_id}/p2p-circuit/p2p/{dest_id}")
            started = time.monotonic()
            for attempt in range(10):
                try:
                    with trio.fail_after(15):
                        conn = await transport.dial(circuit)
                    say(
                        event="dialled through relay",
                        attempt=attempt,
                        seconds=round(time.monotonic() - started, 3),
                        conn=type(conn).__name__,
                        connected=[p.to_base58() for p in host.get_connected_peers()],
                    )
                    break
                except Exception as exc:  # evidence: record and retry
                    say(event="dial failed", attempt=attempt, error=f"{type(exc).__name__}: {exc}"[:300])
                    await trio.sleep(1)
            else:
                nursery.cancel_scope.cancel()
                return
            try:
                with trio.fail_after(30):
                    stream = await host.new_stream(dest_id, [ECHO])
                    sent = time.monotonic()
                    await stream.write(b"x" * PAYLOAD)
                    reply = await stream.read(64)
                say(event="echo", reply=reply.decode(errors="replace"), seconds=round(time.monotonic() - sent, 3))
            except Exception as exc:
                say(event="stream failed", error=f"{type(exc).__name__}: {exc}"[:300])
            if dcutr is not None:
                punch_started = time.monotonic()
                try:
                    with trio.fail_after(30):
                        ok = await dcutr.initiate_hole_punch(dest_id)
                except Exception as exc:
                    ok = False
                    say(event="hole punch raised", error=f"{type(exc).__name__}: {exc}"[:300])
                conns = host.get_network().get_connections(dest_id)
                say(
                    event="hole punch",
                    ok=ok,
                    seconds=round(time.monotonic() - punch_started, 3),
                    connections=[str(getattr(c, "get_transport_addresses", list)()) for c in conns][:4],
                )
            nursery.cancel_scope.cancel()


async def _run_service(service, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
    async with background_trio_service(service):
        task_status.started()
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], *sys.argv[2:])
