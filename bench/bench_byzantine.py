"""Robust rules at gossip fan-in under Byzantine peers: a markdown table and a heatmap PNG (ByzFL's style).

Every run is ``quinkgl simulate`` in-process on real MNIST with the guide's unchanged script and MLP, 10 peers and
the same seed: aggregator ∈ {FedAvg, Krum, MultiKrum, TrimmedMean, Median, CenteredClipping} × attack ∈ {none,
signflip, gaussian, alie, ipm, labelflip, inflate} × f ∈ {1, 3} × partition ∈ {iid, dirichlet:0.5}, plus isolated
training (no exchange) per partition. The manifest's ``byzantine_f`` is f, and RandomTopology's fanout is
max(3, 2f + 2) so that each rule can get the inputs it needs. Each cell is the honest peers' final validation
accuracy, ``min / median``; the heatmap colours the minimum. ``fallback`` counts honest peer-rounds in which fewer
models arrived than the rule needs (``min_updates``), so the own model was kept; Krum choosing the own model on
its score is not a fallback.

Output (never committed): ``runs/byzantine-<time>/table.md``, ``heatmap.png``, ``results.json``.

Usage: python bench/bench_byzantine.py --data-root DIR [--quick] [--rounds R] [--local-steps S] [--output DIR]
[--partition P]... [--f F]... (a part of the grid, e.g. to run parts side by side)
``--quick``: FedAvg, Krum, Median × none, signflip, inflate × f = 1 × iid, 3 rounds × 30 steps.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AGGREGATORS = ["FedAvg", "Krum", "MultiKrum", "TrimmedMean", "Median", "CenteredClipping"]
ATTACKS = ["none", "signflip", "gaussian", "alie", "ipm", "labelflip", "inflate"]
FS = [1, 3]
PARTITIONS = ["iid", "dirichlet:0.5"]


def arch_hash(script: Path) -> str:
    from quinkgl.manifest import compute_arch_hash

    spec = importlib.util.spec_from_file_location("bench_peer_script", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return compute_arch_hash(module.build_model(None))


def manifest(aggregation: str, f: int, arch: str, registry: Any) -> Any:
    from quinkgl.authoring import ManifestOptions, create_manifest

    options = ManifestOptions(
        name="byzantine-bench",
        task_type="class",
        input_shape=(1, 28, 28),
        output_shape=(10,),
        label_type="integer",
        framework="pytorch",
        arch_hash=arch,
        aggregation=aggregation,
        transport="memory",
        byzantine_f=f,
        params={"topology": {"fanout": max(3, 2 * f + 2)}},
    )
    return create_manifest(options, registry)


def run(
    aggregation: str, attack: str, f: int, partition: str, args: Any, arch: str, registry: Any, isolated: bool = False
) -> dict[str, Any]:
    from quinkgl.script import ScriptPlugin
    from quinkgl.simulate import SimulationOptions, simulate

    byzantine = () if attack == "none" else (f"{f}:{attack}",)
    options = SimulationOptions(
        peers=10,
        rounds=args.rounds,
        local_steps=args.local_steps,
        local_epochs=None if args.local_steps else 1,
        partition=partition,
        seed=args.seed,
        script_args={"data_root": args.data_root},
        isolated=isolated,
        max_eval_batches=args.max_eval_batches,
        byzantine=byzantine,
    )
    started = time.monotonic()
    result = simulate(manifest(aggregation, f, arch, registry), ScriptPlugin.from_file(args.script), options, registry)
    honest = [s["val_accuracy"] for s in result.honest() if s["val_accuracy"] is not None]
    fallback = sum(
        1 for node, rounds in result.history.items() if node not in result.hostile for r in rounds if r["fell_back"]
    )
    row = {
        "aggregation": aggregation,
        "attack": attack,
        "f": f,
        "partition": partition,
        "isolated": isolated,
        "min": min(honest),
        "median": statistics.median(honest),
        "max": max(honest),
        "fallback": fallback,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def write_outputs(rows: list[dict[str, Any]], attacks: list[str], output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(rows, indent=2))
    keys = sorted(
        {(r["partition"], r["f"], r["aggregation"], r["isolated"]) for r in rows},
        key=lambda k: (k[0], k[1], k[3], AGGREGATORS.index(k[2]) if k[2] in AGGREGATORS else 99),
    )
    cell = {(r["partition"], r["f"], r["aggregation"], r["isolated"], r["attack"]): r for r in rows}
    lines = [
        "| partition | f | rule | " + " | ".join(attacks) + " | fallback |",
        "|---|---|---|" + "---|" * (len(attacks) + 1),
    ]
    labels, grid = [], []
    for key in keys:
        partition, f, aggregation, isolated = key
        name = "isolated" if isolated else aggregation
        values, texts, fallback = [], [], 0
        for attack in attacks:
            found = cell.get((*key, attack)) or (cell.get((*key, "none")) if isolated else None)
            if found is None:
                texts.append("-")
                values.append(float("nan"))
            else:
                texts.append(f"{found['min']:.3f} / {found['median']:.3f}")
                values.append(found["min"])
                fallback += found["fallback"]
        lines.append(f"| {partition} | {f} | {name} | " + " | ".join(texts) + f" | {fallback} |")
        labels.append(f"{partition} f={f} {name}")
        grid.append(values)
    (output / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(1.4 * len(attacks) + 3, 0.45 * len(labels) + 1.5), dpi=110)
    image = axes.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(attacks)), attacks, rotation=30, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    for i, values in enumerate(grid):
        for j, value in enumerate(values):
            if not math.isnan(value):
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8)
    figure.colorbar(image, ax=axes, label="honest peers' minimum final accuracy")
    axes.set_title("Honest minimum accuracy under Byzantine peers (10 peers)")
    figure.tight_layout()
    figure.savefig(output / "heatmap.png")
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="folder with MNIST (quinkgl data mnist --root DIR)")
    parser.add_argument("--script", default=str(ROOT / "examples" / "mnist_peer_script.py"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--local-steps", type=int, help="default: 1 epoch per round (30 with --quick)")
    parser.add_argument("--max-eval-batches", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partition", action="append", choices=PARTITIONS, help="only this partition (repeatable)")
    parser.add_argument("--f", action="append", type=int, choices=FS, help="only this f (repeatable)")
    parser.add_argument("--output", help="default runs/byzantine-<time>")
    args = parser.parse_args()
    aggregators, attacks, fs, partitions = AGGREGATORS, ATTACKS, FS, PARTITIONS
    if args.quick:
        aggregators, attacks, fs, partitions = (
            ["FedAvg", "Krum", "Median"],
            ["none", "signflip", "inflate"],
            [1],
            ["iid"],
        )
        args.rounds = args.rounds or 3
        args.local_steps = args.local_steps or 30
        args.max_eval_batches = args.max_eval_batches or 40
    args.rounds = args.rounds or 10
    partitions = args.partition or partitions
    fs = args.f or fs
    output = Path(args.output or ROOT / "runs" / ("byzantine-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S")))
    from quinkgl.plugins.manager import build_registry

    registry = build_registry()
    arch = arch_hash(Path(args.script))
    rows = []
    for partition in partitions:
        for f in fs:
            rows.append(run("FedAvg", "none", f, partition, args, arch, registry, isolated=True))
            for aggregation in aggregators:
                for attack in attacks:
                    rows.append(run(aggregation, attack, f, partition, args, arch, registry))
    write_outputs(rows, attacks, output)
    print(f"\nwritten: {output / 'table.md'}, {output / 'heatmap.png'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
