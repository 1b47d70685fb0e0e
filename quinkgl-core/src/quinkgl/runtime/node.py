"""One networked peer process (``quinkgl run``): transport from the manifest, signals, final checkpoint.

SIGINT / SIGTERM abandon the current step, write a final checkpoint of the model as it stands (labelled with the
last completed round, so a restart resumes the interrupted round) and report which signal ended the run.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from quinkgl import paths
from quinkgl.errors import QuinkGLError
from quinkgl.plugins.manager import Registry
from quinkgl.plugins.requirements import resolve_components
from quinkgl.runtime.options import PeerOptions
from quinkgl.transport import TransportConfig

log = logging.getLogger("quinkgl.peer")


@attrs.frozen(kw_only=True)
class NetworkOptions:
    """Where the peer listens and whom it dials first."""

    host: str = "127.0.0.1"
    port: int = 0
    bootstrap_peers: Sequence[str] = ()
    announce_addrs: Sequence[str] = ()
    relay: bool = False  # serve as a circuit relay for the swarm's members (libp2p)
    state_dir: str | None = None  # identity key location; default: checkpoint dir, else per-user state


@attrs.frozen
class RunOutcome:
    """How a run ended: the signal that stopped it (None when all rounds finished) and the peer's summary."""

    signal: int | None
    summary: dict[str, Any]
    history: list[dict[str, Any]]


def identity_dir(options: PeerOptions, network: NetworkOptions) -> str:
    """Where the peer's transport identity lives, so its peer ID survives restarts."""
    if network.state_dir:
        return network.state_dir
    if options.checkpoint_dir:
        return options.checkpoint_dir
    return os.path.join(paths.state_dir(), "nodes", options.node_id)


async def run_peer(
    manifest: Any,
    source: Any,
    options: PeerOptions,
    network: NetworkOptions,
    registry: Registry,
    observer: Callable[[str, dict[str, Any]], None] | None = None,
    on_listening: Callable[[Any], None] | None = None,
) -> RunOutcome:
    """Build and run one peer until its rounds are done or a signal arrives."""
    import trio

    from quinkgl.runtime.build import build_peer
    from quinkgl.runtime.peer import Peer

    if manifest.round_limit is not None and options.rounds > manifest.round_limit:
        raise QuinkGLError(f"--rounds {options.rounds} exceeds the manifest's round_limit {manifest.round_limit}")
    resolved = resolve_components(manifest, registry)
    transport_spec = resolved.components["transport"].spec

    def make_transport(max_bytes: int) -> Any:
        config = TransportConfig(
            swarm_id=manifest.swarm_id,
            node_id=options.node_id,
            host=network.host,
            port=network.port,
            state_dir=identity_dir(options, network),
            max_payload_bytes=max_bytes,
            bootstrap_peers=tuple(dict.fromkeys([*manifest.bootstrap_peers, *network.bootstrap_peers])),
            announce_addrs=tuple(network.announce_addrs),
            # arch_hash: answered by the libp2p hello protocol (quinkgl doctor); relay: serve as a circuit relay
            options={"arch_hash": manifest.model.arch_hash, "relay": network.relay},
        )
        return transport_spec.factory(resolved.params["transport"], config)

    parts = await trio.to_thread.run_sync(
        lambda: build_peer(manifest, source, options, registry, make_transport, resolved=resolved)
    )
    peer = Peer(parts, observer)
    if parts.start_round >= options.rounds:
        log.info("checkpoint is at round %d of %d: nothing left to do", parts.start_round, options.rounds)
    received: list[int] = []

    def emit_listening(kind: str, data: dict[str, Any]) -> None:
        if kind == "started" and on_listening is not None:
            on_listening(peer)
        if observer is not None:
            observer(kind, data)

    peer.observer = emit_listening
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    received.append(signum)
                    log.warning("received %s: stopping after a final checkpoint", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            await peer.run()
            nursery.cancel_scope.cancel()
    if received:
        await trio.to_thread.run_sync(peer.final_checkpoint)
    return RunOutcome(received[0] if received else None, peer.summary(), peer.history)
