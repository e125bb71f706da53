"""The ``bmseg`` typer app and its console entry point.

The app holds no commands itself: :class:`LazyCommands` imports a command's module (one per command
group: ``bmcore.cli.data``, ``bmcore.cli.jobs``, …) only when that command is looked up, so ``bmseg jobs``
never loads what ``bmseg cohort`` or ``bmseg demo`` need; ``bmseg --help`` loads them all (torch and
MLflow stay inside the commands that use them).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import click
import typer
from typer.core import TyperGroup

COMMAND_MODULES: dict[str, str] = {  # command → the bmcore.cli module defining it, in ``--help`` order
    "synth": "data",
    "check": "data",
    "split": "data",
    "import-dicom": "dicom",
    "train": "train",
    "evaluate": "evaluate",
    "segment": "evaluate",
    "compare": "evaluate",
    "jobs": "jobs",
    "job": "jobs",
    "cancel": "jobs",
    "worker": "jobs",
    "models": "registry",
    "promote": "registry",
    "up": "stack",
    "demo": "stack",
    "cohort": "reports",
    "submit": "submit",
    "user": "accounts",
    "group": "accounts",
    "token": "accounts",
    "patients": "patients",
    "datasets": "datasets",
}
USER_ERRORS = (ValueError, LookupError, OSError, RuntimeError)


class LazyCommands(MutableMapping):
    """The root's commands by name: every name is known at once, its command is built when first looked up."""

    def __init__(self) -> None:
        self.loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self.loaded and name in COMMAND_MODULES:
            # lazy: a command group's module (and all it imports) loads only when one of its commands runs
            module = importlib.import_module(f"bmcore.cli.{COMMAND_MODULES[name]}")
            self.loaded.update(typer.main.get_group(module.commands).commands)
        return self.loaded[name]

    def __contains__(self, name: object) -> bool:
        return name in COMMAND_MODULES or name in self.loaded

    def __iter__(self) -> Iterator[str]:
        return iter(COMMAND_MODULES)

    def __len__(self) -> int:
        return len(COMMAND_MODULES)

    def __setitem__(self, name: str, command: click.Command) -> None:
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self.loaded[name]


class LazyCommandGroup(TyperGroup):
    """The root group, over :class:`LazyCommands`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = LazyCommands()


def _no_options() -> None:
    """The root takes no options of its own."""


app = typer.Typer(
    help="bmseg: find and outline brain metastases on MRI (T1, T1ce, T2, FLAIR).",
    cls=LazyCommandGroup,
    callback=_no_options,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def main() -> None:
    """Console entry point: usage errors as Click shows them; user errors as one line, exit code 2."""
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as exc:
        if os.environ.get("BMSEG_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
