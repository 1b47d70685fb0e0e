"""Live progress for running peers: a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

from typing import Any

import click


class _LiveBar:
    """A rich progress bar with one task, shown only when ``live``; subclasses choose the label column."""

    label = "{task.description}"

    def __init__(self, total: int, live: bool):
        self.total = total
        self.live = live
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Any:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            from quinkgl_cli.terminal import console

            self._progress = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console(),
                redirect_stdout=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("starting", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def _update(self, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, **fields)


class SimulationProgress(_LiveBar):
    """Counts finished peer-rounds; shows the lowest and highest latest validation accuracy."""

    label = "peer-rounds"

    def __init__(self, total: int, live: bool):
        super().__init__(total, live)
        self.latest: dict[str, float] = {}

    def observe(self, kind: str, data: dict[str, Any]) -> None:
        """Observer callback given to the runtime."""
        if kind != "round_end":
            return
        if data.get("val_accuracy") is not None:
            self.latest[data["node_id"]] = data["val_accuracy"]
        spread = f"val acc {min(self.latest.values()):.3f}-{max(self.latest.values()):.3f}" if self.latest else ""
        if self.live:
            self._update(advance=1, description=f"round {data['round']} {spread}")
        else:
            click.echo(f"[sim] {data['node_id']} round {data['round']} val_acc={data.get('val_accuracy')}")


class PeerProgress(_LiveBar):
    """A live status line for one peer on a terminal (round, peers, accuracy, bytes); nothing otherwise."""

    label = "round"

    def observe(self, kind: str, data: dict[str, Any]) -> None:
        """Observer callback given to the runtime."""
        if kind == "started":
            self._update(completed=data.get("start_round", 0))
        elif kind == "round_end":
            from quinkgl_cli.render import human_bytes

            accuracy = data.get("val_accuracy")
            description = f"peers {data['peers']} · sent {human_bytes(data['bytes_sent'])}"
            if accuracy is not None:
                description += f" · val acc {accuracy:.3f}"
            self._update(completed=data["round"], description=description)


def configure_logging(verbose: bool, live: bool) -> None:
    """Peer log lines go to stdout as plain text (so `tee` and `grep` work); libp2p's chatter stays quiet."""
    import logging
    import sys

    handler: logging.Handler
    if live:
        from rich.logging import RichHandler

        from quinkgl_cli.terminal import console

        handler = RichHandler(console=console(), show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("quinkgl").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("libp2p").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    logging.getLogger("multiaddr").setLevel(logging.WARNING)
