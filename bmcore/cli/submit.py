"""``bmseg submit …``: queue train, evaluate, segment, sweep and cross-validation jobs for the workers."""

from __future__ import annotations

from pathlib import Path

import typer
from sqlalchemy.orm import Session

from bmcore.cli.jobs import follow_job
from bmcore.cli.options import SHORT_HELP, TRAIN_OPTIONS, with_train_options
from bmcore.datasets import find_dataset
from bmcore.db import Result, init_db, session_scope
from bmcore.jobs.lifecycle import submit_job
from bmcore.jobs.parents.parsing import parse_assignments, parse_grid, parse_random

submit_app = typer.Typer(help="Queue a job for the workers (train, evaluate, segment).", no_args_is_help=True)
commands = typer.Typer()
commands.add_typer(submit_app, name="submit")


DATA_HELP = "Data folder or CSV manifest (as the workers see it); or name a registered one with --dataset."
DATASET_HELP = "A registered data set (bmseg datasets list) instead of --data."
ELIGIBLE_TYPES = ("train", "sweep", "crossval")  # carrying champion_eligible (children inherit it)


def submit(job_type: str, params: dict, dataset: str | None = None) -> str:
    """Queue one job (parameters left at None are not sent); returns its id.

    ``dataset`` names a registered data set: its path becomes ``params.data`` and a training run on it may
    move ``champion`` on its own when it is registered as promotable; a run on a raw ``--data`` path never
    does (``bmseg promote`` moves it by hand).
    """
    init_db()
    params = {k: v for k, v in params.items() if v is not None}
    with session_scope() as session:
        internal = data_source(session, job_type, params, dataset)
        return submit_job(session, job_type, params, internal=internal).id


def data_source(session: Session, job_type: str, params: dict, dataset: str | None) -> dict:
    """Put the data set's path into ``params`` (exactly one of --data and --dataset); the internal
    params that go with it (``dataset``, ``champion_eligible``)."""
    if dataset is not None and "data" in params:
        raise typer.BadParameter("give one of --data and --dataset, not both")
    internal: dict = {}
    promotable = False
    if dataset is not None:
        found = find_dataset(session, dataset.strip())
        if found is None:
            raise LookupError(f"no data set named {dataset.strip()!r} (bmseg datasets list)")
        params["data"] = found.path
        internal["dataset"], promotable = found.name, found.promotable
    elif "data" not in params and job_type != "segment":
        raise typer.BadParameter("give --data or --dataset")
    if job_type in ELIGIBLE_TYPES:
        internal["champion_eligible"] = bool(promotable)
    return internal


def queue_job(job_type: str, params: dict, wait: bool, dataset: str | None = None) -> None:
    job_id = submit(job_type, params, dataset)
    typer.echo(f"queued {job_type} job {job_id}")
    if wait:
        follow_job(job_id)


def queue_parent_job(
    job_type: str, params: dict, wait: bool, table_artifact: str, dataset: str | None = None
) -> None:
    """Queue a sweep or cross-validation job; with ``wait``, follow it and print its table."""
    job_id = submit(job_type, params, dataset)
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
    "recipe",
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
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
    dataset: str | None = typer.Option(None, "--dataset", help=DATASET_HELP),
    train_options: dict = TRAIN_OPTIONS,
    wait: bool = typer.Option(False, "--wait", help="Follow progress until the job ends."),
) -> None:
    """Queue a training job (tracked in MLflow, registered as bmseg-<arch>)."""
    queue_job("train", {"data": _absolute(data), **train_options}, wait, dataset)


@submit_app.command("evaluate")
def submit_evaluate(
    data: Path | None = typer.Option(None, "--data", help="Labelled studies; or --dataset."),
    dataset: str | None = typer.Option(None, "--dataset", help=DATASET_HELP),
    model: str = typer.Option("models:/bmseg-unet@champion", "--model", help="Checkpoint or registry URI."),
    split_file: Path | None = typer.Option(None, "--split", help="Only this split's test studies."),
    wait: bool = typer.Option(False, "--wait", help="Follow progress until the job ends."),
) -> None:
    """Queue an evaluation job (metrics of every convention)."""
    queue_job(
        "evaluate",
        {"data": _absolute(data), "model": model, "split": _absolute(split_file)},
        wait,
        dataset,
    )


@submit_app.command("segment")
def submit_segment(
    study: Path = typer.Argument(..., help="Study folder (or data folder) as the workers see it."),
    model: str = typer.Option("models:/bmseg-unet@champion", "--model", help="Checkpoint or registry URI."),
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Mirror test-time augmentation (default: the model's)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow progress until the job ends."),
) -> None:
    """Queue a segmentation job (mask + lesion table per study)."""
    params = {"study_dir": str(study.absolute()), "model": model}
    queue_job("segment", params | ({} if tta is None else {"tta": tta}), wait)


@submit_app.command("sweep")
def submit_sweep(
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
    dataset: str | None = typer.Option(None, "--dataset", help=DATASET_HELP),
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
        "data": _absolute(data),
        "grid": parse_grid(grid) if grid is not None else None,
        "random": parse_random(random_space) if random_space is not None else None,
        "budget": budget,
        "seed": seed,
        "split_seed": split_seed,
        "base": parse_assignments(base),
        "promote_best": promote_best,
    }
    queue_parent_job("sweep", params, wait, "ranking_md", dataset)


@submit_app.command("crossval")
def submit_crossval(
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
    dataset: str | None = typer.Option(None, "--dataset", help=DATASET_HELP),
    folds: int = typer.Option(5, "--folds", help="k patient folds (2 to 10)."),
    base: str = typer.Option("", "--base", help="Training parameters of every fold: 'epochs=2,size=64'."),
    seed: int = typer.Option(0, "--seed", help="Fold assignment seed."),
    wait: bool = typer.Option(False, "--wait", help="Follow progress, then print per-fold and mean ± std."),
) -> None:
    """Queue a k-fold cross-validation by patient: one train job per fold, out-of-fold metrics pooled."""
    params = {"data": _absolute(data), "folds": folds, "base": parse_assignments(base), "seed": seed}
    queue_parent_job("crossval", params, wait, "crossval_md", dataset)


def _absolute(path: Path | None) -> str | None:
    return str(path.absolute()) if path is not None else None
