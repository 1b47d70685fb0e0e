"""`quinkgl_cli.main.main` finds a QuinkGLError inside (nested) exception groups, as trio raises them."""

from __future__ import annotations

import pytest

from quinkgl.errors import ExitCode, NetworkError
from quinkgl.transport import TransportError
from quinkgl_cli import main as cli_main


class FakeGroup(Exception):
    """Duck-typed like ``ExceptionGroup`` (and the ``exceptiongroup`` backport on Python 3.10)."""

    def __init__(self, *exceptions: BaseException) -> None:
        super().__init__("group")
        self.exceptions = exceptions


def raising(exc: BaseException):
    def fake_main(**kwargs):
        raise exc

    return fake_main


@pytest.mark.parametrize(
    "exc",
    [
        TransportError("cannot listen on 127.0.0.1:1: the port is already in use"),
        FakeGroup(FakeGroup(ValueError("other"), TransportError("cannot listen on 127.0.0.1:1: in use"))),
    ],
)
def test_network_errors_are_one_line_with_the_network_code(monkeypatch, capsys, exc):
    monkeypatch.setattr(cli_main.cli, "main", raising(exc))
    with pytest.raises(SystemExit) as info:
        cli_main.main([])
    assert info.value.code == int(ExitCode.NETWORK) == 12
    err = capsys.readouterr().err
    assert err.startswith("error: cannot listen on 127.0.0.1:1") and err.count("\n") == 1
    assert isinstance(TransportError("x"), NetworkError)


def test_a_group_holding_keyboard_interrupt_is_an_interruption(monkeypatch, capsys):
    class FakeBaseGroup(BaseException):
        exceptions = (KeyboardInterrupt(),)

    monkeypatch.setattr(cli_main.cli, "main", raising(FakeBaseGroup()))
    with pytest.raises(SystemExit) as info:
        cli_main.main([])
    assert info.value.code == int(ExitCode.INTERRUPTED)


def test_a_bug_inside_a_group_is_not_hidden(monkeypatch):
    monkeypatch.setattr(cli_main.cli, "main", raising(FakeGroup(RuntimeError("a bug"))))
    with pytest.raises(FakeGroup):
        cli_main.main([])


def test_main_does_not_name_base_exception_group():
    import inspect

    assert "BaseExceptionGroup" not in inspect.getsource(cli_main)  # absent on Python 3.10
