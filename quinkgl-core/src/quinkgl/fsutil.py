"""Small filesystem helpers shared by keys, manifests, trust state and checkpoints."""

from __future__ import annotations

import errno
import os
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
