"""The ``quinkgl`` command: a click group whose subcommands live one per module in ``commands/``.

Core raises :class:`quinkgl.errors.QuinkGLError` subclasses; this module renders them as one ``error:`` message
and exits with the error's documented code — never a traceback for a user mistake.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from quinkgl_cli import __version__

if TYPE_CHECKING:
    from quinkgl.errors import QuinkGLError

# command name -> "module:attribute"; imported only when that command runs, so `quinkgl --help` stays fast.
COMMANDS = {
    "admit": "quinkgl_cli.commands.admit:admit_command",
    "keygen": "quinkgl_cli.commands.keygen:keygen_command",
    "manifest": "quinkgl_cli.commands.manifest:manifest_group",
    "info": "quinkgl_cli.commands.info:info_command",
    "data": "quinkgl_cli.commands.data:data_command",
    "doctor": "quinkgl_cli.commands.doctor:doctor_command",
    "simulate": "quinkgl_cli.commands.simulate:simulate_command",
    "run": "quinkgl_cli.commands.run:run_command",
    "monitor": "quinkgl_cli.commands.monitor:monitor_command",
}


class LazyGroup(click.Group):
    """A group that imports each subcommand's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="quinkgl")
def cli() -> None:
    """QuinkGL: decentralized gossip learning over a signed manifest."""


def _fail(err: QuinkGLError) -> NoReturn:
    """Print ``err`` as one ``error:`` message and exit with its documented code."""
    click.echo(f"error: {err}", err=True)
    sys.exit(int(err.exit_code))


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point: run the CLI and map errors to exit codes."""
    from quinkgl.errors import ExitCode, QuinkGLError, first_in_group, user_error_in

    try:
        cli.main(args=argv, prog_name="quinkgl", standalone_mode=False)
    except QuinkGLError as err:
        _fail(err)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.ClickException as err:
        err.show()
        sys.exit(int(ExitCode.USAGE) if isinstance(err, click.UsageError) else err.exit_code)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except BaseException as exc:  # errors raised inside a trio nursery arrive wrapped in (nested) exception groups
        if isinstance(exc, (SystemExit, GeneratorExit)):
            raise
        found = user_error_in(exc)
        if found is not None:
            _fail(found)
        if first_in_group(exc, KeyboardInterrupt) is not None:
            click.echo("interrupted", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))
        raise
    sys.exit(0)


if __name__ == "__main__":
    main()
