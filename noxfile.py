"""Sessions that set up and run QuinkGL: `nox -s demo` (the main job), `nox -s tests`, `nox -s light`, `nox -s lint`.

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
DISTRIBUTIONS = [
    "quinkgl-core[torch]",
    "quinkgl-cli[metrics]",
    "quinkgl-agg-robust[test]",
    "quinkgl-topo",
    "quinkgl-transport-libp2p",
]
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
TOOLS = ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "matplotlib>=3.8"]
LINT = ["ruff==0.17.6", "mypy==2.4.1"]

nox.options.sessions = ["tests"]


def _stamp() -> str:
    digest = hashlib.sha256(" ".join(TORCH + TOOLS + LINT + DISTRIBUTIONS).encode())
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
        session.run(*pip, *TOOLS, *LINT, external=True)
        editable = [
            arg
            for dist in DISTRIBUTIONS
            for arg in ("-e", str(ROOT / dist.partition("[")[0]) + "".join(dist.partition("[")[1:]))
        ]
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
    session.run(
        str(ENV / "bin" / "python"), str(ROOT / "examples" / "walkthrough.py"), *session.posargs, env=env, external=True
    )


@nox.session(venv_backend="none")
def gpu(session: nox.Session) -> None:
    """The walkthrough with every peer on CUDA (for machines with a GPU); fails clearly where there is none."""
    env = shared_env(session)
    python = str(ENV / "bin" / "python")
    session.run(
        python,
        "-c",
        "import sys, torch; sys.exit(0 if torch.cuda.is_available() else "
        "'nox -s gpu needs a CUDA GPU: torch.cuda.is_available() is False here')",
        env=env,
        external=True,
    )
    args = session.posargs or ["--rounds", "3", "--local-steps", "40"]
    session.run(
        python,
        str(ROOT / "examples" / "walkthrough.py"),
        "--workdir",
        str(ROOT / "runs" / "walkthrough-gpu"),
        "--device",
        "cuda",
        *args,
        env=env,
        external=True,
    )
    logs = sorted((ROOT / "runs" / "walkthrough-gpu").glob("peer-*.log"))
    if not logs or not all("device cuda" in log.read_text() for log in logs):
        session.error("not every peer's start line says 'device cuda'")


@nox.session(venv_backend="none")
def light(session: nox.Session) -> None:
    """quinkgl-core + quinkgl-cli alone (no torch), a fresh venv per claimed Python (scripts/light-install-check.sh)."""
    session.run("bash", str(ROOT / "scripts" / "light-install-check.sh"), *session.posargs, external=True)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff (format check and lint, ruff.toml) and mypy (mypy.ini) over the five distributions, tests and scripts."""
    env = shared_env(session)
    bin_dir = ENV / "bin"
    session.run(str(bin_dir / "ruff"), "format", "--check", str(ROOT), env=env, external=True)
    session.run(str(bin_dir / "ruff"), "check", str(ROOT), env=env, external=True)
    session.run(str(bin_dir / "mypy"), "--config-file", str(ROOT / "mypy.ini"), env=env, external=True)
