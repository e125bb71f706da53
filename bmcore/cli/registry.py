"""``bmseg models``: the MLflow model registry at a glance."""

from __future__ import annotations

import json

import typer

from bmcore.tracking import configure, registry_overview

commands = typer.Typer()


@commands.command()
def models() -> None:
    """The registry: bmseg-unet, bmseg-cnn, bmseg-fcn versions, aliases and key metrics."""
    configure()
    typer.echo(json.dumps(registry_overview(), indent=1, default=str))
