"""What every command shares on the terminal: the stderr console, progress bars, the --modalities parser."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bmcore.imaging import MODALITIES

console = Console(stderr=True)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def parse_modalities(text: str | None) -> tuple[str, ...]:
    if not text:
        return MODALITIES
    chosen = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in chosen if m not in MODALITIES]
    if unknown or not chosen:
        raise ValueError(
            f"--modalities: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(MODALITIES)}"
        )
    return chosen
