"""Memory of a libp2p peer and of its neighbour under a flood of validly signed announcements from fresh keys.

Issue 7 item 4: 3,000 announcements of 60 KB, each signed by a fresh key (so per-origin limits never apply),
pushed through ONE connection to a victim, which forwards what it accepts to an honest neighbour over GossipSub.
The victim and the neighbour are separate processes (each a ``Libp2pTransport`` whose handler keeps only a count,
so what is measured is the transport); their RSS is read from /proc before and after the flood.

``--unlimited`` sets the transport's rate limits and state bounds so high that they never apply (how the
transport behaved before they existed), for comparison.

``--run DATA_ROOT`` measures whole ``quinkgl run`` processes instead (victim and neighbour train MNIST with the
guide's script; the neighbour bootstraps from the victim): the announcements are then real ones of their swarm
(its swarm ID and arch hash, a fresh ``node_id``, metadata padded to ``--kb``), so that everything a peer does
with them — transport, parsing, the view, callbacks, logs — is in the RSS. 60 KB exceeds what the runtime keeps
per peer (8 KiB: refused as ``announcement_oversized_metadata``); ``--kb 7`` fills the view instead.

Usage: python bench/bench_announce_flood.py [--count 3000] [--kb 60] [--unlimited] [--run DATA_ROOT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]

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


async def attack(
    victim_addr: str, count: int, kb: int, document: Callable[[int], bytes] | None = None, swarm: str = SWARM
) -> float:
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
    tag = swarm_tag(swarm)
    async with host.run([listen]):
        announcer = Announcer(
            host, swarm_id=swarm, max_bytes=512 * 1024, deliver=lambda s, d: None, reject=lambda r: None
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
                    document(i)
                    if document is not None
                    else b'{"fake": %d, "metadata": "' % i + filler.hex()[: kb * 1024].encode() + b'"}',
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


# ------------------------------------------------------------------------------------------------------------
# Whole `quinkgl run` processes
# ------------------------------------------------------------------------------------------------------------

LISTENING = re.compile(r"^peer (\S+) \((\w+)\) swarm .* listening on (\S+)", re.M)


def proc_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RunPeer:
    """One `quinkgl run` process (ended by its PID when the bench ends)."""

    def __init__(self, work: Path, node: str, data_root: str, extra: list[str]) -> None:
        self.log = work / f"{node}.log"
        argv = [sys.executable, "-m", "quinkgl_cli", "run", "--manifest", "demo.qgl", "--script"]
        argv += ["mnist_peer_script.py", "--node-id", node, "--port", "0", "--rounds", "100000"]
        argv += ["--local-steps", "5", "--max-eval-batches", "5", "--gossip-interval", "4", "--trust-policy"]
        argv += ["open", "--script-arg", f"data_root={data_root}", *extra]
        env = dict(os.environ, QUINKGL_STATE_DIR=str(work / "state"), PYTHONUNBUFFERED="1")
        self._out = open(self.log, "w")  # noqa: SIM115 - the child writes to it until it ends
        self.proc = subprocess.Popen(argv, cwd=work, env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 400.0, count: int = 1) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(re.finditer(pattern, self.text(), re.M))
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.log.name} exited {self.proc.returncode}:\n{self.text()[-3000:]}")
            time.sleep(0.2)  # polling a log file, bounded by the deadline
        raise SystemExit(f"{pattern!r} not in {self.log.name} within {timeout} s")

    def rss(self) -> float:
        return proc_rss_mib(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._out.close()


def run_processes(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import guide_arch_hash, make_manifest
    from quinkgl.manifest.codec import write_manifest
    from quinkgl.runtime.peerview import encode_announcement

    work = Path(tempfile.mkdtemp(prefix="flood-run-"))
    shutil.copy(ROOT / "examples" / "mnist_peer_script.py", work / "mnist_peer_script.py")
    manifest = make_manifest(arch_hash=guide_arch_hash(), name="flood-bench")
    write_manifest(manifest, work / "demo.qgl")
    pad = "x" * max(0, args.kb * 1024 - 400)

    def document(i: int) -> bytes:
        return encode_announcement(
            swarm_id=manifest.swarm_id,
            arch_hash=manifest.model.arch_hash,
            node_id=f"fake-{i}",
            round_idx=1,
            pushed=0,
            done=False,
            metrics={},
            metadata={"label_histogram": [1] * 10, "pad": pad},
        )

    victim = RunPeer(work, "victim", args.run, [])
    neighbour = None
    try:
        address = victim.wait_for(LISTENING.pattern).group(3)
        neighbour = RunPeer(work, "neighbour", args.run, ["--bootstrap-peer", address])
        for peer in (victim, neighbour):
            peer.wait_for(r"^round=\d+ ", count=3)  # both train and exchange (the neighbour catches up first)
        # A training process's RSS moves by tens of MiB within a round (batches, evaluation): sample it every
        # 0.5 s and compare windows (30 s before the flood, during it, 30 s after) by their maxima and medians.
        samples: dict[str, list[tuple[str, float]]] = {"victim": [], "neighbour": []}
        phase = ["before"]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                for role, peer in (("victim", victim), ("neighbour", neighbour)):
                    samples[role].append((phase[0], peer.rss()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        time.sleep(30)
        phase[0] = "flood"
        elapsed = trio.run(attack, address, args.count, args.kb, document, manifest.swarm_id)
        phase[0] = "after"
        time.sleep(30)
        stop.set()
        sampler.join()
        print(
            f"{args.count} real announcements of this swarm x {args.kb} KB from fresh keys through one connection, "
            f"to a `quinkgl run` victim (forwarding to a `quinkgl run` neighbour); pushed in {elapsed:.1f} s"
        )
        for role in ("victim", "neighbour"):
            windows = {p: [v for q, v in samples[role] if q == p] for p in ("before", "flood", "after")}
            text = ", ".join(
                f"{p} max {max(v):.0f} / median {statistics.median(v):.0f}" for p, v in windows.items() if v
            )
            grow = max(windows["flood"] + windows["after"]) - max(windows["before"])
            print(f"  {role:9s}: RSS MiB {text}; max growth {grow:+.1f} MiB")
        for peer in (victim, neighbour):
            peer.proc.send_signal(2)  # SIGINT: the summary line with the rejected counters
            with contextlib.suppress(subprocess.TimeoutExpired):
                peer.proc.wait(timeout=60)
            lines = [line for line in peer.text().splitlines() if line.startswith("summary:")]
            print(f"  {peer.log.stem}: {lines[-1][:600] if lines else 'no summary line'}")
            print(f"  {peer.log.stem}: discovered {peer.text().count('peer-discovered')} peer(s) (log lines)")
    finally:
        victim.stop()
        if neighbour is not None:
            neighbour.stop()
        print(f"  logs in {work}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--kb", type=int, default=60)
    parser.add_argument("--unlimited", action="store_true")
    parser.add_argument("--run", default=None, metavar="DATA_ROOT", help="measure `quinkgl run` processes")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        trio.run(child, json.loads(args.child), args.bootstrap)
        return
    if args.run is not None:
        run_processes(args)
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
