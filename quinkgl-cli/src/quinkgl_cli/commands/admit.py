"""``quinkgl admit``: the creator of a certified swarm issues a membership certificate to one peer."""

from __future__ import annotations

import click

from quinkgl_cli import terminal


@click.command("admit")
@click.option(
    "--manifest",
    "manifest_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The swarm's manifest (the certificate names its swarm ID).",
)
@click.option(
    "--sign-with",
    required=True,
    type=click.Path(dir_okay=False),
    help="The manifest creator's private key (the one that signed the manifest).",
)
@click.option("--peer-id", help="The peer's libp2p peer ID (12D3KooW…), printed by `quinkgl run` at start.")
@click.option(
    "--node-key",
    type=click.Path(dir_okay=False),
    help="The peer's identity key file (<checkpoint-dir>/libp2p-identity.pem, or one made with "
    "`quinkgl keygen`): its peer ID is derived, for a peer that has not started yet.",
)
@click.option(
    "--node-pubkey",
    metavar="ed25519:HEX",
    help="The public half of the peer's identity key (the last line `quinkgl keygen` prints), so the "
    "private key never leaves the peer.",
)
@click.option("--expires-at", help="Expiry date (YYYY-MM-DD, end of day UTC) or ISO datetime with timezone.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Certificate file to write.")
def admit_command(
    manifest_path: str,
    sign_with: str,
    peer_id: str | None,
    node_key: str | None,
    node_pubkey: str | None,
    expires_at: str | None,
    output: str,
) -> None:
    """Issue a membership certificate admitting one peer to a certified swarm."""
    from cryptography.hazmat.primitives import serialization

    from quinkgl import keys
    from quinkgl.errors import KeyFileError, MembershipError
    from quinkgl.manifest.codec import load_manifest
    from quinkgl.membership import (
        MEMBERSHIP_CERTIFIED,
        check_libp2p_peer_id,
        issue_certificate,
        peer_id_from_identity_key,
        peer_id_from_public_key,
        write_certificate,
    )
    from quinkgl.trust import check_signature

    if sum(x is not None for x in (peer_id, node_key, node_pubkey)) != 1:
        raise click.UsageError("give exactly one of --peer-id, --node-key or --node-pubkey")
    manifest = load_manifest(manifest_path)
    check_signature(manifest)
    key = keys.load_private_key(sign_with)
    if manifest.creator_pubkey != keys.public_key_text(key):
        raise KeyFileError(
            f"{sign_with} is not the key that signed {manifest_path} (creator "
            f"{manifest.creator_pubkey}); only the manifest's creator can admit peers"
        )
    if manifest.membership != MEMBERSHIP_CERTIFIED:
        terminal.warn(
            f"{manifest_path} is an open swarm (membership: open): anyone may join, certificates are "
            "not checked; create it with --membership certified to admit only certified peers"
        )
    if node_key is not None:
        peer_id = peer_id_from_identity_key(node_key)
    elif node_pubkey is not None:
        try:
            public = keys.parse_public_key(node_pubkey)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--node-pubkey") from None
        peer_id = peer_id_from_public_key(
            public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
    assert peer_id is not None
    if manifest.transport.name == "libp2p":
        try:
            check_libp2p_peer_id(peer_id)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--peer-id") from None
    cert = issue_certificate(key, swarm_id=manifest.swarm_id, peer_id=peer_id, expires_at=expires_at)
    try:
        write_certificate(cert, output)
    except OSError as err:
        raise MembershipError(f"cannot write {output}: {err.strerror or err}") from None
    terminal.out(f"Membership certificate written to {output}")
    terminal.out(f"Peer ID: {peer_id}")
    terminal.out(f"Swarm ID: {manifest.swarm_id}")
    terminal.out(f"Expires: {cert.expires_at or 'never'}")
