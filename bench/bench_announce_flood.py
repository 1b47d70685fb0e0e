"""Memory of a libp2p peer and of its neighbour under a flood of validly signed announcements from fresh keys.

Issue 7 item 4: 3,000 announcements of 60 KB, each signed by a fresh key (so per-origin limits never apply),
pushed through ONE connection to a victim, which forwards what it accepts to an honest neighbour over GossipSub.
The victim and the neighbour are separate processes (each a ``Libp2pTransport`` whose handler keeps only a count,
so what is measured is the transport); their RSS is read from /proc before and after the flood.

``--unlimited`` sets the transport's rate limits and state bounds so high that they never apply (how the
transport behaved before they existed), for comparison.

Usage: python bench/bench_announce_flood.py [--count 3000] [--kb 60] [--unlimited]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import trio

UNLIMITED = {
    "announce_per_forwarder_rate": 1e9,
    "announce_per_forwarder_burst": 1e9,
    "announce_per_forwarder_bytes_rate": 1e12,
    "announce_per_forwarder_bytes_burst": 1e12,
    "announce_per_origin_rate": 1e9,
    "announce_per_origin_burst": 1e9,
    "announce_per_origin_bytes_rate": 1e12,
    "announce_per_origin_bytes_burst": 1e12,
    "max_tracked_origins": 1_000_000,
}
SWARM = "sha256:" + "ef" * 32


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------------------------------------
# Child: one transport, driven over stdin / stdout
# ------------------------------------------------------------------------------------------------------------


async def child(options: dict, bootstrap: str | None) -> None:
    from quinkgl.transport import TransportConfig
    from quinkgl_transport_libp2p.params import Libp2pParams
    from quinkgl_transport_libp2p.transport import Libp2pTransport

    config = TransportConfig(
        swarm_id=SWARM,
        node_id="bench",
        host="127.0.0.1",
        port=0,
        max_payload_bytes=1 << 20,
        bootstrap_peers=(bootstrap,) if bootstrap else (),
        options={"registry": False, **options},
    )
    transport = Libp2pTransport(Libp2pParams(), config)
    delivered = 0

    def on_announcement(sender: str, document: bytes) -> None:
        nonlocal delivered
        delivered += 1

    transport.set_handlers(on_announcement=on_announcement, on_payload=lambda s, p: None)
    async with transport:
        print("READY", transport.peer_id, transport.listen_addrs[0], flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buf = b""
        while True:
            data = await stdin.receive_some(1024)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line == b"rss":
                    stats = transport.stats()
                    print(
                        "RSS",
                        json.dumps({"rss_mib": rss_mib(), "delivered": delivered, "rejected": stats.rejected}),
                        flush=True,
                    )
                elif line == b"quit":
                    return


class Child:
    def __init__(self, options: dict, bootstrap: str | None = None) -> None:
        argv = [sys.executable, __file__, "--child", json.dumps(options)]
        argv += ["--bootstrap", bootstrap] if bootstrap else []
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        assert line and line[0] == "READY", line
        self.peer_id, self.addr = line[1], line[2]

    def report(self) -> dict:
        self.proc.stdin.write("rss\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line.startswith("RSS "), line
        return json.loads(line[4:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=20)
            except Exception:
                self.proc.kill()
                self.proc.wait(timeout=20)


# ------------------------------------------------------------------------------------------------------------
# Attacker
# ------------------------------------------------------------------------------------------------------------


async def attack(victim_addr: str, count: int, kb: int) -> float:
    import multiaddr
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.pubsub.pb import rpc_pb2
    from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

    from quinkgl_transport_libp2p.announce import Announcer
    from quinkgl_transport_libp2p.framing import swarm_tag
    from quinkgl_transport_libp2p.host import build_host
    from quinkgl_transport_libp2p.peer_exchange import encode_addr_block, encode_envelope

    listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    host = build_host(create_new_key_pair(), listen=listen)
    tag = swarm_tag(SWARM)
    async with host.run([listen]):
        announcer = Announcer(
            host, swarm_id=SWARM, max_bytes=512 * 1024, deliver=lambda s, d: None, reject=lambda r: None
        )
        announcer.pubsub.remove_topic_validator(announcer.topic)
        async with announcer.running():
            announcer.pubsub.sink = lambda msg: True
            info = info_from_p2p_addr(multiaddr.Multiaddr(victim_addr))
            await host.connect(info)
            await announcer.wait_for_peer(info.peer_id, timeout=30)
            started = time.monotonic()
            filler = os.urandom(kb * 1024)
            for i in range(count):
                key = create_new_key_pair()
                data = encode_envelope(
                    tag,
                    encode_addr_block([f"/ip4/127.0.0.1/tcp/{10000 + i % 50000}"]),
                    b'{"fake": %d, "metadata": "' % i + filler.hex()[: kb * 1024].encode() + b'"}',
                )
                msg = rpc_pb2.Message(
                    data=data,
                    topicIDs=[announcer.topic],
                    from_id=ID.from_pubkey(key.public_key).to_bytes(),
                    seqno=(i + 1).to_bytes(8, "big"),
                )
                msg.signature = key.private_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
                msg.key = key.public_key.serialize()
                await announcer.pubsub.push_msg(host.get_id(), msg)
                await announcer._backpressure()
            elapsed = time.monotonic() - started
            await trio.sleep(5)  # let the victim and its neighbour process what is in flight
            return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--kb", type=int, default=60)
    parser.add_argument("--unlimited", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        trio.run(child, json.loads(args.child), args.bootstrap)
        return

    options = dict(UNLIMITED) if args.unlimited else {}
    victim = Child(options)
    neighbour = Child(options, bootstrap=victim.addr)
    try:
        time.sleep(3)  # the neighbour joins the victim's GossipSub mesh (bench only; not a test)
        before = {"victim": victim.report(), "neighbour": neighbour.report()}
        elapsed = trio.run(attack, victim.addr, args.count, args.kb)
        after = {"victim": victim.report(), "neighbour": neighbour.report()}
        mode = "limits off (--unlimited)" if args.unlimited else "default limits"
        print(
            f"{args.count} announcements x {args.kb} KB from fresh keys through one connection, {mode}; "
            f"pushed in {elapsed:.1f} s ({args.count / elapsed:.0f}/s)"
        )
        for role in ("victim", "neighbour"):
            b, a = before[role], after[role]
            print(
                f"  {role:9s}: RSS {b['rss_mib']:.1f} -> {a['rss_mib']:.1f} MiB "
                f"(+{a['rss_mib'] - b['rss_mib']:.1f} MiB); delivered {a['delivered'] - b['delivered']}; "
                f"rejected {a['rejected']}"
            )
    finally:
        victim.stop()
        neighbour.stop()


if __name__ == "__main__":
    main()
