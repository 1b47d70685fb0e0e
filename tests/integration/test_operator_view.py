"""What an operator sees: a live rich status on a terminal, plain greppable lines otherwise, a final summary."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import quinkgl_executable
from helpers import guide_arch_hash, make_manifest, run_on_terminal
from quinkgl.manifest.codec import write_manifest

pytestmark = pytest.mark.slow


def run_args(tmp_path, mnist_root):
    write_manifest(make_manifest(arch_hash=guide_arch_hash(), name="view"), tmp_path / "view.qgl")
    return [
        *quinkgl_executable(),
        "run",
        "--manifest",
        "view.qgl",
        "--script",
        "mnist_peer_script.py",
        "--node-id",
        "solo",
        "--rounds",
        "2",
        "--local-steps",
        "20",
        "--max-eval-batches",
        "20",
        "--trust-policy",
        "open",
        "--script-arg",
        f"data_root={mnist_root}",
    ]


def test_terminal_gets_live_progress_and_pipes_get_plain_lines(tmp_path, guide_script, mnist_root):
    env = dict(os.environ, QUINKGL_STATE_DIR=str(tmp_path / "state"), COLUMNS="120", TERM="xterm-256color")
    piped = subprocess.run(
        run_args(tmp_path, mnist_root), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert piped.returncode == 0, piped.stderr
    assert "\x1b[" not in piped.stdout and "━" not in piped.stdout  # no escape codes, no bars: tee/grep friendly
    assert "round=002" in piped.stdout and "summary: node=solo rounds=2/2" in piped.stdout

    code, screen = run_on_terminal(run_args(tmp_path, mnist_root), tmp_path, env)
    assert code == 0, screen
    assert "━" in screen and "2/2" in screen  # rich's live bar reached the last round
    assert "summary: node=solo rounds=2/2" in screen
