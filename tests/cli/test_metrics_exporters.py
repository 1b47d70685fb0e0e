"""Metrics where operators look: `run --metrics-port` (Prometheus text) and `run --tensorboard` (event files)."""

from __future__ import annotations

import re
import signal
import sys
import time
import urllib.request

import pytest

from helpers import guide_arch_hash, make_manifest
from integration.peer_processes import PeerProcess, peer_env
from quinkgl.manifest.codec import write_manifest

METRICS_URL = re.compile(r"^metrics: (http://127\.0\.0\.1:\d+/metrics)$", re.M)


def scrape(url: str) -> dict[str, float]:
    """Sample name (with labels) → value, from Prometheus text."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


@pytest.mark.slow
def test_running_peer_serves_prometheus_and_writes_tensorboard_events(tmp_path, guide_script, mnist_root):
    pytest.importorskip("prometheus_client", reason="needs quinkgl-cli[metrics] (prometheus-client)")
    pytest.importorskip("tensorboard", reason="needs quinkgl-cli[metrics] (tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_manifest(make_manifest(arch_hash=guide_arch_hash(), name="metrics"), tmp_path / "m.qgl")
    events = tmp_path / "tb"
    # Many rounds: the test stops the peer with SIGTERM once it has scraped a completed round, so nothing here
    # depends on how fast rounds are.
    args = [
        "--manifest",
        "m.qgl",
        "--script",
        "mnist_peer_script.py",
        "--rounds",
        "50",
        "--local-steps",
        "5",
        "--max-eval-batches",
        "5",
        "--trust-policy",
        "open",
        "--script-arg",
        f"data_root={mnist_root}",
        "--metrics-port",
        "0",
        "--tensorboard",
        str(events),
    ]
    env = peer_env(tmp_path / "state")
    peer = PeerProcess(tmp_path, "exporter", args, env)
    try:
        url = peer.wait_for(METRICS_URL.pattern, timeout=180).group(1)
        assert "device cpu" in peer.text() or "device cuda" in peer.text()  # --device auto names its choice
        deadline = time.monotonic() + 300
        samples = scrape(url)
        while samples.get("quinkgl_round", 0) < 2 and time.monotonic() < deadline:
            assert peer.proc.poll() is None, peer.text()
            time.sleep(0.5)  # polling a live server for a condition, bounded by the deadline
            samples = scrape(url)
        assert samples["quinkgl_round"] >= 2, samples
        assert 0.0 <= samples["quinkgl_val_accuracy"] <= 1.0
        assert samples["quinkgl_peers"] == 0  # alone in its swarm
        assert samples["quinkgl_bytes_sent_total"] == 0 and samples["quinkgl_bytes_received_total"] == 0
        assert "quinkgl_updates_accepted_total" in samples
        assert any(name.startswith('quinkgl_peer_info{node_id="exporter"') for name in samples)
        peer.signal(signal.SIGTERM)
        assert peer.wait(timeout=120) == 143, peer.text()
    finally:
        peer.stop()
    assert "Traceback" not in peer.text()

    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert {"val_accuracy", "val_loss", "loss", "peers", "bytes_sent"} <= set(accumulator.Tags()["scalars"])
    steps = [event.step for event in accumulator.Scalars("val_accuracy")]
    assert steps[:2] == [1, 2] and steps == sorted(steps)
    assert all(0.0 <= event.value <= 1.0 for event in accumulator.Scalars("val_accuracy"))


def test_prometheus_exporter_labels_rejections_by_reason():
    pytest.importorskip("prometheus_client", reason="needs quinkgl-cli[metrics] (prometheus-client)")
    from quinkgl_cli.exporters import PrometheusExporter

    exporter = PrometheusExporter("127.0.0.1", 0, node_id="n1")
    try:
        samples = scrape(exporter.url)
        assert samples["quinkgl_round"] == 0 and "quinkgl_val_accuracy" not in samples  # nothing measured yet
        exporter.quinkgl_on_metrics(
            record={"round": 3, "val_accuracy": 0.5, "val_loss": float("nan"), "peers": 2, "bytes_sent": 10},
            counters={
                "node_id": "n1",
                "peer_id": "Qm",
                "bytes_sent": 12,
                "bytes_received": 34,
                "rejected": {"digest_mismatch": 2, "stale_round": 1},
            },
        )
        samples = scrape(exporter.url)
        assert samples["quinkgl_round"] == 3 and samples["quinkgl_val_accuracy"] == 0.5
        assert "quinkgl_val_loss" not in samples  # NaN is not exported
        assert samples["quinkgl_bytes_sent_total"] == 12 and samples["quinkgl_bytes_received_total"] == 34
        assert samples['quinkgl_updates_rejected_total{reason="digest_mismatch"}'] == 2
        assert samples['quinkgl_updates_rejected_total{reason="stale_round"}'] == 1
    finally:
        exporter.close()


@pytest.mark.parametrize("module, flag", [("prometheus_client", "--metrics-port"), ("tensorboard", "--tensorboard")])
def test_missing_optional_dependency_names_the_pip_install(monkeypatch, tmp_path, module, flag):
    from quinkgl.errors import PluginError
    from quinkgl_cli import exporters

    for name in list(sys.modules):
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import now fails as if not installed
    with pytest.raises(PluginError, match=re.escape(f"{flag} needs")) as raised:
        if module == "tensorboard":
            exporters.TensorBoardExporter(str(tmp_path / "tb"))
        else:
            exporters.PrometheusExporter("127.0.0.1", 0)
    assert "pip install 'quinkgl-cli[metrics]'" in str(raised.value)
