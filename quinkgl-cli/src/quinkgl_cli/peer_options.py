"""Options `quinkgl run` and `quinkgl simulate` share (manifest, model/data source, local work, trust)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from quinkgl_cli.options import parse_bool


def peer_source_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """--manifest, --script/--data, --script-arg, --local-steps/--local-epochs, --strict-manifest, trust, --device."""
    decorators = [
        click.option(
            "--manifest",
            "manifest_path",
            required=True,
            type=click.Path(dir_okay=False),
            help="The swarm's manifest (.qgl).",
        ),
        click.option(
            "--script", type=click.Path(dir_okay=False), help="Peer script (Mode B): build_model, build_loaders, …"
        ),
        click.option("--data", help="Standard dataset instead of a script (Mode A): mnist, fashion-mnist, cifar10."),
        click.option(
            "--script-arg",
            "script_args",
            multiple=True,
            metavar="KEY=VALUE",
            help="Passed to build_model/build_loaders as keyword arguments (repeatable).",
        ),
        click.option("--local-steps", type=click.IntRange(min=1), help="Training batches per round."),
        click.option(
            "--local-epochs",
            type=click.FloatRange(min=0, min_open=True),
            help="Training epochs over the local data per round (default 1).",
        ),
        click.option(
            "--strict-manifest",
            default="true",
            callback=parse_bool,
            metavar="true|false",
            show_default=True,
            help="Refuse a model whose arch hash differs from the manifest (false: warn).",
        ),
        click.option(
            "--trust-policy",
            type=click.Choice(["open", "tofu", "pinned"]),
            default="tofu",
            show_default=True,
            help="How to decide whether to accept the manifest.",
        ),
        click.option(
            "--trusted-pubkey",
            "trusted_keys",
            multiple=True,
            metavar="ed25519:HEX",
            help="Creator key(s) to accept (required by --trust-policy pinned).",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for shuffling and peer choice."),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            help="torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:1…",
        ),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function
