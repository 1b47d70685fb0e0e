"""``quinkgl keygen``: create a creator key."""

from __future__ import annotations

import click

from quinkgl_cli import terminal


@click.command("keygen")
@click.option(
    "--output",
    "-o",
    default="creator.key",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to write the private key (PKCS#8 PEM, mode 0600).",
)
@click.option("--force", is_flag=True, help="Replace an existing key file (the old key is lost).")
def keygen_command(output: str, force: bool) -> None:
    """Create an Ed25519 creator key; prints the public key as the last line."""
    from quinkgl import keys

    key = keys.generate_private_key()
    keys.write_private_key(key, output, overwrite=force)
    terminal.note(
        f"Private key written to {output} with 0600 permissions. Treat this file as a secret: "
        "never commit it to git (add it to .gitignore)."
    )
    terminal.out(keys.public_key_text(key))
