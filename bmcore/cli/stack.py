"""``bmseg up`` and ``bmseg demo``: the local stack, alone or driven through the main job end to end."""

from __future__ import annotations

import typer

from bmcore.local.demo import run_demo
from bmcore.local.stack import run_stack

commands = typer.Typer()


@commands.command()
def up(
    web_port: int = typer.Option(8000, help="Dashboard and API port."),
    mlflow_port: int = typer.Option(5000, help="MLflow UI port."),
    mlflow: bool = typer.Option(True, help="Start the MLflow UI."),
) -> None:
    """The whole local stack: Redis (when none answers), MLflow UI, web, one worker. Ctrl-C stops it."""

    def ready(urls: dict) -> None:
        for name, url in urls.items():
            typer.echo(f"{name:>10}: {url}")
        typer.echo("bmseg is up; press Ctrl-C to stop everything it started")

    try:
        run_stack(web_port, mlflow_port, mlflow, on_ready=ready)
    except KeyboardInterrupt:
        typer.echo("stopped")


@commands.command()
def demo(
    quick: bool = typer.Option(False, "--quick", help="A tiny cohort and model (a smoke test, ~2 minutes)."),
    serve: bool = typer.Option(True, help="Keep the stack running after the report (Ctrl-C stops it)."),
    web_port: int = typer.Option(8000, help="Dashboard port."),
    mlflow_port: int = typer.Option(5000, help="MLflow UI port."),
) -> None:
    """The main job: synthetic cohort → stack up → U-Net, CNN, FCN trained and evaluated through the queue."""
    run_demo(quick=quick, serve=serve, web_port=web_port, mlflow_port=mlflow_port, echo=typer.echo)
