"""``quinkgl run``: start one peer of a swarm over the manifest's transport (libp2p by default)."""

from __future__ import annotations

import os
import signal as signals
import sys
from typing import Any

import click

from quinkgl_cli import terminal
from quinkgl_cli.options import parse_script_args
from quinkgl_cli.peer_options import peer_source_options


@click.command("run")
@peer_source_options
@click.option("--node-id", default=None, help="A name for this peer in logs (default: host-pid).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 for other machines; add --announce-addr behind NAT).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="TCP port (0 picks a free one; use a fixed port for bootstrap peers).",
)
@click.option("--rounds", type=click.IntRange(min=1), default=None, help="Total rounds (default: round_limit or 10).")
@click.option(
    "--gossip-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=12.0,
    show_default=True,
    help="Longest a round waits for other peers' updates, in seconds.",
)
@click.option(
    "--bootstrap-peer",
    "bootstrap_peers",
    multiple=True,
    metavar="HOST:PORT",
    help="Peer to dial first: host:port, host:port/p2p/<id> or a multiaddr (repeatable).",
)
@click.option(
    "--announce-addr",
    "announce_addrs",
    multiple=True,
    metavar="MULTIADDR",
    help="Address to announce to others (NAT / port forwarding): host:port or a multiaddr, repeatable.",
)
@click.option(
    "--relay",
    is_flag=True,
    help="Serve as a circuit relay for this swarm's members (run it on a publicly reachable peer).",
)
@click.option(
    "--wait-for-peers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Before the first round, wait for this many peers (at most --discovery-wait seconds).",
)
@click.option(
    "--discovery-wait",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Longest wait for peers before the first round, in seconds.",
)
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), help="Checkpoints; a restart resumes from here.")
@click.option(
    "--membership-cert",
    type=click.Path(dir_okay=False),
    help="This peer's membership certificate (`quinkgl admit`), required by a certified swarm.",
)
@click.option("--max-eval-batches", type=click.IntRange(min=1), help="Evaluate on at most this many batches.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus text at http://HOST:PORT/metrics (0: a free port; needs quinkgl-cli[metrics]).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics server listens on (0.0.0.0 exposes it to other machines).",
)
@click.option(
    "--tensorboard",
    "tensorboard_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write per-round scalars as TensorBoard event files into this folder (needs quinkgl-cli[metrics]).",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (including libp2p).")
def run_command(
    manifest_path: str,
    script: str | None,
    data: str | None,
    script_args: tuple[str, ...],
    local_steps: int | None,
    local_epochs: float | None,
    strict_manifest: bool,
    trust_policy: str,
    trusted_keys: tuple[str, ...],
    seed: int,
    node_id: str | None,
    host: str,
    port: int,
    rounds: int | None,
    gossip_interval: float,
    bootstrap_peers: tuple[str, ...],
    announce_addrs: tuple[str, ...],
    relay: bool,
    wait_for_peers: int,
    discovery_wait: float,
    checkpoint_dir: str | None,
    membership_cert: str | None,
    max_eval_batches: int | None,
    device: str,
    metrics_port: int | None,
    metrics_host: str,
    tensorboard_dir: str | None,
    verbose: bool,
) -> None:
    """Run one peer: train locally, exchange models with the swarm, aggregate, checkpoint."""
    from quinkgl.extras import require_extra

    require_extra("torch", "quinkgl run")
    import trio

    from quinkgl.errors import ExitCode
    from quinkgl.manifest.peers import parse_peer_address
    from quinkgl.plugins.manager import build_registry
    from quinkgl.runtime.devices import resolve_device
    from quinkgl.runtime.inputs import load_inputs
    from quinkgl.runtime.node import NetworkOptions, run_peer
    from quinkgl.runtime.options import PeerOptions
    from quinkgl_cli.exporters import close_exporters, start_exporters
    from quinkgl_cli.progress import PeerProgress, configure_logging

    for hint, addresses in (("--bootstrap-peer", bootstrap_peers), ("--announce-addr", announce_addrs)):
        for address in addresses:
            try:
                parse_peer_address(address)
            except ValueError as err:
                raise click.BadParameter(str(err), param_hint=hint) from None
    live = terminal.is_tty()
    configure_logging(verbose, live)
    inputs = load_inputs(manifest_path, script=script, data=data, trust_policy=trust_policy, trusted_keys=trusted_keys)
    for warning in inputs.trust.warnings:
        terminal.warn(warning)
    manifest = inputs.manifest
    device = resolve_device(device)
    options = PeerOptions(
        node_id=node_id or f"{os.uname().nodename}-{os.getpid()}",
        rounds=rounds or manifest.round_limit or 10,
        local_steps=local_steps,
        local_epochs=local_epochs,
        gossip_interval=gossip_interval,
        script_args=parse_script_args(script_args),
        checkpoint_dir=checkpoint_dir,
        strict_manifest=strict_manifest,
        seed=seed,
        device=device,
        max_eval_batches=max_eval_batches,
        membership_cert=membership_cert,
        min_peers=wait_for_peers,
        discovery_wait=discovery_wait,
    )
    network = NetworkOptions(
        host=host, port=port, bootstrap_peers=bootstrap_peers, announce_addrs=announce_addrs, relay=relay
    )
    progress = PeerProgress(options.rounds, live=live)
    registry = build_registry()
    exporters = start_exporters(
        registry,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        tensorboard=tensorboard_dir,
        node_id=options.node_id,
    )

    def listening(peer: Any) -> None:
        addrs = list(peer.p.transport.listen_addrs)
        terminal.out(
            f"peer {options.node_id} ({peer.peer_id}) swarm {manifest.swarm_id[:19]}… "
            f"listening on {', '.join(addrs) or '(in-process)'} device {device}"
        )
        for exporter in exporters:
            terminal.out(f"metrics: {exporter.url}" if hasattr(exporter, "url") else f"tensorboard: {exporter.logdir}")
        if peer.completed:
            terminal.out(f"resumed from checkpoint at round {peer.completed}")

    try:
        with progress:
            outcome = trio.run(
                run_peer, manifest, inputs.source, options, network, registry, progress.observe, listening
            )
    finally:
        close_exporters(exporters)
    summary = outcome.summary
    accuracy = summary["val_accuracy"]
    relayed = f"relayed={summary['relayed_bytes']} " if summary.get("relayed_bytes") else ""  # as a --relay
    terminal.out(
        f"summary: node={summary['node_id']} rounds={summary['rounds']}/{options.rounds} "
        f"val_accuracy={accuracy if accuracy is None else f'{accuracy:.4f}'} sent={summary['bytes_sent']} "
        f"received={summary['bytes_received']} {relayed}accepted={summary['updates_accepted']} "
        f"sources(asked/answered/used)={summary['sources_asked']}/{summary['sources_answered']}/"
        f"{summary['sources_used']} fell_back={summary['fell_back']} "
        f"announcements={summary['announcements_handled']} "
        f"rejected={summary['updates_rejected']} {summary['rejected'] or ''}".rstrip()
    )
    if outcome.signal is not None:
        terminal.note(
            f"stopped by {signals.Signals(outcome.signal).name}; final checkpoint written"
            if checkpoint_dir
            else f"stopped by {signals.Signals(outcome.signal).name}"
        )
        sys.exit(int(ExitCode.INTERRUPTED if outcome.signal == signals.SIGINT else ExitCode.TERMINATED))
    if summary["rounds"] < options.rounds:
        # The round loop ended without a signal before its last round: something underneath it (the network
        # service) stopped. Never report that as success.
        terminal.error(
            f"the run ended after {summary['rounds']} of {options.rounds} rounds: the peer's network "
            "service stopped (see the log above); restart it (with --checkpoint-dir it resumes)"
        )
        sys.exit(int(ExitCode.ROUNDS_INCOMPLETE))
