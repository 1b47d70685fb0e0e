"""``quinkgl run``: start one peer of a swarm over the manifest's transport (libp2p by default)."""

from __future__ import annotations

import os
import signal as signals
import sys
from typing import Any, Optional

import click

from quinkgl_cli import terminal
from quinkgl_cli.options import parse_script_args
from quinkgl_cli.peer_options import peer_source_options


@click.command("run")
@peer_source_options
@click.option("--node-id", default=None, help="A name for this peer in logs (default: host-pid).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for other machines; add --announce-addr behind NAT).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="TCP port (0 picks a free one; use a fixed port for bootstrap peers).")
@click.option("--rounds", type=click.IntRange(min=1), default=None, help="Total rounds (default: round_limit or 10).")
@click.option("--gossip-interval", type=click.FloatRange(min=0, min_open=True), default=12.0, show_default=True,
              help="Longest a round waits for other peers' updates, in seconds.")
@click.option("--bootstrap-peer", "bootstrap_peers", multiple=True, metavar="HOST:PORT",
              help="Peer to dial first: host:port, host:port/p2p/<id> or a multiaddr (repeatable).")
@click.option("--announce-addr", "announce_addrs", multiple=True, metavar="MULTIADDR",
              help="Address to announce to others (NAT / port forwarding), repeatable.")
@click.option("--relay", is_flag=True,
              help="Serve as a circuit relay for this swarm's members (run it on a publicly reachable peer).")
@click.option("--wait-for-peers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Before the first round, wait for this many peers (at most --discovery-wait seconds).")
@click.option("--discovery-wait", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Longest wait for peers before the first round, in seconds.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), help="Checkpoints; a restart resumes from here.")
@click.option("--max-eval-batches", type=click.IntRange(min=1), help="Evaluate on at most this many batches.")
@click.option("--device", default="cpu", show_default=True, help="torch device for training (cpu, cuda, cuda:1…).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (including libp2p).")
def run_command(manifest_path: str, script: Optional[str], data: Optional[str], script_args: tuple[str, ...],
                local_steps: Optional[int], local_epochs: Optional[float], strict_manifest: bool, trust_policy: str,
                trusted_keys: tuple[str, ...], seed: int, node_id: Optional[str], host: str, port: int,
                rounds: Optional[int], gossip_interval: float, bootstrap_peers: tuple[str, ...],
                announce_addrs: tuple[str, ...], relay: bool, wait_for_peers: int, discovery_wait: float,
                checkpoint_dir: Optional[str], max_eval_batches: Optional[int],
                device: str, verbose: bool) -> None:
    """Run one peer: train locally, exchange models with the swarm, aggregate, checkpoint."""
    import trio

    from quinkgl.errors import ExitCode
    from quinkgl.manifest.peers import parse_peer_address
    from quinkgl.plugins.manager import build_registry
    from quinkgl.runtime.inputs import load_inputs
    from quinkgl.runtime.node import NetworkOptions, run_peer
    from quinkgl.runtime.options import PeerOptions

    from quinkgl_cli.progress import PeerProgress, configure_logging

    for address in bootstrap_peers:
        try:
            parse_peer_address(address)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--bootstrap-peer") from None
    live = terminal.is_tty()
    configure_logging(verbose, live)
    inputs = load_inputs(manifest_path, script=script, data=data, trust_policy=trust_policy, trusted_keys=trusted_keys)
    for warning in inputs.trust.warnings:
        terminal.warn(warning)
    manifest = inputs.manifest
    options = PeerOptions(
        node_id=node_id or f"{os.uname().nodename}-{os.getpid()}", rounds=rounds or manifest.round_limit or 10,
        local_steps=local_steps, local_epochs=local_epochs, gossip_interval=gossip_interval,
        script_args=parse_script_args(script_args), checkpoint_dir=checkpoint_dir, strict_manifest=strict_manifest,
        seed=seed, device=device, max_eval_batches=max_eval_batches, min_peers=wait_for_peers,
        discovery_wait=discovery_wait,
    )
    network = NetworkOptions(host=host, port=port, bootstrap_peers=bootstrap_peers, announce_addrs=announce_addrs,
                             relay=relay)
    progress = PeerProgress(options.rounds, live=live)

    def listening(peer: Any) -> None:
        addrs = list(peer.p.transport.listen_addrs)
        terminal.out(f"peer {options.node_id} ({peer.peer_id}) swarm {manifest.swarm_id[:19]}… "
                     f"listening on {', '.join(addrs) or '(in-process)'}")
        if peer.completed:
            terminal.out(f"resumed from checkpoint at round {peer.completed}")

    with progress:
        outcome = trio.run(run_peer, manifest, inputs.source, options, network, build_registry(), progress.observe,
                           listening)
    summary = outcome.summary
    accuracy = summary["val_accuracy"]
    terminal.out(
        f"summary: node={summary['node_id']} rounds={summary['rounds']}/{options.rounds} "
        f"val_accuracy={accuracy if accuracy is None else f'{accuracy:.4f}'} sent={summary['bytes_sent']} "
        f"received={summary['bytes_received']} accepted={summary['updates_accepted']} "
        f"rejected={summary['updates_rejected']} {summary['rejected'] or ''}".rstrip()
    )
    if outcome.signal is not None:
        terminal.note(f"stopped by {signals.Signals(outcome.signal).name}; final checkpoint written"
                      if checkpoint_dir else f"stopped by {signals.Signals(outcome.signal).name}")
        sys.exit(int(ExitCode.INTERRUPTED if outcome.signal == signals.SIGINT else ExitCode.TERMINATED))
