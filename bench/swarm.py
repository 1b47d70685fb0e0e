"""Start, wait for and read back `quinkgl run` swarms on loopback: the one launcher the libp2p benchmarks share.

Every peer is ``python -m quinkgl_cli run …`` with the current PYTHONPATH, so a benchmark measures whichever
QuinkGL comes first on it (a worktree of an older commit for a "before" number). Peers keep their state, logs,
checkpoints and ``metrics.jsonl`` inside the work folder; they are ended only by their own handles.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "mnist_peer_script.py"


def fresh_workdir(work: Path) -> dict[str, str]:
    """Empty ``work``, copy the guide's peer script into it; return the environment its peers run with."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copy(SCRIPT, work / "mnist_peer_script.py")
    return dict(os.environ, QUINKGL_STATE_DIR=str(work / "state"), PYTHONUNBUFFERED="1")


def peer_argv(index: int, *, rounds: int, steps: int, data_root: str, extra: Sequence[str] = ()) -> list[str]:
    """The guide's ``quinkgl run`` line for peer ``index`` (any free port, open trust, its own checkpoint dir)."""
    return [
        "run",
        "--manifest",
        "demo.qgl",
        "--script",
        "mnist_peer_script.py",
        "--node-id",
        f"peer-{index}",
        "--port",
        "0",
        "--rounds",
        str(rounds),
        "--local-steps",
        str(steps),
        "--trust-policy",
        "open",
        "--script-arg",
        f"data_root={data_root}",
        "--checkpoint-dir",
        f"ckpt/peer-{index}",
        *extra,
    ]


def start(
    work: Path, env: dict[str, str], index: int, cli_args: Sequence[str], python: Sequence[str] = ()
) -> subprocess.Popen:
    """Start one peer, its output in ``peer-<index>.log``; ``python`` replaces ``-m quinkgl_cli`` (e.g. a shim)."""
    log = open(work / f"peer-{index}.log", "w")  # noqa: SIM115 - the child process writes to it until it exits
    argv = [sys.executable, *(python or ("-m", "quinkgl_cli")), *cli_args]
    return subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_all(procs: Sequence[subprocess.Popen], deadline: float) -> list[int]:
    """Wait for every peer until ``deadline`` (monotonic); a peer still running then is killed by its handle."""
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait(timeout=30))
    return codes


def histories(work: Path, indices: Sequence[int]) -> dict[int, list[dict]]:
    """Each peer's ``metrics.jsonl`` rounds (empty when it recorded none)."""
    out = {}
    for index in indices:
        path = work / "ckpt" / f"peer-{index}" / "metrics.jsonl"
        out[index] = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return out
