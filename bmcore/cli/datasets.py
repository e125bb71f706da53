"""``bmseg datasets add|list|remove``: the data folders queued jobs may name (an admin's task).

Non-admins' web jobs (and their sweeps and cross-validations) name a registered data set instead of a
path; only runs on a data set registered with ``--promotable`` may move the ``champion`` alias on their own.
"""

from __future__ import annotations

from pathlib import Path

import typer

from bmcore.datasets import add_dataset, dataset_to_dict, list_datasets, remove_dataset
from bmcore.db import init_db, session_scope

datasets_app = typer.Typer(help="Registered data sets (what queued jobs may name).", no_args_is_help=True)
commands = typer.Typer()
commands.add_typer(datasets_app, name="datasets")


@datasets_app.command("add")
def datasets_add(
    name: str = typer.Argument(..., help="The name jobs use: letters, digits, '_', '.', '-'."),
    path: Path = typer.Argument(..., help="The data folder or CSV manifest, as the workers see it."),
    group: str | None = typer.Option(
        None, "--group", help="Only this group's members may use it (default: every researcher)."
    ),
    promotable: bool = typer.Option(
        False, "--promotable", help="Runs on it may move the champion alias on their own."
    ),
) -> None:
    """Register a data folder (or CSV manifest) by name."""
    init_db()
    with session_scope() as session:
        dataset = add_dataset(session, name, path.expanduser().absolute(), group, promotable)
        entry = dataset_to_dict(session, dataset, with_path=True)
    typer.echo(f"added data set {entry['name']}: {_describe(entry)}")


@datasets_app.command("list")
def datasets_list() -> None:
    """The registered data sets: name, who may use them, whether they promote, path."""
    init_db()
    with session_scope() as session:
        entries = [dataset_to_dict(session, dataset, with_path=True) for dataset in list_datasets(session)]
    if not entries:
        typer.echo("no data sets registered (bmseg datasets add NAME PATH)")
    for entry in entries:
        typer.echo(f"{entry['name']}: {_describe(entry)}")


@datasets_app.command("remove")
def datasets_remove(name: str = typer.Argument(..., help="The data set's name.")) -> None:
    """Forget a data set (its folder stays; jobs that used it keep their path)."""
    init_db()
    with session_scope() as session:
        remove_dataset(session, name)
    typer.echo(f"removed data set {name.strip()}")


def _describe(entry: dict) -> str:
    who = f"group {entry['group']}" if entry["group"] else "every researcher"
    promotes = "promotable" if entry["promotable"] else "not promotable"
    return f"{entry['path']} ({who}, {promotes})"
