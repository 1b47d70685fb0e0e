"""The hook contracts between QuinkGL core and its plugins (pluggy project ``quinkgl``).

Each docstring is the contract: when core calls the hook, how results are combined, what it must return.
A plugin is a module of ``@hookimpl`` functions named after these specs; an installed distribution exposes it
through one entry point in the ``quinkgl`` group. A user's peer script is adapted into a plugin too, so its
callbacks run through the same machinery.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from quinkgl.manifest import Manifest
    from quinkgl.plugins.records import AggregatorSpec, DataPolicySpec, TopologySpec, TransportSpec

PROJECT = "quinkgl"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------------------------
# Component registration. Called once per plugin when the registry is built; every plugin's results are
# collected. Return one record, an iterable of records, or None. Must be cheap: no torch / libp2p imports here,
# only in the records' factories.
# --------------------------------------------------------------------------------------------------------------


@hookspec
def quinkgl_register_transports() -> Iterable[TransportSpec] | TransportSpec | None:
    """Register network transports (e.g. ``libp2p``, ``memory``)."""


@hookspec
def quinkgl_register_aggregators() -> Iterable[AggregatorSpec] | AggregatorSpec | None:
    """Register aggregation rules (e.g. ``FedAvg``, ``Krum``)."""


@hookspec
def quinkgl_register_topologies() -> Iterable[TopologySpec] | TopologySpec | None:
    """Register peer-selection topologies (e.g. ``RandomTopology``)."""


@hookspec
def quinkgl_register_data_policies() -> Iterable[DataPolicySpec] | DataPolicySpec | None:
    """Register data policies: what metadata about local data a peer may attach to its updates."""


# --------------------------------------------------------------------------------------------------------------
# Peer-script hooks. A peer script's plain functions (``build_model``, ``on_round_end``, ...) are adapted to
# these. ``build_*`` hooks are firstresult: the first plugin returning non-None wins. ``on_*`` hooks are
# notifications: every implementation is called, results are ignored, and they run on the peer's event loop
# thread, so they must return quickly.
# --------------------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def quinkgl_build_model(manifest: Manifest, kwargs: Mapping[str, str]) -> Any:
    """Return the peer's ``torch.nn.Module``; ``kwargs`` are the ``--script-arg`` values. Called once at start."""


@hookspec(firstresult=True)
def quinkgl_build_loaders(manifest: Manifest, kwargs: Mapping[str, str]) -> Any:
    """Return ``(train_loader, val_loader)``: iterables of ``(inputs, labels)`` batches. Called once at start."""


@hookspec(firstresult=True)
def quinkgl_build_optimizer(manifest: Manifest, model: Any) -> Any:
    """Return a ``torch.optim.Optimizer`` for ``model`` (the ``nn.Module`` itself); None means core's default."""


@hookspec
def quinkgl_on_round_end(round_idx: int, metrics: Mapping[str, Any]) -> None:
    """A round finished. ``metrics`` has loss, accuracy, val_loss, val_accuracy, round, peers and bytes."""


@hookspec
def quinkgl_on_peer_discovered(peer_id: str) -> None:
    """A compatible peer (same swarm, verified manifest, same arch hash) was seen for the first time."""


@hookspec
def quinkgl_on_aggregation_done(peer_ids: Sequence[str], sample_count: int) -> None:
    """Aggregation finished, combining updates from ``peer_ids`` with ``sample_count`` samples in total."""


@hookspec
def quinkgl_on_metrics(record: Mapping[str, Any], counters: Mapping[str, Any]) -> None:
    """A round's metrics are final: for exporters (Prometheus, TensorBoard, a dashboard).

    Called once per completed round, after ``on_round_end`` and before the checkpoint, on the peer's event loop
    thread: every implementation is called, results are ignored, and it must return quickly (hand slow work to
    a thread of its own). Treat both mappings as read-only; they are not copied for you.

    ``record`` is the round's record exactly as ``metrics.jsonl`` gets it: ``round``, ``loss``, ``accuracy``,
    ``val_loss``, ``val_accuracy`` (None when there is no validation data), ``peers`` (alive compatible peers),
    ``aggregated_from``, ``samples``, ``bytes_sent``, ``bytes_received``, ``updates_sent``, ``updates_accepted``,
    ``updates_rejected`` (cumulative since start), ``train_seconds``, ``eval_seconds``, ``round_seconds`` and
    ``time`` (Unix seconds). New keys may be added; exporters must ignore keys they do not know.

    ``counters`` is the peer's running totals, as in its final summary: ``node_id``, ``peer_id``, ``rounds``
    (completed), ``val_accuracy``, ``bytes_sent``, ``bytes_received``, ``updates_accepted``,
    ``updates_rejected`` and ``rejected`` (reason → count, runtime and transport reasons together).
    """
