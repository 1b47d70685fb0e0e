"""Starting real `quinkgl run` processes for integration tests, watching their logs, ending them by PID."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from conftest import quinkgl_executable

LISTENING = re.compile(r"^peer (\S+) \((\w+)\) swarm .* listening on (\S+)", re.M)


class PeerProcess:
    """One `quinkgl run` process whose combined output goes to ``log``."""

    def __init__(self, workdir: Path, node_id: str, args: list[str], env: dict[str, str]):
        self.node_id = node_id
        self.log = workdir / f"{node_id}.log"
        self._log_handle = open(self.log, "ab")  # noqa: SIM115 - the child process writes to it until it exits
        argv = [*quinkgl_executable(), "run", "--node-id", node_id, *args]
        self.proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=self._log_handle, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 120.0, count: int = 1) -> re.Match:
        """Block until ``pattern`` has appeared ``count`` times in the log (bounded; fails if the process died)."""
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            matches = list(regex.finditer(self.text()))
            if len(matches) >= count:
                return matches[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.node_id} exited {self.proc.returncode} before {pattern!r}:\n{self.text()}")
            time.sleep(0.1)  # polling the log file for a condition, bounded by the deadline
        raise AssertionError(f"{self.node_id}: {pattern!r} not seen within {timeout} s:\n{self.text()}")

    def peer_id(self) -> str:
        return self.wait_for(LISTENING.pattern).group(2)

    def address(self) -> str:
        return self.wait_for(LISTENING.pattern).group(3)

    def wait(self, timeout: float = 300.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log_handle.close()

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def stop(self) -> None:
        """End the process we started (by its PID) if it is still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._log_handle.close()


def peer_env(state_dir: Path) -> dict[str, str]:
    """Environment with an isolated per-user state (TOFU cache, peer registry)."""
    return dict(os.environ, QUINKGL_STATE_DIR=str(state_dir), PYTHONUNBUFFERED="1")


__all__ = ["PeerProcess", "peer_env", "signal"]
