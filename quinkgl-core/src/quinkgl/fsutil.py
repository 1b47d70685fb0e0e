"""Small filesystem helpers shared by keys, manifests, trust state and checkpoints."""

from __future__ import annotations

import errno
import os
import stat
import tempfile


def atomic_write_bytes(path: str, data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a partial one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path appeared meanwhile, unlike rename
            os.unlink(tmp)
        fsync_directory(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename inside it survives a crash."""
    if os.name == "nt":  # Windows cannot open a directory; NTFS journals renames anyway
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems (certain network mounts) refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


class UnsafeFileError(OSError):
    """A local file QuinkGL reads is not a regular file, or is larger than that kind of file can be.

    An :class:`OSError` with ``strerror`` set, so callers that report ``err.strerror`` need no change."""

    def __init__(self, path: str, reason: str):
        super().__init__(errno.EINVAL, reason, path)


def read_regular_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """Read a regular file of at most ``max_bytes`` bytes; never blocks on a FIFO, never reads a device.

    Symlinks to regular files are followed. A FIFO, socket, device (``/dev/zero``) or directory raises
    :class:`UnsafeFileError`, and so does a file larger than ``max_bytes`` (checked before and while reading, so a
    file growing underneath cannot make the read unbounded). Other failures are the usual :class:`OSError`."""
    name = os.fspath(path)
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(name, f"not a regular file ({_file_kind(info.st_mode)})")
        if info.st_size > max_bytes:
            raise UnsafeFileError(name, f"file is {info.st_size} bytes, more than the {max_bytes} expected at most")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise UnsafeFileError(name, f"file is more than the {max_bytes} bytes expected at most")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a plain file"
