"""``bmseg models`` (the MLflow model registry at a glance, with every alias move) and ``bmseg promote``."""

from __future__ import annotations

import json

import typer

from bmcore.db import init_db, session_scope
from bmcore.tracking import CHAMPION_ALIAS, configure, registry_overview, set_champion
from bmcore.tracking.alias_moves import alias_history, mover
from bmcore.tracking.registry import version_warnings

commands = typer.Typer()


@commands.command()
def models() -> None:
    """The registry: bmseg-unet, bmseg-cnn, bmseg-fcn versions, aliases, key metrics and alias moves.

    Each version lists its ``warnings``: trained on synthetic data (not for clinical use), a validation
    set too small to promote on."""
    configure()
    overview = registry_overview()
    init_db()
    with session_scope() as session:
        for model in overview:
            model["history"] = alias_history(session, model["name"])
            for version in model["versions"]:
                version["warnings"] = version_warnings(version["tags"])
    typer.echo(json.dumps(overview, indent=1, default=str))


@commands.command()
def promote(
    name: str = typer.Argument(..., help="The registered model: bmseg-unet, bmseg-cnn or bmseg-fcn."),
    version: int = typer.Argument(..., help="The version that becomes the champion."),
    reason: str = typer.Option(..., "--reason", help="Why (kept with the move, shown on the Models page)."),
) -> None:
    """Move the champion alias to a version (recorded as moved by cli:<your OS user>)."""
    if not reason.strip():
        raise ValueError("--reason must say why the champion moves")
    init_db()
    configure()
    by = mover()
    if set_champion(name, version, moved_by=by, reason=reason.strip()):
        typer.echo(f"{name}@{CHAMPION_ALIAS} is now version {version} (moved by {by})")
    else:
        typer.echo(f"{name}@{CHAMPION_ALIAS} is version {version} already; nothing moved")
