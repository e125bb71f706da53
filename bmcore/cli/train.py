"""``bmseg train``: one architecture, here or data-parallel over several processes through torchrun."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import typer

from bmcore import tracking
from bmcore.cli.options import TRAIN_OPTIONS, train_config, with_train_options
from bmcore.experiments.request import Tracking, TrainRequest
from bmcore.imaging import find_studies

commands = typer.Typer()
LAUNCH_TAG = "bmseg.launch_id"  # the MLflow tag that ties a distributed run to its launcher


@commands.command()
@with_train_options()
def train(
    data: Path = typer.Option(..., "--data", help="Data folder or CSV manifest."),
    train_options: dict = TRAIN_OPTIONS,
    out: Path = typer.Option(
        Path("runs/train"), "-o", "--out", help="Checkpoints, split and curves go here."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt."),
    track: bool = typer.Option(True, help="Log an MLflow run and register the model."),
    gpus: int = typer.Option(
        1,
        "--gpus",
        help="Data-parallel processes (DDP through torchrun), one per GPU of this node; --batch-size is "
        "per process. With --device cpu: N CPU processes over gloo.",
    ),
) -> None:
    """Train one architecture: checkpoints (last.pt, best.pt), split.json, an MLflow run and model version."""
    from bmcore.experiments.tracked import tracked_train  # lazy: torch, kept out of --help
    from bmcore.training import distributed  # lazy: torch, kept out of --help

    config = train_config(train_options)
    rank = distributed.current()
    if rank.distributed and rank.world_size != gpus:
        raise ValueError(f"--gpus {gpus} does not match the {rank.world_size} processes torchrun started")
    if not rank.distributed:
        distributed.check_gpus(gpus, config.device)
    if gpus > 1 and not rank.distributed:
        launch_training_processes(data, gpus, track)
        return
    tags = {}
    if rank.distributed and os.environ.get("BMSEG_LAUNCH_ID"):
        tags[LAUNCH_TAG] = os.environ["BMSEG_LAUNCH_ID"]
    request = TrainRequest(
        data, config, out, resume=resume, split_seed=config.seed, tracking=Tracking(enabled=track, tags=tags)
    )
    summary = tracked_train(request)
    if summary is not None:  # rank 0 (or the only process) reports
        typer.echo(json.dumps(summary, indent=1, default=str))


def launch_training_processes(data: Path, gpus: int, track: bool) -> None:
    """Run this command again in ``gpus`` processes through torchrun and wait for them."""
    from bmcore.training import distributed  # lazy: torch, kept out of --help

    find_training_studies(data)
    launch_id = os.environ.setdefault("BMSEG_LAUNCH_ID", uuid.uuid4().hex)  # tags the MLflow run
    ended_as = "FAILED"
    try:
        failure = distributed.launch(gpus, sys.argv[1:])
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: torchrun has stopped the processes
        ended_as = "KILLED"
        print(f"interrupted: the {gpus} training processes were stopped", file=sys.stderr)
        raise typer.Exit(130) from None
    finally:
        # The processes are gone by now (torchrun waits for them): a rank 0 that was stopped by a
        # signal could not end its MLflow run, so the launcher does, as the only writer left.
        if track:
            tracking.end_unfinished_runs(data, {LAUNCH_TAG: launch_id}, ended_as)
    if failure:
        raise RuntimeError(f"distributed training failed: {failure}")


def find_training_studies(data: Path) -> None:
    """Fail before starting processes when ``data`` cannot be trained on (one line, as any error)."""
    labelled = [ref for ref in find_studies(data) if ref.label is not None]
    if len(labelled) < 2:
        raise ValueError(f"{data}: training needs at least 2 labelled studies, found {len(labelled)}")
