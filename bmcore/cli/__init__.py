"""``bmseg``: the command line, thin over :mod:`bmcore`.

Every user error ends with one line on stderr (``error: …``) and a non-zero exit code, never a traceback
(set ``BMSEG_DEBUG=1`` to see one). Heavy modules (torch, mlflow) are imported inside the commands that
need them, so ``bmseg --help`` and ``bmseg check`` start fast.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(
    help="bmseg: find and outline brain metastases on MRI (T1, T1ce, T2, FLAIR).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

if TYPE_CHECKING:
    from bmcore.training.loop import TrainConfig
USER_ERRORS = (ValueError, LookupError, OSError, RuntimeError)


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
    from bmcore.imaging import MODALITIES

    if not text:
        return MODALITIES
    chosen = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in chosen if m not in MODALITIES]
    if unknown or not chosen:
        raise ValueError(
            f"--modalities: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(MODALITIES)}"
        )
    return chosen


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write the cohort into."),
    cases: int = typer.Option(20, "--cases", "-n", help="Number of studies (visits)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same cohort."),
    layout: str = typer.Option("brats", help="Folder layout: ucsf or brats."),
    shape: str | None = typer.Option(None, help="Grid X,Y,Z (default: the layout's, 240,240,155 for brats)."),
    spacing: str | None = typer.Option(None, help="Voxel size in mm X,Y,Z (default: the layout's)."),
    multiclass_fraction: float = typer.Option(
        0.5, help="ucsf only: fraction of studies that also get a 3-class _BraTS-seg label."
    ),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), help="Processes drawing studies in parallel."),
    force: bool = typer.Option(False, "--force", help="Write into a folder that is not empty."),
) -> None:
    """Write a synthetic cohort with known ground truth (and cohort.json with every lesion)."""
    from bmcore.data.synth import plan_cohort, synth_cohort

    shape_t = tuple(int(v) for v in shape.split(",")) if shape else None
    spacing_t = tuple(float(v) for v in spacing.split(",")) if spacing else None
    for name, value in (("--shape", shape_t), ("--spacing", spacing_t)):
        if value is not None and (len(value) != 3 or min(value) <= 0):
            raise ValueError(f"{name} needs three positive numbers X,Y,Z")
    plan_cohort(cases, seed, layout, shape_t, spacing_t)  # validates before any file is written
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"{out} is not empty: choose a new folder or pass --force to write into it")
    with progress_bar() as bar:
        task = bar.add_task("synthesising studies", total=cases)
        cohort = synth_cohort(
            out,
            cases,
            seed,
            layout,
            shape_t,
            spacing_t,
            multiclass_fraction,
            workers,
            on_study=lambda _: bar.advance(task),
        )
    lesions = sum(len(s["lesions"]) for s in cohort["studies"])
    typer.echo(f"wrote {cases} studies of {len(cohort['patients'])} patients ({lesions} lesions) to {out}")


@app.command()
def check(
    data: Path = typer.Argument(..., help="A data folder, one study folder, or a CSV manifest."),
    modalities: str | None = typer.Option(None, help="Comma-separated subset, e.g. t1ce,flair."),
    max_voxels: int | None = typer.Option(
        None, help="Refuse headers claiming more voxels (default: settings)."
    ),
) -> None:
    """Validate studies: one line per study (usable, or what is wrong); exit 0 only if all are usable."""
    from bmcore.imaging import StudyError, find_studies, load_study

    chosen = parse_modalities(modalities)
    studies = find_studies(data)
    bad = 0
    for ref in studies:
        try:
            volume = load_study(ref, modalities=chosen, max_voxels=max_voxels)
        except StudyError as exc:
            bad += 1
            typer.echo(f"FAIL {exc}")
            continue
        label = "no label" if volume.label is None else f"label {ref.label_kind}"
        spacing = "×".join(f"{s:g}" for s in volume.spacing)
        typer.echo(
            f"ok   {ref.study_id}: patient {ref.patient_id}, {ref.layout}, "
            f"{'×'.join(map(str, volume.native_shape))} at {spacing} mm, {label}"
        )
    typer.echo(f"{len(studies) - bad} of {len(studies)} studies usable")
    if bad:
        raise typer.Exit(1)


@app.command()
def split(
    data: Path = typer.Argument(..., help="Data folder or manifest."),
    seed: int = typer.Option(0, help="Split seed."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Write the split JSON here."),
) -> None:
    """Show (and optionally save) the 67/20/13 patient-level split that training draws with this seed
    (patients without lesions are split apart, so validation and test get lesion-bearing patients)."""
    from bmcore.data.split import lesion_free_patients, save_split, split_studies
    from bmcore.imaging import find_studies

    studies = find_studies(data)
    result = split_studies(studies, seed=seed, lesion_free=lesion_free_patients(studies))
    if out:
        save_split(result, out)
    typer.echo(json.dumps(result, indent=1))


def train_config_from_options(**options) -> TrainConfig:
    from bmcore.training.loop import TrainConfig

    options["modalities"] = parse_modalities(options.get("modalities"))
    return TrainConfig(**options)


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Data folder or CSV manifest."),
    arch: str = typer.Option("unet", help="unet, cnn or fcn."),
    epochs: int = typer.Option(50, help="Maximum epochs (early stopping may end sooner)."),
    batch_size: int = typer.Option(16, help="Slices per batch."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    loss: str = typer.Option("ce", help="ce (the study's) or dice_ce."),
    size: int = typer.Option(256, help="In-plane input size (multiple of 32)."),
    base_channels: int = typer.Option(32, help="Width of the first level."),
    depth: int = typer.Option(4, help="Pooling levels (unet, cnn)."),
    dropout: float = typer.Option(0.2, help="Dropout rate."),
    lesion_fraction: float = typer.Option(0.5, help="Share of sampled slices that show a lesion."),
    samples_per_epoch: int = typer.Option(0, help="Slices per epoch (0: one pass over the training slices)."),
    augment: bool = typer.Option(True, help="Flips, small rotations, intensity scale/shift, noise."),
    early_stopping_patience: int = typer.Option(
        10, help="Epochs without validation improvement before stopping."
    ),
    seed: int = typer.Option(0, help="Seed for the split, the weights and the sampling."),
    num_workers: int = typer.Option(2, help="DataLoader worker processes."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    modalities: str | None = typer.Option(None, help="Comma-separated subset of t1,t1ce,t2,flair."),
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
    from bmcore.experiments.tracked import tracked_train
    from bmcore.training import distributed

    config = train_config_from_options(
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        loss=loss,
        size=size,
        base_channels=base_channels,
        depth=depth,
        dropout=dropout,
        lesion_fraction=lesion_fraction,
        samples_per_epoch=samples_per_epoch,
        augment=augment,
        early_stopping_patience=early_stopping_patience,
        seed=seed,
        num_workers=num_workers,
        device=device,
        modalities=modalities,
    )
    rank = distributed.current()
    if rank.distributed and rank.world_size != gpus:
        raise ValueError(f"--gpus {gpus} does not match the {rank.world_size} processes torchrun started")
    if not rank.distributed:
        distributed.check_gpus(gpus, device)
    if gpus > 1 and not rank.distributed:
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
                from bmcore import tracking

                tracking.end_unfinished_runs(data, {LAUNCH_TAG: launch_id}, ended_as)
        if failure:
            raise RuntimeError(f"distributed training failed: {failure}")
        return
    tags = {}
    if rank.distributed and os.environ.get("BMSEG_LAUNCH_ID"):
        tags[LAUNCH_TAG] = os.environ["BMSEG_LAUNCH_ID"]
    summary = tracked_train(data, config, out, resume=resume, track=track, split_seed=seed, tags=tags)
    if summary is not None:  # rank 0 (or the only process) reports
        typer.echo(json.dumps(summary, indent=1, default=str))


LAUNCH_TAG = "bmseg.launch_id"  # the MLflow tag that ties a distributed run to its launcher


def find_training_studies(data: Path) -> None:
    """Fail before starting processes when ``data`` cannot be trained on (one line, as any error)."""
    from bmcore.imaging import find_studies

    labelled = [ref for ref in find_studies(data) if ref.label is not None]
    if len(labelled) < 2:
        raise ValueError(f"{data}: training needs at least 2 labelled studies, found {len(labelled)}")


@app.command()
def evaluate(
    model: str = typer.Option(..., "--model", help="Checkpoint path or models:/bmseg-unet@champion."),
    data: Path = typer.Option(..., "--data", help="Data folder, study folder or CSV manifest."),
    split_file: Path | None = typer.Option(None, "--split", help="Evaluate only this split's test studies."),
    tta: bool = typer.Option(False, help="Average with the left-right mirrored prediction."),
    batch_size: int = typer.Option(16, help="Slices per batch."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Write the full metrics JSON here."),
) -> None:
    """Score a model on labelled studies with every metric convention (table + JSON)."""
    from rich.table import Table

    from bmcore.data.split import load_split
    from bmcore.evaluation import evaluate_studies, headline_rows
    from bmcore.imaging import find_studies
    from bmcore.inference import load_predictor

    refs = find_studies(data)
    if split_file:
        test_ids = set(load_split(split_file)["studies"]["test"])
        refs = [r for r in refs if r.study_id in test_ids]
    predictor = load_predictor(model, device=device)
    with progress_bar() as bar:
        task = bar.add_task("evaluating studies", total=len(refs))
        result = evaluate_studies(
            predictor, refs, batch_size, tta, on_study=lambda i, n, s: bar.update(task, completed=i, total=n)
        )
    table = Table(title=f"{predictor.arch} on {result['summary']['n_studies']} studies")
    for column in ("figure", "value", "convention"):
        table.add_column(column)
    for row in headline_rows(result["summary"]):
        table.add_row(*row)
    Console().print(table)
    for skipped in result["skipped"]:
        typer.echo(f"skipped {skipped['study_id']}: {skipped['reason']}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        typer.echo(f"metrics written to {out}")


@app.command()
def segment(
    study: Path = typer.Argument(
        ..., help="A study folder (UCSF-BMSR or BraTS-METS layout) or a CSV manifest."
    ),
    model: str = typer.Option(
        "models:/bmseg-unet@champion", "--model", help="Checkpoint path or registry URI."
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder."),
    tta: bool = typer.Option(False, help="Average with the left-right mirrored prediction."),
    batch_size: int = typer.Option(16, help="Slices per batch."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
) -> None:
    """Segment studies: OUT/<study>_seg.nii.gz (input geometry) and OUT/<study>_lesions.csv."""
    from bmcore.imaging import StudyError, find_studies
    from bmcore.inference import load_predictor, segment_study

    refs = find_studies(study)
    predictor = load_predictor(model, device=device)
    failed = 0
    with progress_bar() as bar:
        for ref in refs:
            task = bar.add_task(f"segmenting {ref.study_id}", total=None)
            try:
                result = segment_study(
                    predictor,
                    ref,
                    out,
                    batch_size,
                    tta,
                    on_batch=lambda i, n, t=task: bar.update(t, completed=i, total=n),
                )
            except StudyError as exc:
                if len(refs) == 1:
                    raise
                failed += 1  # one bad study does not stop the others
                typer.echo(f"FAIL {exc}")
                continue
            typer.echo(
                f"{ref.study_id}: {len(result.lesions)} lesion(s) → {result.mask_path}, {result.lesions_path}"
            )
    if failed:
        typer.echo(f"{failed} of {len(refs)} studies could not be segmented", err=True)
        raise typer.Exit(1)


@app.command()
def compare(
    data: Path = typer.Option(..., "--data", help="Data folder or CSV manifest."),
    out: Path = typer.Option(Path("runs/compare"), "-o", "--out", help="Report, curves and checkpoints."),
    epochs: int = typer.Option(30, help="Epoch budget for every model."),
    batch_size: int = typer.Option(16, help="Slices per batch."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    loss: str = typer.Option("ce", help="ce or dice_ce."),
    size: int = typer.Option(256, help="In-plane input size."),
    base_channels: int = typer.Option(32, help="Width of the first level, same for all models."),
    depth: int = typer.Option(4, help="Pooling levels (unet, cnn)."),
    samples_per_epoch: int = typer.Option(0, help="Slices per epoch (0: one pass)."),
    early_stopping_patience: int = typer.Option(10, help="Epochs without improvement before stopping."),
    seed: int = typer.Option(0, help="Split and training seed."),
    num_workers: int = typer.Option(2, help="DataLoader worker processes."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
    archs: str = typer.Option("unet,cnn,fcn", help="Comma-separated architectures."),
) -> None:
    """Train and test U-Net, CNN and FCN on one patient split; the study's table beside the honest one."""
    from bmcore.experiments.compare import run_comparison

    config = train_config_from_options(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        loss=loss,
        size=size,
        base_channels=base_channels,
        depth=depth,
        samples_per_epoch=samples_per_epoch,
        early_stopping_patience=early_stopping_patience,
        seed=seed,
        num_workers=num_workers,
        device=device,
        modalities=None,
    )
    report = run_comparison(data, out, config, tuple(a.strip() for a in archs.split(",")), split_seed=seed)
    typer.echo((out / "report.md").read_text())
    typer.echo(f"report: {out / 'report.md'}, curves: {report['files'].get('curves')}")


submit_app = typer.Typer(help="Queue a job for the workers (train, evaluate, segment).", no_args_is_help=True)
app.add_typer(submit_app, name="submit")


def queue_job(job_type: str, params: dict, wait: bool) -> None:
    from bmcore.db import init_db, session_scope
    from bmcore.jobs.lifecycle import submit_job

    init_db()
    with session_scope() as session:
        job = submit_job(session, job_type, {k: v for k, v in params.items() if v is not None})
        job_id = job.id
    typer.echo(f"queued {job_type} job {job_id}")
    if wait:
        follow_job(job_id)


def follow_job(job_id: str, poll_seconds: float = 1.0) -> dict:
    """Show a job's progress until it ends; exit code 1 unless it succeeded."""
    import time

    from bmcore.db import session_scope
    from bmcore.jobs.lifecycle import get_job, job_to_dict

    with progress_bar() as bar:
        task = bar.add_task(f"job {job_id[:8]}", total=100)
        while True:
            with session_scope() as session:
                job = job_to_dict(get_job(session, job_id))
            bar.update(
                task,
                completed=round(100 * (job["progress"] or 0)),
                description=f"job {job_id[:8]} {job['status']}: {(job['message'] or '')[:50]}",
            )
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(poll_seconds)
    typer.echo(f"job {job_id} {job['status']}" + (f": {job['error']}" if job.get("error") else ""))
    if job["status"] != "succeeded":
        raise typer.Exit(1)
    return job


@submit_app.command("train")
def submit_train(
    data: Path = typer.Option(..., "--data", help="Data folder or CSV manifest (as the workers see it)."),
    arch: str = typer.Option("unet", help="unet, cnn or fcn."),
    epochs: int = typer.Option(50, help="Maximum epochs."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    loss: str = typer.Option("ce", help="ce or dice_ce."),
    batch_size: int = typer.Option(16, help="Slices per batch."),
    size: int = typer.Option(256, help="In-plane input size."),
    base_channels: int = typer.Option(32, help="Width of the first level."),
    depth: int = typer.Option(4, help="Pooling levels."),
    samples_per_epoch: int = typer.Option(0, help="Slices per epoch (0: one pass)."),
    seed: int = typer.Option(0, help="Split and training seed."),
    wait: bool = typer.Option(False, "--wait", help="Follow progress until the job ends."),
) -> None:
    """Queue a training job (tracked in MLflow, registered as bmseg-<arch>)."""
    queue_job(
        "train",
        {
            "data": str(data.absolute()),
            "arch": arch,
            "epochs": epochs,
            "lr": lr,
            "loss": loss,
            "batch_size": batch_size,
            "size": size,
            "base_channels": base_channels,
            "depth": depth,
            "samples_per_epoch": samples_per_epoch,
            "seed": seed,
        },
        wait,
    )


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


@app.command()
def jobs(
    status: str | None = typer.Option(None, help="Only jobs with this status."),
    job_type: str | None = typer.Option(None, "--type", help="Only jobs of this type."),
    limit: int = typer.Option(30, help="Newest N jobs."),
) -> None:
    """List jobs, newest first."""
    from rich.table import Table

    from bmcore.db import init_db, session_scope
    from bmcore.jobs.lifecycle import job_to_dict, list_jobs

    init_db()
    table = Table()
    for column in ("id", "type", "status", "progress", "message", "created"):
        table.add_column(column)
    with session_scope() as session:
        for job in map(job_to_dict, list_jobs(session, status=status, type=job_type, limit=limit)):
            table.add_row(
                job["id"],
                job["type"],
                job["status"],
                f"{100 * (job['progress'] or 0):.0f} %",
                (job["message"] or "")[:60],
                (job["created_at"] or "")[:19],
            )
    Console().print(table)


@app.command()
def job(
    job_id: str = typer.Argument(..., help="Job id."),
    wait: bool = typer.Option(False, "--wait", help="Follow progress until the job ends."),
) -> None:
    """Show one job as JSON (status, progress, result, log tail)."""
    from bmcore.db import Result, init_db, session_scope
    from bmcore.jobs.lifecycle import get_job, job_to_dict

    init_db()
    if wait:
        follow_job(job_id)
    with session_scope() as session:
        record = get_job(session, job_id)
        data = job_to_dict(record)
        result = session.query(Result).filter_by(job_id=job_id).one_or_none()
        data["result"] = {"metrics": result.metrics, "artifacts": result.artifacts} if result else None
    typer.echo(json.dumps(data, indent=1, default=str))


@app.command()
def cancel(job_id: str = typer.Argument(..., help="Job id.")) -> None:
    """Cancel a job: at once when queued, between steps when running."""
    from bmcore.db import init_db, session_scope
    from bmcore.jobs.lifecycle import cancel_job

    init_db()
    with session_scope() as session:
        record = cancel_job(session, job_id)
        typer.echo(
            f"job {job_id}: {record.status}" + (" (cancel requested)" if record.status == "running" else "")
        )


@app.command()
def worker(
    queues: str = typer.Option("gpu,cpu", help="Comma-separated queues to consume."),
    name: str | None = typer.Option(None, help="Worker node name (default bmseg-<pid>@<host>)."),
    loglevel: str = typer.Option("INFO", help="Celery log level."),
) -> None:
    """Start one worker process (solo pool: one process per GPU, safe with CUDA)."""
    import socket

    from bmcore.db import init_db

    init_db()
    node = name or f"bmseg-{os.getpid()}@{socket.gethostname()}"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "services.worker.app",
        "worker",
        "-P",
        "solo",
        "-c",
        "1",
        "-Q",
        queues,
        "-n",
        node,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    os.execv(sys.executable, argv)


@app.command()
def models() -> None:
    """The registry: bmseg-unet, bmseg-cnn, bmseg-fcn versions, aliases and key metrics."""
    from bmcore.tracking import configure, registry_overview

    configure()
    typer.echo(json.dumps(registry_overview(), indent=1, default=str))


@app.command()
def up(
    web_port: int = typer.Option(8000, help="Dashboard and API port."),
    mlflow_port: int = typer.Option(5000, help="MLflow UI port."),
    mlflow: bool = typer.Option(True, help="Start the MLflow UI."),
) -> None:
    """The whole local stack: Redis (when none answers), MLflow UI, web, one worker. Ctrl-C stops it."""
    from bmcore.local.stack import run_stack

    def ready(urls: dict) -> None:
        for name, url in urls.items():
            typer.echo(f"{name:>10}: {url}")
        typer.echo("bmseg is up; press Ctrl-C to stop everything it started")

    try:
        run_stack(web_port, mlflow_port, mlflow, on_ready=ready)
    except KeyboardInterrupt:
        typer.echo("stopped")


@app.command()
def demo(
    quick: bool = typer.Option(False, "--quick", help="A tiny cohort and model (a smoke test, ~2 minutes)."),
    serve: bool = typer.Option(True, help="Keep the stack running after the report (Ctrl-C stops it)."),
    web_port: int = typer.Option(8000, help="Dashboard port."),
    mlflow_port: int = typer.Option(5000, help="MLflow UI port."),
) -> None:
    """The main job: synthetic cohort → stack up → U-Net, CNN, FCN trained and evaluated through the queue."""
    from bmcore.local.demo import run_demo

    run_demo(quick=quick, serve=serve, web_port=web_port, mlflow_port=mlflow_port, echo=typer.echo)


user_app = typer.Typer(help="Dashboard accounts.", no_args_is_help=True)
token_app = typer.Typer(help="API bearer tokens (stored hashed; shown once).", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")


@user_app.command("create")
def user_create(
    email: str = typer.Argument(..., help="Sign-in e-mail."),
    admin: bool = typer.Option(False, "--admin", help="May see every user's studies and jobs."),
    password: str = typer.Option(
        ...,
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        envvar="BMSEG_NEW_PASSWORD",
        help="At least 8 characters.",
    ),
) -> None:
    """Create a dashboard account (password stored hashed)."""
    from bmcore.accounts import create_user
    from bmcore.db import init_db, session_scope

    init_db()
    with session_scope() as session:
        user = create_user(session, email, password, is_admin=admin)
        typer.echo(f"created {'admin ' if user.is_admin else ''}user {user.email}")


@token_app.command("create")
def token_create(
    email: str = typer.Argument(..., help="The user the token acts for."),
    name: str = typer.Option("cli", help="A name to tell tokens apart."),
) -> None:
    """Create an API token for a user; prints it once (only its hash is stored)."""
    from bmcore.accounts import create_token
    from bmcore.db import init_db, session_scope

    init_db()
    with session_scope() as session:
        typer.echo(create_token(session, email, name))


@token_app.command("revoke")
def token_revoke(
    email: str = typer.Argument(..., help="The token's user."),
    name: str = typer.Option(..., help="The token's name."),
) -> None:
    """Revoke a user's token by name."""
    from bmcore.accounts import revoke_token
    from bmcore.db import init_db, session_scope

    init_db()
    with session_scope() as session:
        typer.echo(f"revoked {revoke_token(session, email, name)} token(s)")


@app.command()
def cohort(
    data: Path = typer.Argument(..., help="A data folder or CSV manifest."),
    out: Path = typer.Option(Path("cohort-report"), "-o", "--out", help="Folder for cohort.json and PNGs."),
    seed: int = typer.Option(0, help="Split seed."),
    predictions: Path | None = typer.Option(
        None, help="Folder of predicted masks <study>_seg.nii.gz (from bmseg segment) for their class shares."
    ),
) -> None:
    """The cohort at a glance: patients, primary cancers, lesions, split, class shares (JSON + PNG plots)."""
    from bmcore.reports.cohort import format_table, write_cohort_report

    masks = None
    if predictions is not None:
        if not predictions.is_dir():
            raise ValueError(f"--predictions {predictions}: not a folder")
        masks = {p.name[: -len("_seg.nii.gz")]: p for p in sorted(predictions.glob("*_seg.nii.gz"))}
    summary = write_cohort_report(data, out, predictions=masks, seed=seed)
    typer.echo(format_table(summary))
    typer.echo(f"\nwrote {out / 'cohort.json'} and {len(summary['plots'])} plot(s) to {out}")


patients_app = typer.Typer(help="Patient metadata (primary cancer, clinical fields).", no_args_is_help=True)
app.add_typer(patients_app, name="patients")


@patients_app.command("import")
def patients_import(
    source: Path = typer.Argument(
        ..., help="A CSV of per-patient fields, or a synthetic cohort folder (its cohort.json)."
    ),
    create_missing: bool = typer.Option(
        False, "--create-missing", help="Create patients the database does not know."
    ),
    allow_extra: bool = typer.Option(False, "--allow-extra", help="Store unknown columns as they are."),
    column: list[str] = typer.Option(
        [],
        "--column",
        help="HEADER=FIELD: read a column as patient_id, primary_cancer, age, sex, … or extra.",
    ),
) -> None:
    """Import patient metadata, all or nothing (an error writes nothing); column names: bmcore.patients."""
    from bmcore.db import init_db, session_scope
    from bmcore.patients import import_cohort_json, import_metadata

    mapping = {}
    for item in column:
        header, sep, name = item.rpartition("=")
        if not sep or not header or not name:
            raise ValueError(f"--column {item!r}: expected HEADER=FIELD")
        mapping[header] = name.strip()
    init_db()
    with session_scope() as session:
        if source.is_dir() or source.suffix.lower() == ".json":
            report = import_cohort_json(session, source)
        else:
            report = import_metadata(
                session, source, mapping, create_missing=create_missing, allow_extra=allow_extra
            )
    typer.echo(report.summary())


def queue_parent_job(job_type: str, params: dict, wait: bool, table_artifact: str) -> None:
    """Queue a sweep or cross-validation job; with ``wait``, follow it and print its table."""
    from bmcore.db import Result, init_db, session_scope
    from bmcore.jobs.lifecycle import submit_job

    init_db()
    with session_scope() as session:
        job_id = submit_job(session, job_type, {k: v for k, v in params.items() if v is not None}).id
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
    from bmcore.jobs.parents import parse_assignments, parse_grid, parse_random

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
    from bmcore.jobs.parents import parse_assignments

    params = {"data": str(data.absolute()), "folds": folds, "base": parse_assignments(base), "seed": seed}
    queue_parent_job("crossval", params, wait, "crossval_md")


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


if __name__ == "__main__":
    main()
