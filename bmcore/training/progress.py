"""Training progress on stderr, drawn by rich, and the rule that keeps error lines off a bar's line.

rich draws a live bar only on a terminal, redrawing it in place with no newline after it; to a pipe or a
log file (a worker's log, ``bmseg train 2>log``) the bar writes one whole line per epoch instead, and the
finished bar when it stops. A bar is always stopped (it is a
context manager) before the error that ended its run is printed. A process that dies outright cannot stop
its bar: whoever reports that death (the launcher, another rank) calls :func:`start_fresh_line` first.
Torch-free.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class EpochBar:
    """One bar over a run's epochs, ``with EpochBar(...) as bar: ... bar.advance(loss=0.4)``.

    ``enabled`` false (no progress wanted, or not rank 0): nothing is drawn.
    """

    def __init__(self, description: str, epochs: int, done: int = 0, enabled: bool = True) -> None:
        self._description, self._epochs, self._done, self._enabled = description, epochs, done, enabled
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[figures]}"),
            console=Console(stderr=True),
            disable=not enabled,
            redirect_stdout=False,  # stdout stays the command's own (``bmseg train`` prints JSON there)
        )
        self._task = self._progress.add_task(description, total=epochs, completed=done, figures="")

    def __enter__(self) -> EpochBar:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._progress.stop()

    def advance(self, **figures: float) -> None:
        """One more epoch done; ``figures`` (name: value) are shown after the bar."""
        shown = "  ".join(f"{name} {value:.3f}" for name, value in figures.items())
        self._progress.update(self._task, advance=1, figures=shown)
        self._done += 1
        console = self._progress.console
        if self._enabled and not (console.is_terminal and not console.is_dumb_terminal):
            console.print(f"{self._description} epoch {self._done}/{self._epochs}  {shown}", highlight=False)


def start_fresh_line() -> None:
    """End the line a dead process's live bar may have left open, so the next line stands alone.

    Only where rich draws live bars (a terminal, as rich decides): anywhere else every line is ended.
    """
    console = Console(stderr=True)
    if console.is_terminal and not console.is_dumb_terminal:
        console.file.write("\n")
        console.file.flush()
