"""A lab of "hosts" on one machine: Linux network namespaces joined by veth pairs and a bridge.

Address plan (only addresses inside namespaces this module creates; nothing is routed to the outside):

    10.213.0.0/24      the "internet" bridge: public host i is 10.213.0.<i>, NAT router k's WAN side 10.213.0.<200+k>
    10.213.<k>.0/24    home LAN k (k = 1..99) behind NAT router k: router 10.213.<k>.1, home host 10.213.<k>.2

Layout: one bridge namespace holds ``br0``; every public host and every router WAN side has a veth pair whose
inner end is ``eth0`` in its own namespace and whose outer end is a bridge port named ``p<i>``. Taking that
port down cuts the host off (a partition) and bringing it up heals it. A NAT router namespace forwards between
``lan`` and ``wan`` and masquerades on ``wan`` with nftables; new connections from the WAN side are dropped, so
home hosts can dial out and nobody can dial in.

Every name carries a per-lab random tag, so concurrent runs do not collide; :meth:`NetLab.close` deletes every
namespace and interface the lab made (also after a failed test) and ends the processes it started, by PID.

Needs root, ``ip`` (iproute2) and, for NAT, ``nft`` (Debian package ``nftables``; see scripts/system-deps.sh).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

PUBLIC_NET = "10.213.0"


class LabUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no iproute2, no netns support): tests skip with this reason."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def check_available(nat: bool = False) -> None:
    """Raise :class:`LabUnavailable` with a reason when this machine cannot host a lab."""
    if os.geteuid() != 0:
        raise LabUnavailable("network namespaces need root (CI runs as root)")
    if shutil.which("ip") is None:
        raise LabUnavailable("the 'ip' command (iproute2) is not installed")
    if nat and shutil.which("nft") is None:
        raise LabUnavailable("the 'nft' command is not installed (apt-get install nftables)")
    name = f"qgprobe-{secrets.token_hex(3)}"
    probe = _run("ip", "netns", "add", name, check=False)
    if probe.returncode != 0:
        raise LabUnavailable(f"cannot create a network namespace: {probe.stderr.strip()}")
    _run("ip", "netns", "delete", name, check=False)


class Host:
    """One namespace with an address; ``exec`` argv prefix runs a command inside it."""

    def __init__(self, lab: NetLab, name: str, netns: str, address: str, port_name: str | None) -> None:
        self.lab = lab
        self.name = name
        self.netns = netns
        self.address = address
        self.port_name = port_name  # the bridge port that connects this host (or its router) to the "internet"
        self.state_dir = lab.workdir / name / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def argv(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *command]

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(*self.argv(*command), check=check)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for processes on this host: its own per-user state (TOFU cache, peer registry)."""
        return dict(
            base if base is not None else os.environ, QUINKGL_STATE_DIR=str(self.state_dir), PYTHONUNBUFFERED="1"
        )


class NetLab:
    """Namespaces, links and NAT routers for one test; use as a context manager (``close`` always runs)."""

    def __init__(self, workdir: Path) -> None:
        self.tag = secrets.token_hex(3)  # 6 hex characters: interface names must stay within 15 characters
        self.workdir = Path(workdir)
        self.namespaces: list[str] = []
        self.root_links: list[str] = []  # veth ends that may still sit in the root namespace
        self.processes: list[subprocess.Popen[bytes]] = []
        self.hosts: dict[str, Host] = {}
        self._ports = 0
        self.bridge_ns = self._netns("br")
        _run("ip", "netns", "exec", self.bridge_ns, "ip", "link", "add", "br0", "type", "bridge")
        _run("ip", "netns", "exec", self.bridge_ns, "ip", "link", "set", "br0", "up")

    # ---------------------------------------------------------------------------------------------------------

    def __enter__(self) -> NetLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _netns(self, suffix: str) -> str:
        name = f"qg{self.tag}-{suffix}"
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        _run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        return name

    def _veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        """A veth pair made under temporary names in the root namespace, moved and renamed (eth0 exists there)."""
        self._ports += 1
        tmp_a, tmp_b = f"q{self.tag}{self._ports}a", f"q{self.tag}{self._ports}b"
        self.root_links += [tmp_a, tmp_b]
        _run("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        for tmp, ns, name in ((tmp_a, ns_a, name_a), (tmp_b, ns_b, name_b)):
            _run("ip", "link", "set", tmp, "netns", ns)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", tmp, "name", name)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", name, "up")
        self.root_links = [link for link in self.root_links if link not in (tmp_a, tmp_b)]

    def _attach(self, ns: str, inner: str, address: str) -> str:
        """Connect ``ns`` to the bridge through a new port; return the port's name in the bridge namespace."""
        port = f"p{self._ports + 1}"
        self._veth(ns, inner, self.bridge_ns, port)
        _run("ip", "netns", "exec", self.bridge_ns, "ip", "link", "set", port, "master", "br0")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev", inner)
        return port

    # ---------------------------------------------------------------------------------------------------------

    def add_host(self, name: str, index: int) -> Host:
        """A public host at 10.213.0.<index> on the bridge."""
        if not 1 <= index <= 199:
            raise ValueError("public host index must be 1..199")
        ns = self._netns(name)
        address = f"{PUBLIC_NET}.{index}"
        port = self._attach(ns, "eth0", address)
        host = Host(self, name, ns, address, port)
        self.hosts[name] = host
        return host

    def add_nat_host(self, name: str, index: int) -> Host:
        """A home host at 10.213.<index>.2 behind its own masquerading router (WAN 10.213.0.<200+index>)."""
        if not 1 <= index <= 50:
            raise ValueError("NAT host index must be 1..50")
        router = self._netns(f"r{index}")
        wan = f"{PUBLIC_NET}.{200 + index}"
        port = self._attach(router, "wan", wan)
        home = self._netns(name)
        self._veth(router, "lan", home, "eth0")
        lan_net = f"10.213.{index}"
        _run("ip", "netns", "exec", router, "ip", "addr", "add", f"{lan_net}.1/24", "dev", "lan")
        _run("ip", "netns", "exec", home, "ip", "addr", "add", f"{lan_net}.2/24", "dev", "eth0")
        _run("ip", "netns", "exec", home, "ip", "route", "add", "default", "via", f"{lan_net}.1")
        _run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        rules = "\n".join(
            [
                "table ip nat {",
                "  chain out {",
                "    type nat hook postrouting priority 100;",
                '    oifname "wan" masquerade',
                "  }",
                "}",
                "table ip filter {",
                "  chain forward {",
                "    type filter hook forward priority 0; policy drop;",
                "    ct state established,related accept",
                '    iifname "lan" oifname "wan" accept',
                "  }",
                "}",
                "",
            ]
        )
        result = subprocess.run(
            ["ip", "netns", "exec", router, "nft", "-f", "-"],
            input=rules,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"nft failed: {result.stderr.strip()}")
        host = Host(self, name, home, f"{lan_net}.2", port)
        self.hosts[name] = host
        return host

    def set_link(self, host: Host, up: bool) -> None:
        """Cut (``up=False``) or restore a host's (or its router's) link to the bridge."""
        assert host.port_name is not None
        _run("ip", "netns", "exec", self.bridge_ns, "ip", "link", "set", host.port_name, "up" if up else "down")

    def popen(
        self,
        host: Host,
        command: Sequence[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` inside ``host``; output goes to ``log``; ended by :meth:`close` if still running."""
        with open(log, "ab") as handle:
            proc = subprocess.Popen(
                host.argv(*command),
                cwd=cwd or self.workdir,
                env=env or host.env(),
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        """End our processes (by PID), then delete every namespace and leftover interface this lab made."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        for name in reversed(self.namespaces):
            _run("ip", "netns", "delete", name, check=False)  # deleting a namespace deletes its interfaces
        for link in self.root_links:
            _run("ip", "link", "delete", link, check=False)
        self.namespaces.clear()
        self.root_links.clear()

    def leftovers(self) -> list[str]:
        """Namespaces of this lab that still exist (for tests of the harness itself)."""
        listed = _run("ip", "netns", "list", check=False).stdout
        return [line.split()[0] for line in listed.splitlines() if line.startswith(f"qg{self.tag}-")]


__all__ = ["PUBLIC_NET", "Host", "LabUnavailable", "NetLab", "check_available"]
