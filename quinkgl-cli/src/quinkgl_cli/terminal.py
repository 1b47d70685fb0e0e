"""The CLI's one console wrapper: rich output with markup and highlighting off.

Markup stays off because much of what we print is untrusted or bracketed text (peer IDs, ``[aggregated]``
lines, manifest names) that rich would otherwise swallow or recolour.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import click


@functools.cache
def console(stderr: bool = False) -> Any:
    """The shared rich Console for stdout (or stderr)."""
    from rich.console import Console

    return Console(stderr=stderr, markup=False, highlight=False, emoji=False, soft_wrap=False)


def out(text: str = "") -> None:
    """Print a plain line to stdout (greppable, no styling)."""
    click.echo(text)


def note(text: str) -> None:
    """Print an informational line to stderr."""
    click.echo(text, err=True)


def warn(text: str) -> None:
    """Print a warning to stderr."""
    click.echo(f"warning: {text}", err=True)


def error(text: str) -> None:
    """Print an error to stderr."""
    click.echo(f"error: {text}", err=True)


def render(renderable: Any) -> None:
    """Render a rich object (table, panel) to stdout."""
    console().print(renderable)


def is_tty() -> bool:
    """Whether stdout is a terminal (live progress then; plain lines otherwise)."""
    return sys.stdout.isatty()
