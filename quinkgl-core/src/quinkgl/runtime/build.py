"""Assembling a peer: components from the manifest, model and data from the peer script, checks, resume."""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pluggy

from quinkgl import dataprep
from quinkgl.archhash import compute_arch_hash
from quinkgl.errors import ArchMismatchError, DataError, QuinkGLError, ScriptError
from quinkgl.membership import load_certificate, own_certificate
from quinkgl.plugins import hookspecs
from quinkgl.plugins.manager import Registry
from quinkgl.plugins.requirements import ResolvedComponents, resolve_components
from quinkgl.runtime.options import PeerOptions
from quinkgl.runtime.peer import PeerParts
from quinkgl.runtime.training import loss_function

log = logging.getLogger("quinkgl.peer")


@attrs.frozen
class PeerData:
    """Training and validation batches of one peer, with its sample count and label counts."""

    train: Any
    val: Any
    num_samples: int
    label_counts: list[int]


def peer_hooks(registry: Registry, script: Any) -> Any:
    """A hook relay with the peer-script hooks of ``script`` and of every installed plugin (one per peer)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, plugin in registry.pm.list_name_plugin():
        pm.register(plugin, name=name)
    pm.register(script, name="peer-script")
    return pm.hook


def init_seed(swarm_id: str) -> int:
    """The weight-initialisation seed every peer of a swarm shares (averaging starts from one model)."""
    return int(hashlib.sha256(swarm_id.encode()).hexdigest()[:8], 16)


def build_model(manifest: Any, hooks: Any, options: PeerOptions) -> Any:
    """Call ``build_model`` with a swarm-wide seed and check the arch hash against the manifest."""
    import torch

    torch.manual_seed(init_seed(manifest.swarm_id))
    model = hooks.quinkgl_build_model(manifest=manifest, kwargs=dict(options.script_args))
    if model is None:
        raise ScriptError("no build_model() returned a model")
    actual = compute_arch_hash(model)
    if actual != manifest.model.arch_hash:
        message = (
            f"the model from build_model() has arch hash {actual}, but the manifest requires "
            f"{manifest.model.arch_hash}: the architecture differs from the swarm's"
        )
        if options.strict_manifest:
            raise ArchMismatchError(message + " (--strict-manifest false only warns)")
        log.warning("%s; continuing because --strict-manifest false", message)
    return model.to(options.device)


def check_first_batch(manifest: Any, batch: Any, which: str) -> None:
    """The loader's first batch must match the manifest's input shape and label type."""
    import torch

    try:
        inputs, labels = batch
    except (TypeError, ValueError):
        raise DataError(f"the {which} loader must yield (inputs, labels) pairs, got {type(batch).__name__}") from None
    if not isinstance(inputs, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise DataError(f"the {which} loader must yield tensors, got {type(inputs).__name__}/{type(labels).__name__}")
    task = manifest.task
    if tuple(inputs.shape[1:]) != tuple(task.input_shape):
        raise DataError(
            f"the {which} loader yields inputs of shape {list(inputs.shape[1:])} per sample, but the manifest's "
            f"input_shape is {list(task.input_shape)}"
        )
    if task.label_type == "integer" and (labels.is_floating_point() or labels.dim() != 1):
        raise DataError(
            f"the {which} loader yields labels {labels.dtype} {list(labels.shape)}, but label_type "
            "is integer (one class index per sample)"
        )
    if task.label_type == "one_hot" and tuple(labels.shape[1:]) != tuple(task.output_shape):
        raise DataError(
            f"the {which} loader yields labels of shape {list(labels.shape[1:])}, but one_hot labels "
            f"need shape {list(task.output_shape)}"
        )
    if task.label_type == "float" and not labels.is_floating_point():
        raise DataError(f"the {which} loader yields {labels.dtype} labels, but label_type is float")


def build_loaders(manifest: Any, hooks: Any, options: PeerOptions) -> tuple[Any, Any]:
    """Call the script's ``build_loaders``."""
    loaders = hooks.quinkgl_build_loaders(manifest=manifest, kwargs=dict(options.script_args))
    if loaders is None:
        raise ScriptError("no build_loaders() returned loaders")
    return loaders


def prepare_data(
    manifest: Any,
    loaders: tuple[Any, Any],
    options: PeerOptions,
    indices: Sequence[int] | None = None,
    val: Any = None,
    train_tensors: tuple[Any, Any] | None = None,
) -> PeerData:
    """Check the loaders' first batches and convert them to fast batches where possible (a shard if given).

    ``val`` / ``train_tensors``: validation batches and the materialised training set, when already prepared."""
    train_loader, val_loader = loaders
    seed = options.seed if options.seed is not None else 0
    # A stable per-peer shuffling seed (str hash() is randomised per process).
    peer_seed = zlib.crc32(f"{seed}:{options.node_id}".encode()) & 0xFFFF
    train = dataprep.fast_loader(train_loader, seed=peer_seed, indices=indices, tensors=train_tensors)
    val = val if val is not None else dataprep.fast_loader(val_loader)
    check_first_batch(manifest, next(iter(train)), "training")
    check_first_batch(manifest, next(iter(val)), "validation")
    counts: list[int] = []
    if manifest.task.type == "class" and manifest.task.label_type == "integer":
        labels = dataprep.dataset_labels(train) or dataprep.dataset_labels(train_loader) or []
        if indices is not None and labels and not isinstance(train, dataprep.TensorBatches):
            labels = [labels[i] for i in indices]
        counts = dataprep.label_counts(labels, manifest.task.output_shape[0])
    return PeerData(train, val, dataprep.num_samples(train), counts)


def build_optimizer(manifest: Any, hooks: Any, model: Any) -> Any:
    """The script's optimizer, or SGD(lr=0.01, momentum=0.9) when it defines none."""
    import torch

    optimizer = hooks.quinkgl_build_optimizer(manifest=manifest, model=model)
    return optimizer or torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def restore(store: Any, manifest: Any, model: Any, optimizer: Any) -> int:
    """Load the newest intact checkpoint of this swarm into model/optimizer; return its round (0 if none)."""
    checkpoint = store.load_latest()
    if checkpoint is None:
        return 0
    extra = checkpoint.extra or {}
    if extra.get("swarm_id") not in (None, manifest.swarm_id):
        raise QuinkGLError(
            f"checkpoint directory {store.directory} belongs to swarm {extra.get('swarm_id')}, not "
            f"{manifest.swarm_id}; use another --checkpoint-dir"
        )
    model.load_state_dict(checkpoint.model_state)
    if checkpoint.optimizer_state is not None:
        optimizer.load_state_dict(checkpoint.optimizer_state)
    for skipped in checkpoint.skipped:
        log.warning("skipped checkpoint %s: %s", skipped.path, skipped.reason)
    log.info("resuming from checkpoint of round %d (%s)", checkpoint.round, checkpoint.path)
    return checkpoint.round


def build_components(manifest: Any, resolved: ResolvedComponents) -> tuple[Any, Any, Any]:
    """Instantiate aggregator, topology and data policy from the resolved manifest components."""
    made = []
    for field in ("aggregation", "topology", "data_policy"):
        spec = resolved.components[field].spec
        made.append(spec.factory(resolved.params[field], manifest))
    return tuple(made)


def build_peer(
    manifest: Any,
    script: Any,
    options: PeerOptions,
    registry: Registry,
    make_transport: Callable[[int], Any],
    *,
    resolved: ResolvedComponents | None = None,
    data: PeerData | None = None,
    limiter: Any = None,
) -> PeerParts:
    """Everything a :class:`~quinkgl.runtime.peer.Peer` needs; raises a QuinkGLError naming what is wrong.

    ``make_transport(max_payload_bytes)`` builds the transport once the model (and so the payload cap) is known."""
    resolved = resolved or resolve_components(manifest, registry)
    membership_cert = None
    if getattr(manifest, "membership", "open") == "certified":  # fail before any model or data is built
        if not options.membership_cert:
            own_certificate(manifest, None, "<this peer's ID>")  # raises: no certificate given
        else:
            membership_cert = load_certificate(options.membership_cert)  # bound to the peer ID once running
    store = None
    start_round = 0
    if options.checkpoint_dir:
        from quinkgl.checkpoint import CheckpointStore

        store = CheckpointStore(options.checkpoint_dir)
        store.acquire_lock()  # first, and held until the peer's run ends: a second process here is refused
    try:
        hooks = peer_hooks(registry, script)
        model = build_model(manifest, hooks, options)
        data = data or prepare_data(manifest, build_loaders(manifest, hooks, options), options)
        optimizer = build_optimizer(manifest, hooks, model)
        if store is not None:
            start_round = restore(store, manifest, model, optimizer)
        aggregator, topology, data_policy = build_components(manifest, resolved)
        from quinkgl import wire

        transport = make_transport(wire.max_update_bytes(wire.model_spec(model.state_dict())))
    except BaseException:
        if store is not None:
            store.release_lock()
        raise
    return PeerParts(
        manifest=manifest,
        options=options,
        hooks=hooks,
        model=model,
        optimizer=optimizer,
        train_data=data.train,
        val_data=data.val,
        num_samples=data.num_samples,
        label_counts=data.label_counts,
        aggregator=aggregator,
        topology=topology,
        data_policy=data_policy,
        transport=transport,
        loss_fn=loss_function(manifest.task.type, manifest.task.label_type),
        classify=manifest.task.type == "class",
        store=store,
        start_round=start_round,
        limiter=limiter,
        membership_cert=membership_cert,
    )
