"""`quinkgl monitor` watching a real 3-peer swarm: plain lines, `--json`, and `--web` loaded in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import quinkgl_executable
from helpers import guide_arch_hash, make_manifest
from integration.peer_processes import PeerProcess, peer_env
from quinkgl.manifest.codec import write_manifest

pytestmark = [pytest.mark.slow, pytest.mark.network]
NODES = ("alpha", "bravo", "charlie")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def wait_for(log, pattern: str, proc: subprocess.Popen, timeout: float = 180) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"), re.M)
        if found:
            return found
        assert proc.poll() is None, f"exited {proc.returncode} before {pattern!r}:\n{log.read_text()}"
        time.sleep(0.2)  # polling a log file for a condition, bounded by the deadline
    raise AssertionError(f"{pattern!r} not seen within {timeout} s:\n{log.read_text()}")


def swarm_json(url: str) -> dict:
    with urllib.request.urlopen(url + "swarm.json", timeout=10) as response:
        return json.loads(response.read())


def poll_swarm(url: str, condition, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshot = swarm_json(url)
        if condition(snapshot):
            return snapshot
        time.sleep(0.5)  # polling the monitor for a condition, bounded by the deadline
    raise AssertionError(f"condition not met within {timeout} s: {snapshot}")


def browse(binary: str, url: str, tmp_path, *extra: str) -> str:
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_monitor_shows_every_peer_live_in_a_browser(tmp_path, guide_script, mnist_root):
    binary = chromium()
    write_manifest(make_manifest(arch_hash=guide_arch_hash(), name="watched"), tmp_path / "w.qgl")
    env = peer_env(tmp_path / "state")
    monitor_log = tmp_path / "monitor.log"
    json_out = tmp_path / "snapshot.json"
    base = [*quinkgl_executable(), "monitor", "--manifest", "w.qgl", "--trust-policy", "open"]
    with open(monitor_log, "wb") as log_handle, open(json_out, "wb") as json_handle:
        monitor = subprocess.Popen(
            [*base, "--web", "127.0.0.1:0", "--interval", "0.5"],
            cwd=tmp_path,
            env=env,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
        )
        snapshot_proc = subprocess.Popen(
            [*base, "--json", "--wait", "300", "--min-peers", "3"],
            cwd=tmp_path,
            env=env,
            stdout=json_handle,
            stderr=subprocess.PIPE,
        )
    peers: list[PeerProcess] = []
    try:
        url = wait_for(monitor_log, r"^web: (http://127\.0\.0\.1:\d+/)$", monitor).group(1)
        observer_id = wait_for(monitor_log, r"^monitor: observing swarm watched .* as (\w+) on", monitor).group(1)
        args = [
            "--manifest",
            "w.qgl",
            "--script",
            "mnist_peer_script.py",
            "--rounds",
            "3",
            "--local-steps",
            "10",
            "--max-eval-batches",
            "5",
            "--trust-policy",
            "open",
            "--script-arg",
            f"data_root={mnist_root}",
        ]
        peers = [PeerProcess(tmp_path, node, args, env) for node in NODES]

        live = poll_swarm(url, lambda s: len(s["peers"]) == 3)
        assert sorted(p["node_id"] for p in live["peers"]) == sorted(NODES)
        assert {p["peer_id"] for p in live["peers"]} == {peer.peer_id() for peer in peers}
        if binary is not None:
            dom = browse(binary, url, tmp_path, "--dump-dom")
            for node in NODES:
                assert f'data-node="{node}"' in dom, dom[-3000:]

        for peer in peers:
            assert peer.wait(timeout=600) == 0, peer.text()
        done = poll_swarm(url, lambda s: s["finished"] == 3)
        assert all(p["round"] == 3 and p["accuracy"] and p["accuracy"][-1][0] == 3 for p in done["peers"]), done
        for peer in peers:  # a listen-only observer is never a source
            assert observer_id not in peer.text()

        assert snapshot_proc.wait(timeout=300) == 0, snapshot_proc.stderr.read().decode()
        snapshot = json.loads(json_out.read_text())  # stdout is nothing but the JSON
        assert sorted(p["node_id"] for p in snapshot["peers"]) == sorted(NODES)

        if binary is None:
            pytest.skip(
                "chromium is not installed (apt-get install -y chromium; scripts/system-deps.sh does it): "
                "the swarm view was checked through /swarm.json only"
            )
        # The page redraws itself from /swarm.json; virtual time lets its polling run before the DOM is dumped.
        dom = browse(binary, url, tmp_path, "--dump-dom", "--virtual-time-budget=5000")
        assert "3 peer(s), 3 finished" in dom and "live, updated" in dom, dom[-3000:]
        assert len(re.findall(r'<polyline[^>]*class="series"', dom)) == 3
        screenshot = tmp_path / "monitor.png"  # a test artifact under the test's tmp dir, never committed
        browse(
            binary, url, tmp_path, f"--screenshot={screenshot}", "--window-size=1000,900", "--virtual-time-budget=3000"
        )
        assert screenshot.stat().st_size > 1000
    finally:
        for peer in peers:
            peer.stop()
        if snapshot_proc.poll() is None:
            snapshot_proc.kill()
            snapshot_proc.wait(timeout=30)
        if monitor.poll() is None:
            monitor.send_signal(signal.SIGTERM)
        code = monitor.wait(timeout=60)
    text = monitor_log.read_text()
    assert code == 0 and "Traceback" not in text, text
    for node in NODES:  # piped: plain lines, one per change
        assert re.search(rf"^peer node={node} peer_id=\w+ round=3 val_accuracy=0\.\d{{4}} finished=yes", text, re.M)
    assert "\x1b[" not in text
