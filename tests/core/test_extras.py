"""Commands that need an optional extra say so in one line naming the `pip install` (quinkgl.extras)."""

from __future__ import annotations

import pytest

from quinkgl import extras
from quinkgl.errors import ExitCode, PluginError


def test_a_missing_extra_is_one_line_naming_the_pip_install(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "torch", ("torch", "no_such_module_for_quinkgl_tests"))
    with pytest.raises(extras.MissingDependencyError) as info:
        extras.require_extra("torch", "quinkgl simulate")
    message = str(info.value)
    assert isinstance(info.value, PluginError) and info.value.exit_code == ExitCode.PLUGIN_MISSING
    assert "\n" not in message
    assert "missing: no_such_module_for_quinkgl_tests" in message
    assert message.endswith("pip install 'quinkgl-core[torch]'")


def test_present_extras_pass_without_importing_them():
    pytest.importorskip("torch")
    extras.require_extra("torch", "quinkgl run")
    assert extras.missing_modules(["json", "no_such_module_for_quinkgl_tests", "a.b"]) == [
        "no_such_module_for_quinkgl_tests",
        "a.b",
    ]
