"""``quinkgl manifest create | verify | show``."""

from __future__ import annotations

import json
from typing import Any

import click

from quinkgl_cli import terminal
from quinkgl_cli.options import parse_params, parse_shape

TASK_TYPES = ("class", "regr", "seg", "det")
LABEL_TYPES = ("integer", "float", "one_hot")
FRAMEWORKS = ("pytorch", "tensorflow", "custom")


@click.group("manifest")
def manifest_group() -> None:
    """Create, verify and inspect swarm manifests (.qgl files)."""


@manifest_group.command("create")
@click.option("--name", required=True, help="Name of the swarm.")
@click.option("--task-type", required=True, type=click.Choice(TASK_TYPES), help="class, regr, seg or det.")
@click.option("--input-shape", required=True, callback=parse_shape, help="Model input, e.g. 1,28,28.")
@click.option("--output-shape", required=True, callback=parse_shape, help="Model output, e.g. 10.")
@click.option("--label-type", required=True, type=click.Choice(LABEL_TYPES))
@click.option("--model-framework", required=True, type=click.Choice(FRAMEWORKS))
@click.option("--model-arch-hash", required=True, help="sha256:<hex> from compute_arch_hash(model).")
@click.option("--aggregation", default="FedAvg", show_default=True, help="Aggregation strategy.")
@click.option("--topology", default="RandomTopology", show_default=True, help="Peer selection strategy.")
@click.option("--transport", default="libp2p", show_default=True, help="Network transport.")
@click.option("--data-policy", default="default", show_default=True, help="Data policy.")
@click.option("--aggregation-param", multiple=True, metavar="KEY=VALUE", help="Aggregator parameter (repeatable).")
@click.option("--topology-param", multiple=True, metavar="KEY=VALUE", help="Topology parameter (repeatable).")
@click.option("--transport-param", multiple=True, metavar="KEY=VALUE", help="Transport parameter (repeatable).")
@click.option("--data-policy-param", multiple=True, metavar="KEY=VALUE", help="Data policy parameter (repeatable).")
@click.option("--round-limit", type=click.IntRange(min=1), help="Maximum number of rounds.")
@click.option(
    "--byzantine-f",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Number of Byzantine peers to tolerate.",
)
@click.option("--expires-at", help="Expiry date (YYYY-MM-DD, end of day UTC) or ISO datetime with timezone.")
@click.option(
    "--bootstrap-peer",
    "bootstrap_peers",
    multiple=True,
    metavar="HOST:PORT",
    help="Bootstrap peer: host:port, host:port/p2p/<id> or a multiaddr (repeatable).",
)
@click.option(
    "--membership",
    type=click.Choice(["open", "certified"]),
    default="open",
    show_default=True,
    help="certified: only peers holding a certificate from `quinkgl admit` may take part.",
)
@click.option("--sign-with", type=click.Path(dir_okay=False), help="Creator private key (PEM file).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Output manifest file.")
def create_command(**opts: Any) -> None:
    """Create (and sign) a manifest."""
    from quinkgl import keys
    from quinkgl.authoring import ManifestOptions, create_manifest
    from quinkgl.manifest.codec import write_manifest
    from quinkgl.plugins.manager import build_registry
    from quinkgl.plugins.requirements import installed_version

    params = {
        field: parse_params(opts[f"{field}_param"], f"--{field.replace('_', '-')}-param")
        for field in ("aggregation", "topology", "transport", "data_policy")
    }
    options = ManifestOptions(
        name=opts["name"],
        task_type=opts["task_type"],
        input_shape=opts["input_shape"],
        output_shape=opts["output_shape"],
        label_type=opts["label_type"],
        framework=opts["model_framework"],
        arch_hash=opts["model_arch_hash"],
        aggregation=opts["aggregation"],
        topology=opts["topology"],
        transport=opts["transport"],
        data_policy=opts["data_policy"],
        params=params,
        round_limit=opts["round_limit"],
        byzantine_f=opts["byzantine_f"],
        expires_at=opts["expires_at"],
        bootstrap_peers=opts["bootstrap_peers"],
        membership=opts["membership"],
    )
    if opts["membership"] == "certified" and not opts["sign_with"]:
        raise click.UsageError("--membership certified needs --sign-with: the creator's key issues the certificates")
    key = keys.load_private_key(opts["sign_with"]) if opts["sign_with"] else None
    manifest = create_manifest(options, build_registry(), key)
    write_manifest(manifest, opts["output"])
    terminal.out(f"Manifest written to {opts['output']}")
    terminal.out(f"Swarm ID: {manifest.swarm_id}")
    terminal.out(f"Signed by: {manifest.creator_pubkey}" if key else "Unsigned (use --sign-with for production)")
    if manifest.membership == "certified":
        terminal.out("Membership: certified (issue each peer a certificate with `quinkgl admit`)")
    for req in manifest.plugins:
        terminal.out(f"Requires: {req.distribution}{req.specifier} ({', '.join(req.provides)})")
        if installed_version(req.distribution) is None:
            terminal.warn(
                f"{req.distribution} is not installed here; peers need: pip install '{req.distribution}{req.specifier}'"
            )


@manifest_group.command("verify")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option(
    "--trusted-pubkey",
    "trusted",
    multiple=True,
    metavar="ed25519:HEX",
    help="Require the manifest to be signed by this key (repeatable: any of them).",
)
def verify_command(path: str, trusted: tuple[str, ...]) -> None:
    """Check a manifest's format, signature, creator and expiry."""
    from quinkgl.errors import QuinkGLError
    from quinkgl.manifest.codec import load_manifest
    from quinkgl.manifest.signing import SignatureStatus
    from quinkgl.trust import verify_manifest

    manifest = load_manifest(path)
    try:
        status = verify_manifest(manifest, trusted)
    except QuinkGLError as err:
        terminal.out("Manifest INVALID.")
        terminal.out(f"Swarm ID: {manifest.swarm_id}")
        raise err
    terminal.out("Manifest valid.")
    terminal.out(f"Swarm ID: {manifest.swarm_id}")
    if status is SignatureStatus.VALID:
        terminal.out("Signature: valid")
        terminal.out(f"Creator: {manifest.creator_pubkey}")
    else:
        terminal.out("Signature: none (unsigned)")
        terminal.warn("the manifest is unsigned: anyone could have written it (pass --trusted-pubkey to require one)")
    if manifest.expires_at:
        terminal.out(f"Expires: {manifest.expires_at}")


@manifest_group.command("show")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON with derived fields, for programs.")
def show_command(path: str, as_json: bool) -> None:
    """Show a manifest for a person (or, with --json, for a program)."""
    from quinkgl.manifest.codec import load_manifest, manifest_to_dict
    from quinkgl.manifest.signing import signature_status
    from quinkgl.manifest.times import is_expired

    manifest = load_manifest(path)
    status = signature_status(manifest)
    if as_json:
        doc = {
            "manifest": manifest_to_dict(manifest),
            "swarm_id": manifest.swarm_id,
            "signature_status": status.value,
            "data_schema_hash": manifest.data_schema_hash,
            "expired": is_expired(manifest.expires_at),
        }
        terminal.out(json.dumps(doc, indent=2, sort_keys=True))
        return
    from quinkgl_cli.render import manifest_table

    terminal.render(manifest_table(manifest, status.value, is_expired(manifest.expires_at)))
