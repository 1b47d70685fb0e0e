"""``quinkgl doctor``: can this machine reach the swarm's peers, and if not, why (without joining the training)."""

from __future__ import annotations

import json
import sys

import click

from quinkgl_cli import terminal

INBOUND = {
    "yes": "reachable: a peer dialled back to this host",
    "no": "NOT reachable from the peers (NAT or firewall): others cannot dial you; open or forward the port "
    "and give --announce-addr, or use a relay",
    "unknown": "unknown (no reachable peer could try a dial-back)",
}


@click.command("doctor")
@click.option(
    "--manifest",
    "manifest_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The swarm's manifest (.qgl); its bootstrap_peers are checked.",
)
@click.option(
    "--bootstrap-peer",
    "bootstrap_peers",
    multiple=True,
    metavar="HOST:PORT",
    help="Another peer to check: host:port, host:port/p2p/<id> or a multiaddr (repeatable).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address `quinkgl run` would listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port `quinkgl run` would listen on (a busy port is reported and a free one used).",
)
@click.option(
    "--announce-addr",
    "announce_addrs",
    multiple=True,
    metavar="MULTIADDR",
    help="Address `quinkgl run` would announce (repeatable).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.5),
    default=5.0,
    show_default=True,
    help="Seconds allowed per step of each check.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def doctor_command(
    manifest_path: str,
    bootstrap_peers: tuple[str, ...],
    host: str,
    port: int,
    announce_addrs: tuple[str, ...],
    timeout: float,
    as_json: bool,
) -> int | None:
    """Check listen/announce addresses and every bootstrap peer; exit 0 if at least one peer is reachable.

    Exit 20 when no peer of the swarm is reachable (or none is configured); each peer's line says why.
    """
    import logging

    import trio

    from quinkgl.errors import ExitCode
    from quinkgl.manifest.codec import load_manifest
    from quinkgl.manifest.peers import parse_peer_address

    for address in bootstrap_peers:
        try:
            parse_peer_address(address)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--bootstrap-peer") from None
    manifest = load_manifest(manifest_path)
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # its own failure chatter; the report says it in words
    try:
        from quinkgl_transport_libp2p.doctor import diagnose
    except ImportError as err:  # pragma: no cover - partial installs
        from quinkgl.extras import MissingDependencyError

        raise MissingDependencyError(
            f"quinkgl doctor needs the libp2p transport ({err}); install it with: pip install quinkgl-transport-libp2p"
        ) from None
    peers = list(dict.fromkeys([*manifest.bootstrap_peers, *bootstrap_peers]))
    report = trio.run(
        lambda: diagnose(
            swarm_id=manifest.swarm_id,
            arch_hash=manifest.model.arch_hash,
            host=host,
            port=port,
            bootstrap_peers=peers,
            announce_addrs=announce_addrs,
            timeout=timeout,
        )
    )
    code = int(ExitCode.OK if report.ok else ExitCode.NO_PEER_REACHABLE)
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "exit_code": code}, indent=2))
        sys.exit(code)
    terminal.out(f"swarm      {manifest.swarm_id[:23]}… ({manifest.name})")
    terminal.out(f"listen     {', '.join(report.listen)}")
    terminal.out(f"announce   {', '.join(report.announce) or '(nothing)'}")
    if report.port_note:
        terminal.out(f"note       {report.port_note}")
    if not peers:
        terminal.out("bootstrap  none configured (manifest bootstrap_peers or --bootstrap-peer)")
    for check in report.checks:
        terminal.out(f"{'ok' if check.ok else 'FAIL':<10} {check.words()}")
    outside = report.reachable_from_outside
    terminal.out(f"inbound    {INBOUND[outside]}")
    terminal.out(f"relay      {'available' if report.relay_available else 'none among the reachable peers'}")
    terminal.out(
        "result     "
        + (
            "ok: at least one peer of the swarm is reachable"
            if report.ok
            else f"no peer of the swarm is reachable (exit {code})"
        )
    )
    sys.exit(code)
