"""The README's main job at CI size: the guide's walkthrough with five real peer processes over libp2p."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from conftest import REPO


def free_port_block(count: int) -> int:
    """A base port with ``count`` consecutive free ports on 127.0.0.1."""
    for base in range(17000, 30000, 37):
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port block")


@pytest.mark.slow
def test_five_peer_walkthrough_as_the_readme_runs_it(tmp_path):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "walkthrough.py"),
            "--workdir",
            str(tmp_path / "wt"),
            "--rounds",
            "3",
            "--local-steps",
            "40",
            "--port-base",
            str(free_port_block(5)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Manifest valid." in result.stdout and "Signature: valid" in result.stdout
    finished = re.findall(r"^peer-\d: exit 0, rounds 3/3, val accuracy [\d.]+ -> ([\d.]+) \(", result.stdout, re.M)
    assert len(finished) == 5 and min(map(float, finished)) >= 0.5  # every peer learned (chance is 0.1)
    (first, final) = re.search(
        r"^swarm mean val accuracy ([\d.]+) -> ([\d.]+) \(improved\)", result.stdout, re.M
    ).groups()
    assert float(final) > float(first)
    for index in range(1, 6):
        log = (tmp_path / "wt" / f"peer-{index}.log").read_text()
        assert "aggregated models" in log and "round=003" in log and "[peer-discovered]" in log
        assert "[aggregated] peers=[" in log
