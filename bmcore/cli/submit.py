"""``bmseg submit …``: queue train, evaluate, segment, sweep and cross-validation jobs for the workers."""

from __future__ import annotations

from pathlib import Path

import typer

from bmcore.cli.jobs import follow_job
from bmcore.cli.options import SHORT_HELP, TRAIN_OPTIONS, with_train_options
from bmcore.db import Result, init_db, session_scope
from bmcore.jobs.lifecycle import submit_job
from bmcore.jobs.parents.parsing import parse_assignments, parse_grid, parse_random

submit_app = typer.Typer(help="Queue a job for the workers (train, evaluate, segment).", no_args_is_help=True)
commands = typer.Typer()
commands.add_typer(submit_app, name="submit")


def submit(job_type: str, params: dict) -> str:
    """Queue one job (parameters left at None are not sent); returns its id."""
    init_db()
    with session_scope() as session:
        return submit_job(session, job_type, {k: v for k, v in params.items() if v is not None}).id


def queue_job(job_type: str, params: dict, wait: bool) -> None:
    job_id = submit(job_type, params)
    typer.echo(f"queued {job_type} job {job_id}")
    if wait:
        follow_job(job_id)


def queue_parent_job(job_type: str, params: dict, wait: bool, table_artifact: str) -> None:
    """Queue a sweep or cross-validation job; with ``wait``, follow it and print its table."""
    job_id = submit(job_type, params)
    typer.echo(f"queued {job_type} job {job_id} (its table when done: bmseg job {job_id})")
    if not wait:
        return
    try:
        follow_job(job_id)
    finally:
        with session_scope() as session:
            result = session.query(Result).filter_by(job_id=job_id).one_or_none()
            table = result.artifacts.get(table_artifact) if result is not None else None
        path = Path(table) if table else None
        if path is not None and path.is_file():
            typer.echo(path.read_text())


SUBMIT_TRAIN_FIELDS = (
    "arch",
    "epochs",
    "lr",
    "loss",
    "batch_size",
    "size",
    "base_channels",
    "depth",
    "samples_per_epoch",
    "seed",
)
SUBMIT_TRAIN_HELP = SHORT_HELP | {"epochs": "Maximum epochs.", "depth": "Pooling levels."}


@submit_app.command("train")
@with_train_options(SUBMIT_TRAIN_FIELDS, helps=SUBMIT_TRAIN_HELP)
def submit_train(
    data: Path = typer.Option(..., "--data", help="Data folder or CSV manifest (as the workers see it)."),
    train_options: dict = TRAIN_OPTIONS,
    wait: bool = typer.Option(False, "--wait", help="Follow progress until the job ends."),
) -> None:
    """Queue a training job (tracked in MLflow, registered as bmseg-<arch>)."""
    queue_job("train", {"data": str(data.absolute()), **train_options}, wait)


@submit_app.command("evaluate")
def submit_evaluate(
    data: Path = typer.Option(..., "--data", help="Labelled studies."),
    model: str = typer.Option("models:/bmseg-unet@champion", "--model", help="Checkpoint or registry URI."),
    split_file: Path | None = typer.Option(None, "--split", help="Only this split's test studies."),
    wait: bool = typer.Option(False, "--wait", help="Follow progress until the job ends."),
) -> None:
    """Queue an evaluation job (metrics of every convention)."""
    queue_job(
        "evaluate",
        {
            "data": str(data.absolute()),
            "model": model,
            "split": str(split_file.absolute()) if split_file else None,
        },
        wait,
    )


@submit_app.command("segment")
def submit_segment(
    study: Path = typer.Argument(..., help="Study folder (or data folder) as the workers see it."),
    model: str = typer.Option("models:/bmseg-unet@champion", "--model", help="Checkpoint or registry URI."),
    tta: bool = typer.Option(False, help="Mirror test-time augmentation."),
    wait: bool = typer.Option(False, "--wait", help="Follow progress until the job ends."),
) -> None:
    """Queue a segmentation job (mask + lesion table per study)."""
    queue_job("segment", {"study_dir": str(study.absolute()), "model": model, "tta": tta}, wait)


@submit_app.command("sweep")
def submit_sweep(
    data: Path = typer.Option(..., "--data", help="Data folder or CSV manifest (as the workers see it)."),
    grid: str | None = typer.Option(
        None, "--grid", help="Every combination of 'lr=1e-3,3e-4;arch=unet,cnn' (any TrainConfig field)."
    ),
    random_space: str | None = typer.Option(
        None, "--random", help="Ranges and choices to draw from: 'lr=1e-4:1e-2;dropout=0:0.5;arch=unet,cnn'."
    ),
    budget: int | None = typer.Option(None, "--budget", help="How many configurations (random: required)."),
    base: str = typer.Option("", "--base", help="Training parameters of every child: 'epochs=2,size=64'."),
    seed: int = typer.Option(0, "--seed", help="Random-search seed."),
    split_seed: int = typer.Option(0, "--split-seed", help="The one patient split all children share."),
    promote_best: bool = typer.Option(False, "--promote-best", help="Move champion to the best child."),
    wait: bool = typer.Option(False, "--wait", help="Follow progress, then print the ranked table."),
) -> None:
    """Queue a hyperparameter sweep: one train job per configuration, ranked by validation lesion Dice."""
    if (grid is None) == (random_space is None):
        raise typer.BadParameter("give exactly one of --grid and --random")
    params = {
        "data": str(data.absolute()),
        "grid": parse_grid(grid) if grid is not None else None,
        "random": parse_random(random_space) if random_space is not None else None,
        "budget": budget,
        "seed": seed,
        "split_seed": split_seed,
        "base": parse_assignments(base),
        "promote_best": promote_best,
    }
    queue_parent_job("sweep", params, wait, "ranking_md")


@submit_app.command("crossval")
def submit_crossval(
    data: Path = typer.Option(..., "--data", help="Data folder or CSV manifest (as the workers see it)."),
    folds: int = typer.Option(5, "--folds", help="k patient folds (2 to 10)."),
    base: str = typer.Option("", "--base", help="Training parameters of every fold: 'epochs=2,size=64'."),
    seed: int = typer.Option(0, "--seed", help="Fold assignment seed."),
    wait: bool = typer.Option(False, "--wait", help="Follow progress, then print per-fold and mean ± std."),
) -> None:
    """Queue a k-fold cross-validation by patient: one train job per fold, out-of-fold metrics pooled."""
    params = {"data": str(data.absolute()), "folds": folds, "base": parse_assignments(base), "seed": seed}
    queue_parent_job("crossval", params, wait, "crossval_md")
