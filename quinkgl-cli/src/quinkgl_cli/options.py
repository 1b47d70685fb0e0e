"""Parsers for option values shared by several commands."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click


def parse_shape(ctx: click.Context | None, param: Any, value: str | None) -> tuple[int, ...] | None:
    """``1,28,28`` → ``(1, 28, 28)``; a click callback that reports a bad shape as a usage error."""
    if value is None:
        return None
    try:
        dims = tuple(int(part) for part in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated positive integers such as 1,28,28; got {value!r}") from None
    if not dims or any(d <= 0 for d in dims):
        raise click.BadParameter(f"dimensions must be positive; got {value!r}")
    return dims


def parse_value(text: str) -> Any:
    """A KEY=VALUE value: integers and true/false become JSON ints/booleans, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        return text  # decimals stay strings: manifests hold no floats


def parse_params(items: Iterable[str], option: str) -> dict[str, Any]:
    """Turn repeated ``KEY=VALUE`` options into a dict."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{option} expects KEY=VALUE; got {item!r}")
        result[key.strip()] = parse_value(value.strip())
    return result


def parse_script_args(items: Iterable[str]) -> dict[str, str]:
    """``--script-arg k=v`` values as a dict of strings (the peer script converts them)."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--script-arg expects KEY=VALUE; got {item!r}")
        result[key.strip()] = value
    return result


def parse_bool(ctx: click.Context | None, param: Any, value: Any) -> bool:
    """``true/false/yes/no/1/0`` → bool (a click callback; the guide writes ``--strict-manifest false``)."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise click.BadParameter(f"expected true or false; got {value!r}")
