"""Crash-safe checkpoints of one peer (``--checkpoint-dir``) and its JSON-lines metrics log.

On-disk layout (format version 1)::

    <checkpoint-dir>/
        round-000012/                 one folder per completed round (zero-padded, parsed as an integer)
            model.safetensors         model weights
            optimizer.safetensors     the optimizer's tensors (absent when no optimizer state was given)
            state.json                round, metrics, peer view, extra, optimizer structure, created time,
                                      format version, and the sha256 + size of each file above
        round-000013/
        latest                        text "round-000013\\n": the newest checkpoint written (a hint, see below)
        metrics.jsonl                 one JSON object per line, appended by :class:`MetricsLog`
        .tmp-*                        leftovers of an interrupted write; ignored, removed by the next save

How a save stays atomic: every file is written to a temp file in its final folder, flushed, fsynced and
``os.replace``-d into place, then the folder is fsynced. A round is first assembled in a staging folder
``.tmp-round-…`` and renamed to ``round-NNNNNN`` in one step, so a ``round-*`` folder is either absent or
complete; that rename is the commit point. ``latest`` is rewritten afterwards, and then all but the newest
``keep`` rounds are removed (each is renamed to ``.tmp-…`` first, so a crash mid-delete leaves nothing that
looks like a checkpoint).

How a load stays safe: :meth:`CheckpointStore.load_latest` does not trust anything on disk. It walks the
``round-*`` folders newest first and returns the first whose ``state.json`` parses and whose files match the
recorded sizes and digests. ``latest`` is only cross-checked: a garbled pointer, or one naming a missing
folder, is reported but cannot hide an intact checkpoint. Every checkpoint passed over is logged on the
``quinkgl.checkpoint`` logger and listed in ``Checkpoint.skipped`` (and ``CheckpointStore.last_skipped``).

Nothing here uses pickle: tensors go through safetensors, everything else through JSON. A torch optimizer's
``state_dict()`` is split into its tensors (keys such as ``state.0.momentum_buffer``) and a JSON tree that
records the nesting, integer keys and tuples, so the rebuilt dict is accepted by ``optimizer.load_state_dict``.
Loaded tensors are on the CPU. One process writes a directory at a time: the peer that owns it holds an
``flock`` on ``.lock`` (:meth:`CheckpointStore.acquire_lock`). Every file read is bounded and refuses
anything but a regular file (a FIFO, a link to ``/dev/zero``), and ``metrics.jsonl`` is never written through
a symlink.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import attrs
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from quinkgl.errors import CheckpointInUseError, QuinkGLError
from quinkgl.fsutil import atomic_write_bytes, fsync_directory, read_regular_file

__all__ = ["Checkpoint", "CheckpointDirError", "CheckpointStore", "MetricsLog", "SkippedCheckpoint"]

logger = logging.getLogger("quinkgl.checkpoint")

FORMAT_VERSION = 1
_FORMAT_NAME = "quinkgl-checkpoint"
_MODEL_FILE = "model.safetensors"
_OPTIMIZER_FILE = "optimizer.safetensors"
_STATE_FILE = "state.json"
_LATEST_FILE = "latest"
_METRICS_FILE = "metrics.jsonl"
_TMP_PREFIX = ".tmp-"
_LOCK_FILE = ".lock"
MAX_STATE_BYTES = 64 * 1024 * 1024  # state.json: metrics, a bounded peer view, the optimizer's structure
MAX_LATEST_BYTES = 256
MAX_METRICS_LOG_BYTES = 256 * 1024 * 1024
_ROUND_RE = re.compile(r"^round-([0-9]+)\Z")


class CheckpointDirError(QuinkGLError):
    """The checkpoint directory cannot be used: it is a file, cannot be created, or cannot be written."""


@attrs.frozen
class SkippedCheckpoint:
    """A checkpoint (or the ``latest`` pointer) that ``load_latest`` passed over, and why."""

    path: Path
    reason: str


@attrs.frozen
class Checkpoint:
    """One intact checkpoint as loaded from disk."""

    round: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    metrics: dict[str, Any]
    peer_view: dict[str, Any]
    extra: dict[str, Any] | None
    path: Path
    created_at: str = ""
    skipped: tuple[SkippedCheckpoint, ...] = ()


class _Corrupt(Exception):
    """Internal: a checkpoint folder failed verification (never escapes this module)."""


# ---------------------------------------------------------------------------------------------- file helpers


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`quinkgl.fsutil.atomic_write_bytes`)."""
    atomic_write_bytes(str(path), data, mode=0o600)


def _remove(path: Path) -> None:
    """Remove a file or a folder tree, ignoring what is already gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _json_default(value: Any) -> Any:
    """Let metrics hold tensor/numpy scalars: JSON cannot, so convert them to plain numbers."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    raise TypeError(f"checkpoint metadata must be JSON-serialisable, got {type(value).__name__}: {value!r}")


def _dumps(value: Any) -> str:
    """Serialise metadata; NaN losses are allowed (Python's JSON reads them back)."""
    return json.dumps(value, default=_json_default)


# ------------------------------------------------------------------------------------ tensors without pickle


def _tensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """Serialise tensors with safetensors, first giving each one its own tight, contiguous CPU storage."""
    # safetensors refuses tensors that share storage (tied weights) or are non-contiguous views; copy only those.
    seen: set[int] = set()
    plain: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            got = f"{type(key).__name__} -> {type(tensor).__name__}"
            raise TypeError(f"expected a dict of str -> torch.Tensor, got {got}")
        t = tensor.detach().cpu()
        storage = t.untyped_storage()
        tight = t.is_contiguous() and t.storage_offset() == 0 and t.numel() * t.element_size() == storage.nbytes()
        if not tight or storage.data_ptr() in seen:
            t = t.contiguous().clone()
        seen.add(t.untyped_storage().data_ptr())
        plain[key] = t
    return safetensors_save(plain, metadata={"format": "pt"})


def _encode_tree(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Turn a nested optimizer state into JSON, moving tensors into ``tensors`` under dotted path keys."""
    # JSON objects in the output are always single-key tags, so plain dicts can never be mistaken for them:
    # {"dict": [[key, value], ...]} keeps int keys as ints, {"tuple": [...]}, {"tensor": key}, {"float": "nan"}.
    if isinstance(value, torch.Tensor):
        key, n = path or "tensor", 0
        while key in tensors:  # a dict key containing dots can collide with a nested path; keep keys unique
            n += 1
            key = f"{path or 'tensor'}#{n}"
        tensors[key] = value
        return {"tensor": key}
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, (int, str)):
                raise TypeError(f"optimizer state key {k!r} at {path or '<root>'} is not an int or str")
            items.append([k, _encode_tree(v, f"{path}.{k}" if path else str(k), tensors)])
        return {"dict": items}
    if isinstance(value, (list, tuple)):
        encoded = [_encode_tree(v, f"{path}.{i}" if path else str(i), tensors) for i, v in enumerate(value)]
        return {"tuple": encoded} if isinstance(value, tuple) else encoded
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}  # 'nan', 'inf', '-inf': float() parses them back
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"optimizer state value at {path or '<root>'} has unsupported type {type(value).__name__}")


def _decode_tree(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Rebuild the structure written by :func:`_encode_tree`."""
    if isinstance(node, list):
        return [_decode_tree(v, tensors) for v in node]
    if isinstance(node, dict):
        if len(node) != 1:
            raise ValueError(f"malformed optimizer node {node!r}")
        ((tag, payload),) = node.items()
        if tag == "dict":
            return {k: _decode_tree(v, tensors) for k, v in payload}
        if tag == "tuple":
            return tuple(_decode_tree(v, tensors) for v in payload)
        if tag == "tensor":
            return tensors[payload]
        if tag == "float":
            return float(payload)
        raise ValueError(f"unknown optimizer node tag {tag!r}")
    return node


def _sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


# -------------------------------------------------------------------------------------------------- store


class CheckpointStore:
    """The checkpoints of one peer in one directory; keeps the newest ``keep`` rounds."""

    def __init__(self, directory: str | os.PathLike[str], keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self.last_skipped: tuple[SkippedCheckpoint, ...] = ()
        self._lock_fd: int | None = None
        self._ensure_usable()

    def acquire_lock(self) -> None:
        """Hold the directory for this store until :meth:`release_lock` (or the process ends).

        Two peers writing one directory would share a peer ID and interleave their checkpoints; the second one
        gets :class:`~quinkgl.errors.CheckpointInUseError` instead. The lock is an ``flock`` on ``.lock``, which
        the kernel drops when the holder exits, however it exits. Idempotent."""
        if self._lock_fd is not None:
            return
        path = self.directory / _LOCK_FILE
        flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise CheckpointDirError(f"cannot open lock file {path}: {exc.strerror or exc}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CheckpointDirError(f"lock file {path} is not a regular file; remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
                raise CheckpointInUseError(
                    f"checkpoint directory {self.directory} is in use by process {holder}; two peers cannot share "
                    "one --checkpoint-dir (they would run with the same peer ID): give each peer its own"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    def release_lock(self) -> None:
        """Let another process use the directory."""
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    @property
    def metrics_log(self) -> MetricsLog:
        """The peer's metrics log inside this directory."""
        return MetricsLog(self.directory / _METRICS_FILE)

    def _ensure_usable(self) -> None:
        """Create the directory if needed; raise CheckpointDirError if it cannot hold checkpoints."""
        d = self.directory
        if d.exists() and not d.is_dir():
            raise CheckpointDirError(f"checkpoint directory {d} exists but is not a directory")
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointDirError(f"cannot create checkpoint directory {d}: {exc.strerror or exc}") from exc
        if not os.access(d, os.W_OK | os.X_OK):
            raise CheckpointDirError(f"checkpoint directory {d} is not writable")

    def rounds(self) -> list[int]:
        """Round numbers of the ``round-*`` folders present (complete or not), oldest first."""
        return sorted(r for r, _ in self._round_dirs())

    def _round_dirs(self) -> list[tuple[int, Path]]:
        """``(round, folder)`` for every ``round-NNNNNN`` folder, newest first."""
        found = []
        for entry in self.directory.iterdir():
            m = _ROUND_RE.match(entry.name)
            if m and entry.is_dir():
                found.append((int(m.group(1)), entry))
        return sorted(found, reverse=True)

    # -- save

    def save(
        self,
        round_idx: int,
        model_state: dict[str, torch.Tensor],
        optimizer_state: dict[str, Any] | None,
        metrics: dict[str, Any],
        peer_view: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Atomically write the checkpoint of completed round ``round_idx``; return its folder."""
        if isinstance(round_idx, bool) or not isinstance(round_idx, int) or round_idx < 0:
            raise ValueError(f"round_idx must be a non-negative int, got {round_idx!r}")
        # Serialise everything before touching the disk, so a bad argument never leaves a partial round behind.
        files = {_MODEL_FILE: _tensors_bytes(model_state)}
        optimizer_tree = None
        if optimizer_state is not None:
            opt_tensors: dict[str, torch.Tensor] = {}
            optimizer_tree = _encode_tree(optimizer_state, "", opt_tensors)
            files[_OPTIMIZER_FILE] = _tensors_bytes(opt_tensors)
        state = {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "round": round_idx,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "metrics": metrics,
            "peer_view": peer_view,
            "extra": extra,
            "optimizer": optimizer_tree,
            "files": {name: {"sha256": _sha256(data), "size": len(data)} for name, data in files.items()},
        }
        state_bytes = _dumps(state).encode("utf-8")

        self._ensure_usable()
        name = f"round-{round_idx:06d}"
        final = self.directory / name
        staging = None
        try:
            self._clean_temp()
            staging = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{name}-", dir=self.directory))
            for fname, data in files.items():
                _atomic_write(staging / fname, data)
            _atomic_write(staging / _STATE_FILE, state_bytes)  # last: a folder with a valid state.json is whole
            if final.exists():  # re-saving a round: move the old one aside, since a rename cannot replace a folder
                _remove_atomically(final)
            os.rename(staging, final)
            staging = None
            fsync_directory(self.directory)
            _atomic_write(self.directory / _LATEST_FILE, f"{name}\n".encode())
            self._prune(round_idx)
        except OSError as exc:
            raise CheckpointDirError(f"cannot write checkpoint {final}: {exc.strerror or exc}") from exc
        finally:
            if staging is not None:
                _remove(staging)
        return final

    def _clean_temp(self) -> None:
        """Remove leftovers of interrupted writes (``.tmp-*``) from the directory."""
        for entry in self.directory.iterdir():
            if entry.name.startswith(_TMP_PREFIX):
                _remove(entry)

    def _prune(self, newest: int) -> None:
        """Keep the ``keep`` newest rounds up to ``newest`` whose state.json parses; remove the rest."""
        kept = 0
        for r, folder in self._round_dirs():
            # Rounds beyond the one just saved belong to an abandoned timeline (the peer resumed from an
            # earlier round), and would otherwise shadow the new checkpoints on the next load.
            if r <= newest and kept < self.keep and _state_parses(folder):
                kept += 1
                continue
            _remove_atomically(folder)

    # -- load

    def load_latest(self) -> Checkpoint | None:
        """Return the newest complete and intact checkpoint, or None; corrupt ones are skipped and reported."""
        if not self.directory.exists():
            self.last_skipped = ()
            return None
        if not self.directory.is_dir():
            raise CheckpointDirError(f"checkpoint directory {self.directory} exists but is not a directory")
        skipped: list[SkippedCheckpoint] = []
        try:
            folders = self._round_dirs()
        except OSError as exc:
            raise CheckpointDirError(f"cannot list checkpoint directory {self.directory}: {exc}") from exc
        self._check_pointer({p.name for _, p in folders}, skipped)
        result = None
        for r, folder in folders:
            try:
                result = _load_folder(r, folder)
                break
            except Exception as exc:  # anything a damaged file can provoke must only skip this checkpoint
                reason = str(exc) if isinstance(exc, _Corrupt) else f"{type(exc).__name__}: {exc}"
                skipped.append(SkippedCheckpoint(folder, reason))
        for s in skipped:
            logger.warning("skipping checkpoint %s: %s", s.path, s.reason)
        self.last_skipped = tuple(skipped)
        if result is None:
            return None
        return attrs.evolve(result, skipped=self.last_skipped)

    def _check_pointer(self, names: set[str], skipped: list[SkippedCheckpoint]) -> None:
        """Report a ``latest`` pointer that is unreadable or names a missing folder (it is only a hint)."""
        pointer = self.directory / _LATEST_FILE
        try:
            text = read_regular_file(pointer, MAX_LATEST_BYTES).decode("utf-8").strip()
        except FileNotFoundError:
            if names:
                skipped.append(SkippedCheckpoint(pointer, "latest pointer is missing"))
            return
        except (OSError, UnicodeDecodeError) as exc:
            skipped.append(SkippedCheckpoint(pointer, f"latest pointer is unreadable: {exc}"))
            return
        if not _ROUND_RE.match(text):
            skipped.append(SkippedCheckpoint(pointer, f"latest pointer is garbled: {text[:60]!r}"))
        elif text not in names:
            skipped.append(SkippedCheckpoint(pointer, f"latest pointer names missing folder {text}"))


def _remove_atomically(folder: Path) -> None:
    """Rename a folder to a temp name (one atomic step), then delete it at leisure."""
    doomed = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}old-", dir=folder.parent))
    os.rename(folder, doomed / folder.name)
    fsync_directory(folder.parent)
    _remove(doomed)


def _state_parses(folder: Path) -> bool:
    """Cheap completeness test used when pruning: does the folder's state.json parse as an object?"""
    try:
        return isinstance(json.loads(read_regular_file(folder / _STATE_FILE, MAX_STATE_BYTES)), dict)
    except (OSError, ValueError, RecursionError):
        return False


def _read_verified(folder: Path, name: str, files: dict[str, Any]) -> bytes:
    """Read one data file and check it against the size and sha256 recorded in state.json."""
    meta = files.get(name)
    if not isinstance(meta, dict):
        raise _Corrupt(f"state.json records no digest for {name}")
    size = meta.get("size")
    if type(size) is not int or size < 0:
        raise _Corrupt(f"state.json records no valid size for {name}")
    try:
        data = read_regular_file(folder / name, size)
    except FileNotFoundError:
        raise _Corrupt(f"{name} is missing") from None
    except OSError as exc:
        raise _Corrupt(f"{name} is unreadable: {exc.strerror}") from None
    if len(data) != meta.get("size"):
        raise _Corrupt(f"{name} has {len(data)} bytes, state.json records {meta.get('size')} (truncated?)")
    if _sha256(data) != meta.get("sha256"):
        raise _Corrupt(f"{name} sha256 does not match state.json")
    return data


def _load_folder(round_idx: int, folder: Path) -> Checkpoint:
    """Load and verify one round folder; raise _Corrupt (or anything a damaged file provokes) if not intact."""
    try:
        raw = read_regular_file(folder / _STATE_FILE, MAX_STATE_BYTES)
    except FileNotFoundError:
        raise _Corrupt("state.json is missing (incomplete checkpoint)") from None
    except OSError as exc:
        raise _Corrupt(f"state.json is unreadable: {exc.strerror}") from None
    try:
        state = json.loads(raw)
    except ValueError as exc:
        raise _Corrupt(f"state.json is not valid JSON: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != _FORMAT_NAME:
        raise _Corrupt("state.json is not a quinkgl checkpoint state")
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _Corrupt(f"format version {version!r} is not supported (this version reads up to {FORMAT_VERSION})")
    if state.get("round") != round_idx:
        raise _Corrupt(f"state.json says round {state.get('round')!r}, folder says {round_idx}")
    files = state.get("files")
    if not isinstance(files, dict):
        raise _Corrupt("state.json has no file digests")
    model_state = safetensors_load(_read_verified(folder, _MODEL_FILE, files))
    optimizer_state = None
    if state.get("optimizer") is not None:
        opt_tensors = safetensors_load(_read_verified(folder, _OPTIMIZER_FILE, files))
        optimizer_state = _decode_tree(state["optimizer"], opt_tensors)
    return Checkpoint(
        round=round_idx,
        model_state=model_state,
        optimizer_state=optimizer_state,
        metrics=state.get("metrics") or {},
        peer_view=state.get("peer_view") or {},
        extra=state.get("extra"),
        path=folder,
        created_at=str(state.get("created_at", "")),
    )


# ------------------------------------------------------------------------------------------------ metrics log


class MetricsLog:
    """Append-only JSON-lines log of per-round metrics; survives a crash mid-line."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as a JSON line and flush it; refuses a symlink or anything but a regular file."""
        line = _dumps(record)
        # O_NOFOLLOW: a symlink planted as metrics.jsonl must not make us append to the file it points at.
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise CheckpointDirError(
                f"cannot append to {self.path}: {exc.strerror or exc} (a symlink is refused)"
            ) from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise CheckpointDirError(f"{self.path} is not a regular file; remove it")
            # A crash can leave a last line without its newline; start a fresh line so the new record stays readable.
            prefix = "\n" if info.st_size > 0 and os.pread(fd, 1, info.st_size - 1) != b"\n" else ""
            data = f"{prefix}{line}\n".encode()
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """Return every record; a line cut short by a crash is skipped."""
        try:
            text = read_regular_file(self.path, MAX_METRICS_LOG_BYTES).decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                logger.warning("%s: skipping unreadable line %d", self.path, number)
        return records
