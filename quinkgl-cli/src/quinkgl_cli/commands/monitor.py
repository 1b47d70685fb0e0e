"""``quinkgl monitor``: watch a whole swarm as a listen-only observer (it trains nothing, is never a source).

The collecting is core's (:mod:`quinkgl.monitor`); this module only renders: a live rich table on a terminal,
one plain line per change when piped, ``--json`` for one snapshot, ``--web HOST:PORT`` for a self-updating page.
Log lines always go to stderr, so stdout stays clean for the table, the lines or the JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from typing import Any

import click

from quinkgl_cli import terminal


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("quinkgl").setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("libp2p").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    logging.getLogger("multiaddr").setLevel(logging.WARNING)


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def peer_line(peer: dict[str, Any]) -> str:
    """One greppable line for a peer."""
    return (
        f"peer node={peer['node_id']} peer_id={peer['peer_id']} round={peer['round']} "
        f"val_accuracy={_accuracy(peer['val_accuracy'])} finished={'yes' if peer['finished'] else 'no'} "
        f"last_heard={peer['seconds_since_heard']:.1f}s connected={'yes' if peer['connected'] else 'no'}"
    )


def table(snapshot: dict[str, Any]) -> Any:
    """The swarm as a rich table."""
    from rich.table import Table

    swarm = snapshot["swarm"]
    result = Table(
        title=f"swarm {swarm['name']} ({swarm['swarm_id'][:19]}…): {len(snapshot['peers'])} peer(s), "
        f"{snapshot['finished']} finished",
        title_justify="left",
    )
    for column, justify in (
        ("node", "left"),
        ("peer ID", "left"),
        ("round", "right"),
        ("val acc", "right"),
        ("last heard", "right"),
        ("finished", "left"),
    ):
        result.add_column(column, justify=justify)  # type: ignore[arg-type]
    for peer in snapshot["peers"]:
        heard = f"{peer['seconds_since_heard']:.1f} s ago" + ("" if peer["connected"] else " (lost)")
        result.add_row(
            peer["node_id"],
            peer["peer_id"],
            str(peer["round"]),
            _accuracy(peer["val_accuracy"]),
            heard,
            "yes" if peer["finished"] else "no",
        )
    return result


@click.command("monitor")
@click.option(
    "--manifest", "manifest_path", required=True, type=click.Path(dir_okay=False), help="The swarm's manifest (.qgl)."
)
@click.option(
    "--trust-policy",
    type=click.Choice(["open", "tofu", "pinned"]),
    default="tofu",
    show_default=True,
    help="How to decide whether to accept the manifest.",
)
@click.option(
    "--trusted-pubkey",
    "trusted_keys",
    multiple=True,
    metavar="ed25519:HEX",
    help="Creator key(s) to accept (required by --trust-policy pinned).",
)
@click.option(
    "--bootstrap-peer",
    "bootstrap_peers",
    multiple=True,
    metavar="HOST:PORT",
    help="Peer to dial first: host:port, host:port/p2p/<id> or a multiaddr (repeatable).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the observer listens on.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Observer's TCP port.")
@click.option("--json", "as_json", is_flag=True, help="Watch for --wait seconds, print one JSON snapshot, exit.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="With --json: how long to listen before the snapshot.",
)
@click.option(
    "--min-peers",
    type=click.IntRange(min=1),
    default=None,
    help="With --json: print as soon as this many peers were heard of (at most --wait seconds).",
)
@click.option(
    "--web",
    "web",
    metavar="HOST:PORT",
    default=None,
    help="Also serve the view as a self-updating web page (e.g. 127.0.0.1:8080; port 0 picks one).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between screen refreshes.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after this many seconds (default: until Ctrl-C).",
)
@click.option("--exit-when-finished", is_flag=True, help="Stop once every peer heard of has finished.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr (including libp2p).")
def monitor_command(
    manifest_path: str,
    trust_policy: str,
    trusted_keys: tuple[str, ...],
    bootstrap_peers: tuple[str, ...],
    host: str,
    port: int,
    as_json: bool,
    wait: float,
    min_peers: int | None,
    web: str | None,
    interval: float,
    duration: float | None,
    exit_when_finished: bool,
    verbose: bool,
) -> None:
    """Show every peer of a swarm (node, peer ID, round, accuracy, last heard, finished) without joining it."""
    import trio

    from quinkgl.manifest.codec import load_manifest
    from quinkgl.manifest.peers import parse_peer_address
    from quinkgl.monitor import SwarmView, observe_swarm
    from quinkgl.plugins.manager import build_registry
    from quinkgl.trust import evaluate_trust
    from quinkgl_cli.swarm_web import SwarmWebServer, parse_host_port

    for address in bootstrap_peers:
        try:
            parse_peer_address(address)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--bootstrap-peer") from None
    web_address = parse_host_port(web) if web else None
    _configure_logging(verbose)
    manifest = load_manifest(manifest_path)
    decision = evaluate_trust(manifest, trust_policy, trusted_keys=trusted_keys)
    for warning in decision.warnings:
        terminal.warn(warning)
    view = SwarmView(swarm_id=manifest.swarm_id, arch_hash=manifest.model.arch_hash, name=manifest.name)
    live = terminal.is_tty() and not as_json
    server = SwarmWebServer(*web_address, view.snapshot) if web_address else None
    printed: dict[str, tuple[Any, ...]] = {}

    def ready(transport: Any) -> None:
        if not as_json:
            addrs = ", ".join(transport.listen_addrs) or "(in-process)"
            terminal.out(
                f"monitor: observing swarm {manifest.name} ({manifest.swarm_id[:19]}…) as "
                f"{transport.peer_id} on {addrs}, listen-only"
            )
        if server is not None:
            terminal.out(f"web: {server.url}")  # on stderr with --json (stdout is redirected while running)

    def plain_lines(snapshot: dict[str, Any]) -> None:
        for peer in snapshot["peers"]:
            key = (peer["node_id"], peer["round"], peer["val_accuracy"], peer["finished"], peer["connected"])
            if printed.get(peer["peer_id"]) != key:
                printed[peer["peer_id"]] = key
                terminal.out(peer_line(peer))

    def all_finished(snapshot: dict[str, Any]) -> bool:
        return bool(snapshot["peers"]) and snapshot["finished"] == len(snapshot["peers"])

    async def render() -> None:
        if as_json:
            with trio.move_on_after(wait if duration is None else min(wait, duration)):
                while min_peers is None or len(view.snapshot()["peers"]) < min_peers:
                    await trio.sleep(interval)
            return
        deadline = None if duration is None else trio.current_time() + duration
        live_view = None
        if live:
            from rich.live import Live

            live_view = Live(table(view.snapshot()), console=terminal.console(), auto_refresh=False)
            live_view.start()
        try:
            while deadline is None or trio.current_time() < deadline:
                snapshot = view.snapshot()
                if live_view is not None:
                    live_view.update(table(snapshot), refresh=True)
                else:
                    plain_lines(snapshot)
                if exit_when_finished and all_finished(snapshot):
                    return
                await trio.sleep(interval)
        finally:
            if live_view is not None:
                live_view.stop()

    async def main() -> None:
        import signal

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                await observe_swarm(
                    manifest,
                    build_registry(),
                    view,
                    host=host,
                    port=port,
                    bootstrap_peers=bootstrap_peers,
                    on_ready=ready,
                    until=render,
                )
                nursery.cancel_scope.cancel()

    started = time.monotonic()
    try:
        # Whatever a library prints while the observer runs must not end up inside the JSON on stdout.
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            trio.run(main)
    finally:
        if server is not None:
            server.close()
    snapshot = view.snapshot()
    if as_json:
        click.echo(json.dumps(snapshot, indent=2, sort_keys=True, allow_nan=False))
    elif not live:
        plain_lines(snapshot)
        terminal.out(
            f"monitor: {len(snapshot['peers'])} peer(s), {snapshot['finished']} finished, "
            f"watched {time.monotonic() - started:.0f} s"
        )
    else:
        terminal.render(table(snapshot))
