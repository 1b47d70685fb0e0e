"""PNG plots of simulation results (matplotlib, headless)."""

from __future__ import annotations

import os
from typing import Any


def plot_accuracy(history: dict[str, list[dict[str, Any]]], path: str, title: str = "") -> None:
    """Validation accuracy per round, one line per peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    for node, rounds in sorted(
        history.items(), key=lambda item: int(item[0].rsplit("-", 1)[-1]) if item[0].rsplit("-", 1)[-1].isdigit() else 0
    ):
        points = [(m["round"], m["val_accuracy"]) for m in rounds if m.get("val_accuracy") is not None]
        if points:
            axes.plot(*zip(*points, strict=False), marker="o", markersize=3, linewidth=1, label=node)
    axes.set_xlabel("round")
    axes.set_ylabel("validation accuracy")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if len(history) <= 12:
        axes.legend(fontsize=8, loc="lower right")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
    plt.close(figure)
