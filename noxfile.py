"""Sessions that set up and run QuinkGL: `nox -s demo` (the main job), `nox -s tests`, `nox -s bench`.

All sessions share ONE virtual environment, `.nox/quinkgl`: torch alone is ~5.5 GB per environment here, so
tests, demo and benchmarks must not each get their own. It is created on first use and re-installed only when a
pyproject.toml or the pinned requirements below change (a stamp file records what was installed).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
ENV = ROOT / ".nox" / "quinkgl"
DISTRIBUTIONS = ["quinkgl-core[torch]", "quinkgl-cli", "quinkgl-agg-robust[test]", "quinkgl-topo", "quinkgl-transport-libp2p"]
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
TOOLS = ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "matplotlib>=3.8"]

nox.options.sessions = ["tests"]


def _stamp() -> str:
    digest = hashlib.sha256(" ".join(TORCH + TOOLS + DISTRIBUTIONS).encode())
    for pyproject in sorted(ROOT.glob("quinkgl-*/pyproject.toml")):
        digest.update(pyproject.read_bytes())
    return digest.hexdigest()


def shared_env(session: nox.Session) -> dict[str, str]:
    """Create/update the shared environment; return env vars that put it first on PATH."""
    session.run("bash", str(ROOT / "scripts" / "system-deps.sh"), external=True)
    python = ENV / "bin" / "python"
    stamp_file = ENV / ".quinkgl-stamp"
    if not python.exists():
        session.run(sys.executable, "-m", "venv", str(ENV), external=True)
    if not stamp_file.exists() or stamp_file.read_text() != _stamp():
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        session.run(*pip, "--upgrade", "pip", external=True)
        session.run(*pip, *TORCH, external=True)
        session.run(*pip, *TOOLS, external=True)
        editable = [arg for dist in DISTRIBUTIONS
                    for arg in ("-e", str(ROOT / dist.split("[")[0]) + (dist[dist.index("["):] if "[" in dist else ""))]
        session.run(*pip, *editable, external=True)
        stamp_file.write_text(_stamp())
    return {"PATH": f"{ENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(ENV)}


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Run the whole test suite (CI size: reduced peers/rounds that still fail when a feature breaks)."""
    env = shared_env(session)
    session.run(str(ENV / "bin" / "python"), "-m", "pytest", *(session.posargs or ["-q"]), env=env, external=True)


@nox.session(venv_backend="none")
def demo(session: nox.Session) -> None:
    """The main job: the user guide's walkthrough on real data (see examples/walkthrough.py)."""
    env = shared_env(session)
    session.run(str(ENV / "bin" / "python"), str(ROOT / "examples" / "walkthrough.py"), *session.posargs,
                env=env, external=True)
