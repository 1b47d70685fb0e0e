"""``quinkgl simulate``: N peers in one process over the memory transport, with live progress and a report."""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
from typing import Any

import click

from quinkgl_cli import terminal
from quinkgl_cli.options import parse_script_args
from quinkgl_cli.peer_options import peer_source_options


def _check_byzantine(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    from quinkgl.attacks import parse_byzantine
    from quinkgl.errors import QuinkGLError

    for text in value:
        try:
            parse_byzantine(text)
        except QuinkGLError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _conditions_parser(parse: Any) -> Any:
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        from quinkgl.errors import QuinkGLError

        if value is None:
            return None
        try:
            return parse(value)
        except QuinkGLError as exc:
            raise click.BadParameter(str(exc)) from None

    return check


def _parse_drop(text: str) -> float:
    from quinkgl.simconditions import parse_probability

    return parse_probability(text, "--drop-prob")


def _parse_latency(text: str) -> Any:
    from quinkgl.simconditions import parse_latency

    return parse_latency(text)


def _parse_churn(text: str) -> tuple[float, float]:
    from quinkgl.simconditions import parse_churn

    return parse_churn(text)


def _parse_slow(text: str) -> tuple[float, float]:
    from quinkgl.simconditions import parse_slow

    return parse_slow(text)


MAX_PEERS = 2000  # quinkgl.simulate.MAX_PEERS (not imported here: `quinkgl --help` must not import torch)


@click.command("simulate")
@peer_source_options
@click.option(
    "--peers",
    type=click.IntRange(min=1, max=MAX_PEERS),
    default=10,
    show_default=True,
    help=f"Simulated peers, at most {MAX_PEERS}: about what a 24 GiB, 2-core machine holds with a 0.4 MB model "
    "(each peer costs about its model + optimizer state, a few MB; the rounds take time linear in the peers).",
)
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--partition",
    default="iid",
    show_default=True,
    help="iid, dirichlet:ALPHA (label skew) or groups:K (K disjoint label sets; each peer validated on its "
    "group's labels).",
)
@click.option(
    "--gossip-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Longest a round waits for the other peers, in seconds.",
)
@click.option("--isolated", is_flag=True, help="Peers never exchange models (a no-collaboration baseline).")
@click.option("--max-eval-batches", type=click.IntRange(min=1), help="Evaluate on at most this many batches.")
@click.option("--output", "output_dir", type=click.Path(file_okay=False), help="Folder for metrics.json and the plot.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="PNG of validation accuracy per round.")
@click.option(
    "--byzantine",
    "byzantine",
    multiple=True,
    metavar="K:ATTACK[:PARAM]",
    callback=_check_byzantine,
    help="Make K peers hostile (repeatable): signflip, gaussian, scale, alie, ipm, labelflip, inflate, "
    "histogram. Reports show the honest peers only.",
)
@click.option(
    "--drop-prob",
    default=None,
    callback=_conditions_parser(_parse_drop),
    metavar="P",
    help="Probability in [0, 1) that any one message (announcement, request, answer) is lost; a lost request "
    "or answer costs the asking peer its timeout.",
)
@click.option(
    "--latency",
    default=None,
    callback=_conditions_parser(_parse_latency),
    metavar="DIST",
    help="One-way delay of every request and answer: none, fixed:S, uniform:LO:HI, exp:MEAN or "
    "lognormal:MEDIAN:SIGMA (seconds).",
)
@click.option(
    "--churn",
    default=None,
    callback=_conditions_parser(_parse_churn),
    metavar="LEAVE:REJOIN",
    help="Per round, an online peer goes offline with probability LEAVE and an offline one comes back with "
    "probability REJOIN (e.g. 0.1:0.5). Offline peers skip the round, unreachable.",
)
@click.option(
    "--slow-peers",
    default=None,
    callback=_conditions_parser(_parse_slow),
    metavar="FRACTION:FACTOR",
    help="That share of the peers trains FACTOR times slower (e.g. 0.2:4).",
)
def simulate_command(
    manifest_path: str,
    script: str | None,
    data: str | None,
    script_args: tuple[str, ...],
    local_steps: int | None,
    local_epochs: float | None,
    strict_manifest: bool,
    trust_policy: str,
    trusted_keys: tuple[str, ...],
    seed: int,
    device: str,
    peers: int,
    rounds: int,
    partition: str,
    gossip_interval: float,
    isolated: bool,
    max_eval_batches: int | None,
    output_dir: str | None,
    plot_path: str | None,
    byzantine: tuple[str, ...],
    drop_prob: float | None,
    latency: Any,
    churn: tuple[float, float] | None,
    slow_peers: tuple[float, float] | None,
) -> None:
    """Simulate a swarm of PEERS peers in this process, each on its own shard of the training data."""
    from quinkgl.extras import require_extra

    require_extra("torch", "quinkgl simulate")
    from quinkgl.plugins.manager import build_registry
    from quinkgl.runtime.devices import resolve_device
    from quinkgl.runtime.inputs import load_inputs
    from quinkgl.simconditions import Conditions, Latency
    from quinkgl.simulate import SimulationOptions, simulate

    inputs = load_inputs(manifest_path, script=script, data=data, trust_policy=trust_policy, trusted_keys=trusted_keys)
    for warning in inputs.trust.warnings:
        terminal.warn(warning)
    options = SimulationOptions(
        peers=peers,
        rounds=rounds,
        partition=partition,
        seed=seed,
        local_steps=local_steps,
        local_epochs=local_epochs,
        gossip_interval=gossip_interval,
        script_args=parse_script_args(script_args),
        isolated=isolated,
        max_eval_batches=max_eval_batches,
        strict_manifest=strict_manifest,
        device=resolve_device(device),
        byzantine=byzantine,
        conditions=Conditions(
            drop=drop_prob or 0.0,
            latency=latency or Latency(),
            churn_leave=churn[0] if churn else 0.0,
            churn_rejoin=churn[1] if churn else 1.0,
            slow_fraction=slow_peers[0] if slow_peers else 0.0,
            slow_factor=slow_peers[1] if slow_peers else 1.0,
        ),
    )
    output = output_dir or os.path.join("runs", "sim-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(output, exist_ok=True)
    from quinkgl_cli.progress import SimulationProgress

    terminal.out(f"simulating {peers} peers x {rounds} rounds of {inputs.manifest.name} on device {options.device}")

    with SimulationProgress(peers * rounds, live=terminal.is_tty()) as progress:
        result = simulate(inputs.manifest, inputs.source, options, build_registry(), progress.observe)
    metrics_path = os.path.join(output, "metrics.json")
    with open(metrics_path, "w") as handle:
        json.dump(_report(inputs.manifest, options, result), handle, indent=2, sort_keys=True)
    from quinkgl_cli.render import simulation_table

    honest = [
        (s, size)
        for s, size in zip(result.summaries, result.shard_sizes, strict=False)
        if s["node_id"] not in result.hostile
    ]
    terminal.render(simulation_table([s for s, _ in honest], [size for _, size in honest]))
    terminal.out(f"simulated {peers} peers x {rounds} rounds in {result.seconds:.1f} s")
    scale = result.scale
    if scale:
        terminal.out(
            f"per round {scale['seconds_per_round']:.2f} s; per peer {scale['memory_per_peer_bytes'] / 1e6:.1f} MB "
            f"({scale['memory_per_peer_over_state']:.1f}x model + optimizer state), "
            f"{scale['messages_per_peer_per_round']:.0f} messages and "
            f"{scale['bytes_per_peer_per_round'] / 1e6:.2f} MB per round"
        )
    if options.conditions.any:
        terminal.out(f"conditions: {json.dumps(options.conditions.to_dict(), sort_keys=True)}")
    if result.hostile:
        accuracies = sorted(s["val_accuracy"] for s, _ in honest if s["val_accuracy"] is not None)
        spread = (
            f"min {accuracies[0]:.4f} / median {statistics.median(accuracies):.4f} / max {accuracies[-1]:.4f}"
            if accuracies
            else "no accuracy"
        )
        terminal.out(f"hostile peers (not shown): {', '.join(f'{n} {a}' for n, a in result.hostile.items())}")
        terminal.out(f"honest peers' final val accuracy: {spread}")
    terminal.out(f"metrics: {metrics_path}")
    plot = plot_path or os.path.join(output, "val_accuracy.png")
    from quinkgl_cli.plot import plot_accuracy

    history = {node: rounds for node, rounds in result.history.items() if node not in result.hostile}
    plot_accuracy(history, plot, title=f"{inputs.manifest.name}: {peers} peers, {partition}")
    terminal.out(f"plot: {plot}")


def _report(manifest: Any, options: Any, result: Any) -> dict[str, Any]:
    import attrs

    return {
        "manifest": {
            "name": manifest.name,
            "swarm_id": manifest.swarm_id,
            "aggregation": manifest.aggregation.name,
            "topology": manifest.topology.name,
        },
        "options": attrs.asdict(options),
        "seconds": result.seconds,
        "shard_sizes": result.shard_sizes,
        "summary": result.summaries,
        "val_accuracy": {node: [m["val_accuracy"] for m in rounds] for node, rounds in result.history.items()},
        "rounds": result.history,
        "hostile": result.hostile,
        "honest_val_accuracy": _spread([s["val_accuracy"] for s in result.honest()]),
        "conditions": options.conditions.to_dict(),
        "online_val_accuracy": _spread(
            [s["val_accuracy"] for s in result.honest() if s.get("conditions", {}).get("online", True)]
        ),
        "scale": result.scale,
    }


def _spread(values: list[Any]) -> dict[str, float | None]:
    present = sorted(v for v in values if v is not None)
    if not present:
        return {"min": None, "median": None, "max": None}
    return {"min": present[0], "median": statistics.median(present), "max": present[-1]}
