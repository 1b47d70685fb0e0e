"""Rich renderings of core objects for people (tables); the commands decide when to show them."""

from __future__ import annotations

from typing import Any


def manifest_table(manifest: Any, signature: str, expired: bool) -> Any:
    """A two-column table of a manifest's fields."""
    from rich.table import Table

    table = Table(title=f"Manifest {manifest.name}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    task = manifest.task
    rows = [
        ("Swarm ID", manifest.swarm_id),
        (
            "Task",
            f"{task.type}: input {list(task.input_shape)} -> output {list(task.output_shape)}, "
            f"labels {task.label_type}",
        ),
        ("Data schema", manifest.data_schema_hash),
        ("Model", f"{manifest.model.framework} {manifest.model.arch_hash}"),
        ("Aggregation", _component(manifest.aggregation)),
        ("Topology", _component(manifest.topology)),
        ("Transport", _component(manifest.transport)),
        ("Data policy", _component(manifest.data_policy)),
        ("Round limit", str(manifest.round_limit) if manifest.round_limit else "none"),
        ("Byzantine f", str(manifest.byzantine_f)),
        ("Membership", manifest.membership),
        ("Expires", f"{manifest.expires_at}{' (EXPIRED)' if expired else ''}" if manifest.expires_at else "never"),
        ("Bootstrap peers", ", ".join(manifest.bootstrap_peers) or "none"),
        ("Created", manifest.created_at),
        ("Creator", manifest.creator_pubkey or "none"),
        ("Signature", signature),
    ]
    rows += [("Requires", f"{r.distribution}{r.specifier} ({', '.join(r.provides)})") for r in manifest.plugins]
    for field, value in rows:
        table.add_row(field, value)
    return table


def _component(component: Any) -> str:
    if not component.params:
        return component.name
    params = ", ".join(f"{k}={v}" for k, v in sorted(component.params.items()))
    return f"{component.name} ({params})"


def components_table(registry: Any, known: dict[str, list[tuple[str, str]]]) -> Any:
    """Registered components with their providing distribution, plus first-party ones not installed."""
    from rich.table import Table

    table = Table(title="Components", title_justify="left")
    for column in ("kind", "name", "provided by", "description"):
        table.add_column(column)
    for comp in registry.components():
        dist = comp.provider.distribution or comp.plugin
        version = f" {comp.provider.version}" if comp.provider.version else ""
        table.add_row(comp.kind, comp.name, f"{dist}{version}", comp.spec.description)
    for kind, entries in known.items():
        for entry in entries:
            table.add_row(kind, entry[0], f"{entry[1]} (not installed)", f"pip install {entry[1]}")
    return table


def simulation_table(summaries: list[dict[str, Any]], shard_sizes: list[int]) -> Any:
    """Per-peer results of a simulation."""
    from rich.table import Table

    table = Table(title="Simulation", title_justify="left")
    for column in ("peer", "samples", "rounds", "final val acc", "sent", "received", "accepted", "rejected"):
        table.add_column(column, justify="right" if column != "peer" else "left")
    for summary, size in zip(summaries, shard_sizes, strict=False):
        accuracy = summary["val_accuracy"]
        table.add_row(
            summary["node_id"],
            str(size),
            str(summary["rounds"]),
            f"{accuracy:.4f}" if accuracy is not None else "-",
            human_bytes(summary["bytes_sent"]),
            human_bytes(summary["bytes_received"]),
            str(summary["updates_accepted"]),
            str(summary["updates_rejected"]),
        )
    return table


def human_bytes(count: int) -> str:
    """1536 → '1.5 KiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
