"""Metrics exporters for ``quinkgl run``: Prometheus text at ``/metrics`` and TensorBoard event files.

Both are ordinary QuinkGL plugins: objects with a ``quinkgl_on_metrics`` hookimpl, registered on the registry
before the peer is built, so they receive exactly the records ``metrics.jsonl`` gets (see the hook's contract in
:mod:`quinkgl.plugins.hookspecs`). Their libraries are optional (``pip install 'quinkgl-cli[metrics]'``); a
missing one is a one-line :class:`~quinkgl.errors.PluginError`. Neither imports torch.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from quinkgl.errors import PluginError, QuinkGLError
from quinkgl.plugins.hookspecs import hookimpl

log = logging.getLogger("quinkgl.metrics")
INSTALL_HINT = "pip install 'quinkgl-cli[metrics]'"

#: Record keys written as TensorBoard scalars (when present and numeric).
SCALARS = (
    "val_accuracy",
    "val_loss",
    "accuracy",
    "loss",
    "peers",
    "samples",
    "bytes_sent",
    "bytes_received",
    "updates_sent",
    "updates_accepted",
    "updates_rejected",
    "train_seconds",
    "eval_seconds",
    "round_seconds",
)


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (booleans, None, strings and NaN are not exported)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _missing(flag: str, package: str) -> PluginError:
    return PluginError(f"{flag} needs the {package} package, which is not installed: {INSTALL_HINT}")


class PrometheusExporter:
    """Serves the peer's latest metrics as Prometheus text at ``http://HOST:PORT/metrics`` (its own thread)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, node_id: str = ""):
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise _missing("--metrics-port", "prometheus-client") from None
        self.node_id = node_id
        self._lock = threading.Lock()
        self._record: dict[str, Any] = {}
        self._counters: dict[str, Any] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # a collector: has collect()
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            reason = exc.strerror or exc
            raise QuinkGLError(f"--metrics-port {port}: cannot listen on {host}:{port}: {reason}") from None
        self.host = host
        self.port: int = self.server.server_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    @hookimpl
    def quinkgl_on_metrics(self, record: Mapping[str, Any], counters: Mapping[str, Any]) -> None:
        snapshot = dict(record), {**counters, "rejected": dict(counters.get("rejected") or {})}
        with self._lock:
            self._record, self._counters = snapshot

    def collect(self) -> Iterator[Any]:
        """The prometheus-client collector protocol: one metric family per exported value."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        with self._lock:
            record, counters = dict(self._record), dict(self._counters)
        info = InfoMetricFamily("quinkgl_peer", "This peer's node ID and peer ID.")
        info.add_metric(
            [], {"node_id": str(counters.get("node_id", self.node_id)), "peer_id": str(counters.get("peer_id", ""))}
        )
        yield info
        gauges = {
            "quinkgl_round": ("Last completed round.", record.get("round", 0)),
            "quinkgl_val_accuracy": ("Validation accuracy after the last completed round.", record.get("val_accuracy")),
            "quinkgl_val_loss": ("Validation loss after the last completed round.", record.get("val_loss")),
            "quinkgl_train_accuracy": ("Training accuracy of the last round's local steps.", record.get("accuracy")),
            "quinkgl_train_loss": ("Training loss of the last round's local steps.", record.get("loss")),
            "quinkgl_peers": ("Compatible peers alive at the end of the last round.", record.get("peers", 0)),
            "quinkgl_round_seconds": ("Duration of the last round in seconds.", record.get("round_seconds")),
        }
        for name, (documentation, value) in gauges.items():
            number = _number(value)
            if number is not None:
                yield GaugeMetricFamily(name, documentation, value=number)
        totals = {
            "quinkgl_bytes_sent": ("Bytes sent by the transport since start.", "bytes_sent"),
            "quinkgl_bytes_received": ("Bytes received by the transport since start.", "bytes_received"),
            "quinkgl_updates_accepted": ("Model updates accepted since start.", "updates_accepted"),
            "quinkgl_updates_sent": ("Model updates sent since start.", "updates_sent"),
        }
        for name, (documentation, key) in totals.items():
            number = _number(counters.get(key, record.get(key, 0)))
            yield CounterMetricFamily(name, documentation, value=number or 0.0)
        rejected = CounterMetricFamily(
            "quinkgl_updates_rejected", "Inbound messages rejected since start, by reason.", labels=["reason"]
        )
        for reason, count in sorted((counters.get("rejected") or {}).items()):
            rejected.add_metric([str(reason)], float(count))
        yield rejected

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TensorBoardExporter:
    """Writes every round's numeric metrics as TensorBoard scalars (step = round) into ``logdir``."""

    def __init__(self, logdir: str):
        try:
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.compat.proto.summary_pb2 import Summary
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            raise _missing("--tensorboard", "tensorboard") from None
        self._event, self._summary = Event, Summary
        try:
            self.writer = EventFileWriter(logdir)
        except OSError as exc:
            raise QuinkGLError(f"--tensorboard {logdir}: cannot write event files there: {exc}") from None
        self.logdir = logdir

    @hookimpl
    def quinkgl_on_metrics(self, record: Mapping[str, Any], counters: Mapping[str, Any]) -> None:
        values = []
        for key in SCALARS:
            number = _number(record.get(key))
            if number is not None:
                values.append(self._summary.Value(tag=key, simple_value=number))
        wall_time = _number(record.get("time")) or time.time()
        step = int(record.get("round", 0))
        self.writer.add_event(self._event(wall_time=wall_time, step=step, summary=self._summary(value=values)))
        self.writer.flush()  # a round is seconds long: flushing each one lets TensorBoard show it at once

    def close(self) -> None:
        self.writer.close()


def start_exporters(
    registry: Any, *, metrics_host: str, metrics_port: int | None, tensorboard: str | None, node_id: str
) -> list[Any]:
    """Create the requested exporters and register them as plugins on ``registry``; returns them (to close)."""
    exporters: list[Any] = []
    if tensorboard is not None:
        exporters.append(TensorBoardExporter(tensorboard))
    if metrics_port is not None:
        try:
            exporters.append(PrometheusExporter(metrics_host, metrics_port, node_id=node_id))
        except BaseException:
            close_exporters(exporters)
            raise
    for exporter in exporters:
        registry.pm.register(exporter, name=f"quinkgl-cli-{type(exporter).__name__}")
    return exporters


def close_exporters(exporters: list[Any]) -> None:
    """Stop servers and flush event files; errors are logged, never raised (the run's outcome matters more)."""
    for exporter in exporters:
        try:
            exporter.close()
        except Exception:
            log.warning("closing %s failed", type(exporter).__name__, exc_info=True)
