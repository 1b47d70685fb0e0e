"""Same-machine discovery with no configuration: a per-user registry directory.

Every running peer writes one JSON file ``<peer id>.json`` into the registry directory, holding its swarm ID,
peer ID, listen addresses, process ID (and the process start time where the OS tells it, so a reused PID is
not mistaken for a live peer). Peers scan the directory, drop files whose process is gone, and dial the peers
of **their own swarm ID** only. No network traffic is involved; the directory is created with mode 0700 so
other users can neither read it nor plant entries in it.

Directory, in order of precedence: ``config.options["registry_dir"]``, the ``QUINKGL_PEER_REGISTRY``
environment variable, ``<QuinkGL state dir>/peers`` (``$QUINKGL_STATE_DIR``, else
``$XDG_STATE_HOME/quinkgl``, else ``~/.local/state/quinkgl``; see :mod:`quinkgl.paths`).

Pure Python: this module does not import libp2p.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from quinkgl.manifest.peers import parse_peer_address
from quinkgl.paths import state_dir as quinkgl_state_dir

logger = logging.getLogger(__name__)

ENV_VAR = "QUINKGL_PEER_REGISTRY"
ENTRY_VERSION = 1
_MAX_ENTRY_BYTES = 64 * 1024


def default_registry_dir() -> Path:
    """The per-user registry directory used when nothing overrides it: ``<QuinkGL state dir>/peers``."""
    return Path(quinkgl_state_dir()) / "peers"


def resolve_registry_dir(options: Mapping[str, Any] | None = None) -> Path:
    """``options["registry_dir"]`` > ``$QUINKGL_PEER_REGISTRY`` > the per-user default."""
    if options and options.get("registry_dir"):
        return Path(str(options["registry_dir"])).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return default_registry_dir()


def process_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or None if unknown."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
        fields = raw[raw.rindex(")") + 2 :].split()
        return int(fields[19])  # field 22 overall
    except (ValueError, IndexError):
        return None


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """True if process ``pid`` exists (and, when both are known, started at ``start_time``)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    if start_time is not None:
        actual = process_start_time(pid)
        if actual is not None and actual != start_time:
            return False  # the PID was reused by another process
    return True


@attrs.frozen
class RegistryEntry:
    """One running peer as recorded in the registry."""

    swarm_id: str
    peer_id: str
    addrs: tuple[str, ...]
    pid: int
    pid_start: int | None = None
    started_at: float = 0.0

    def to_json(self) -> bytes:
        doc = {
            "version": ENTRY_VERSION,
            "swarm_id": self.swarm_id,
            "peer_id": self.peer_id,
            "addrs": list(self.addrs),
            "pid": self.pid,
            "pid_start": self.pid_start,
            "started_at": self.started_at,
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RegistryEntry:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != ENTRY_VERSION:
            raise ValueError("not a registry entry of version 1")
        addrs = doc.get("addrs")
        if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
            raise ValueError("addrs must be a list of strings")
        swarm_id, peer_id, pid = doc.get("swarm_id"), doc.get("peer_id"), doc.get("pid")
        if not isinstance(swarm_id, str) or not isinstance(peer_id, str) or not isinstance(pid, int):
            raise ValueError("swarm_id, peer_id and pid are required")
        pid_start = doc.get("pid_start")
        return cls(
            swarm_id=swarm_id,
            peer_id=peer_id,
            addrs=tuple(a for a in addrs if _is_peer_address(a)),  # core's grammar; others are never dialled
            pid=pid,
            pid_start=pid_start if isinstance(pid_start, int) else None,
            started_at=float(doc.get("started_at") or 0.0),
        )


def _is_peer_address(text: str) -> bool:
    try:
        parse_peer_address(text)
    except ValueError:
        return False
    return True


class PeerRegistry:
    """This peer's view of the registry directory: register itself, list the live peers of its swarm."""

    def __init__(self, directory: str | os.PathLike[str], *, swarm_id: str, peer_id: str) -> None:
        self.directory = Path(directory)
        self.swarm_id = swarm_id
        self.peer_id = peer_id
        self._path = self.directory / f"{peer_id}.json"
        self._registered = False

    @property
    def path(self) -> Path:
        return self._path

    def _ensure_dir(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def register(self, addrs: Iterable[str]) -> None:
        """Write (or rewrite) this peer's entry atomically."""
        self._ensure_dir()
        pid = os.getpid()
        entry = RegistryEntry(
            swarm_id=self.swarm_id,
            peer_id=self.peer_id,
            addrs=tuple(addrs),
            pid=pid,
            pid_start=process_start_time(pid),
            started_at=time.time(),
        )
        fd, tmp = tempfile.mkstemp(prefix=f".{self.peer_id}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(entry.to_json())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._registered = True
        logger.debug("registered %s in %s", self.peer_id, self.directory)

    def unregister(self) -> None:
        """Remove this peer's entry (only if it is still ours)."""
        if not self._registered:
            return
        self._registered = False
        try:
            current = RegistryEntry.from_json(self._path.read_bytes())
            if current.pid != os.getpid():
                return  # a restarted process with the same identity took it over
            self._path.unlink()
        except (OSError, ValueError):
            pass

    def entries(self) -> list[RegistryEntry]:
        """All live entries (any swarm), removing stale ones and ignoring this peer's own file."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            logger.debug("cannot list peer registry %s: %s", self.directory, exc)
            return []
        out: list[RegistryEntry] = []
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = self.directory / name
            if path == self._path:
                continue
            try:
                if path.stat().st_size > _MAX_ENTRY_BYTES:
                    continue
                entry = RegistryEntry.from_json(path.read_bytes())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                logger.debug("ignoring unreadable registry entry %s: %s", path, exc)
                continue
            if entry.peer_id == self.peer_id:
                continue
            if not pid_alive(entry.pid, entry.pid_start):
                logger.debug("removing stale registry entry %s (pid %d is gone)", path, entry.pid)
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            out.append(entry)
        return out

    def swarm_peers(self) -> list[RegistryEntry]:
        """Live entries of this peer's swarm only."""
        return [e for e in self.entries() if e.swarm_id == self.swarm_id]


def should_dial(local_peer_id: str, remote_peer_id: str) -> bool:
    """Tie-break so only one side of a pair dials: the peer with the smaller peer ID dials."""
    return local_peer_id < remote_peer_id
