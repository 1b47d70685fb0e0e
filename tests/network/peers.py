"""`quinkgl` processes inside lab hosts (see netlab.py): start, watch their logs, read what they did."""

from __future__ import annotations

import re
import time

from network.netlab import Host, NetLab

from conftest import quinkgl_executable

AGGREGATED = re.compile(r"aggregated models from \d+ peer\(s\) in round (\d+): (.*) \(\d+ samples\)")
ANNOUNCES = re.compile(r"quinkgl\.net: peer (\S+) announces (.*)$", re.MULTILINE)
LISTENING = re.compile(r"^peer (\S+) \((\w+)\) swarm .* listening on (.*)$", re.MULTILINE)
ROUND_END = re.compile(r"aggregated models from|no source answered in round")


class NetPeer:
    """One `quinkgl run` (or other command) inside a lab host; output in ``log``."""

    def __init__(self, lab: NetLab, host: Host, node_id: str, args: list[str], command: str = "run") -> None:
        self.lab, self.host, self.node_id = lab, host, node_id
        self.log = lab.workdir / f"{node_id}.log"
        extra = ["--node-id", node_id] if command == "run" else []
        self.proc = lab.popen(host, [*quinkgl_executable(), command, *extra, *args], log=self.log)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 180.0, count: int = 1) -> re.Match[str]:
        """Block until ``pattern`` has appeared ``count`` times (bounded; fails early if the process died)."""
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            matches = list(regex.finditer(self.text()))
            if len(matches) >= count:
                return matches[count - 1]
            if self.proc.poll() is not None:
                matches = list(regex.finditer(self.text()))
                if len(matches) >= count:
                    return matches[count - 1]
                raise AssertionError(
                    f"{self.node_id} exited {self.proc.returncode} before {regex.pattern!r}:\n{self.text()[-6000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.node_id}: {regex.pattern!r} not seen within {timeout} s:\n{self.text()[-6000:]}"
                )
            time.sleep(0.2)  # polling a log file for a condition, bounded by the deadline

    def peer_id(self) -> str:
        return self.wait_for(LISTENING).group(2)

    def wait(self, timeout: float = 300.0) -> int:
        return self.proc.wait(timeout=timeout)

    def aggregated(self) -> dict[int, set[str]]:
        """Round -> peer IDs aggregated in that round."""
        out: dict[int, set[str]] = {}
        for match in AGGREGATED.finditer(self.text()):
            out.setdefault(int(match.group(1)), set()).update(match.group(2).split(", "))
        return out

    def heard(self) -> set[str]:
        return {pid for peers in self.aggregated().values() for pid in peers}

    def learned_addrs(self) -> dict[str, set[str]]:
        """Peer ID -> every address this peer learned from that peer's announcements."""
        out: dict[str, set[str]] = {}
        for match in ANNOUNCES.finditer(self.text()):
            out.setdefault(match.group(1), set()).update(match.group(2).split(", "))
        return out


__all__ = ["AGGREGATED", "ANNOUNCES", "LISTENING", "NetPeer"]
