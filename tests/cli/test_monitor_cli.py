"""`quinkgl monitor` without a swarm: usage errors, a clean JSON snapshot, the live table on a terminal."""

from __future__ import annotations

import json
import os

from conftest import quinkgl_executable
from helpers import make_manifest, run_on_terminal
from quinkgl.manifest.codec import write_manifest


def test_bad_web_address_is_a_usage_error(cli, tmp_path):
    write_manifest(make_manifest(), tmp_path / "m.qgl")
    result = cli("monitor", "--manifest", "m.qgl", "--trust-policy", "open", "--web", "localhost")
    assert result.returncode == 2 and "--web expects HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_snapshot_is_the_only_thing_on_stdout(cli, tmp_path):
    write_manifest(make_manifest(name="lonely"), tmp_path / "m.qgl")
    result = cli("monitor", "--manifest", "m.qgl", "--trust-policy", "open", "--json", "--wait", "0.5", "-v")
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)  # debug logging (-v) went to stderr
    assert snapshot["peers"] == [] and snapshot["swarm"]["name"] == "lonely" and snapshot["observer"]
    assert "DEBUG" in result.stderr


def test_terminal_gets_a_live_table(tmp_path):
    write_manifest(make_manifest(name="tty"), tmp_path / "m.qgl")
    env = dict(os.environ, COLUMNS="150", TERM="xterm-256color")
    code, screen = run_on_terminal(
        [*quinkgl_executable(), "monitor", "--manifest", "m.qgl", "--trust-policy", "open", "--duration", "1.5"],
        tmp_path,
        env,
        timeout=120,
    )
    assert code == 0, screen
    assert "swarm tty" in screen and "peer ID" in screen and "┃" in screen  # rich's table, not plain lines
    assert "Traceback" not in screen
