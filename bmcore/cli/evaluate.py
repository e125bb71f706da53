"""``bmseg evaluate``, ``segment`` and ``compare``: score or apply a trained model; compare three."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from bmcore.cli.console import progress_bar
from bmcore.cli.options import SHORT_HELP, TRAIN_OPTIONS, train_config, with_train_options
from bmcore.data.split import load_split
from bmcore.evaluation.headline import headline_caption, headline_rows
from bmcore.imaging import StudyError, find_studies
from bmcore.tracking.registry import model_warnings

commands = typer.Typer()


@commands.command()
def evaluate(
    model: str = typer.Option(..., "--model", help="Checkpoint path or models:/bmseg-unet@champion."),
    data: Path = typer.Option(..., "--data", help="Data folder, study folder or CSV manifest."),
    split_file: Path | None = typer.Option(None, "--split", help="Evaluate only this split's test studies."),
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Average with the left-right mirrored prediction (default: the model's)."
    ),
    batch_size: int = typer.Option(16, help="Slices per batch."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Write the full metrics JSON here."),
) -> None:
    """Score a model on labelled studies with every metric convention (table + JSON)."""
    from bmcore.evaluation.evaluate import evaluate_studies  # lazy: torch, kept out of --help
    from bmcore.inference import load_predictor  # lazy: torch, kept out of --help

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
    summary = result["summary"]
    title = f"{predictor.arch} on {summary['n_studies']} studies"
    table = Table(title=title, caption=headline_caption(summary))
    for column in ("figure", "value", "convention"):
        table.add_column(column)
    for row in headline_rows(summary):
        table.add_row(*row)
    Console().print(table)
    for skipped in result["skipped"]:
        typer.echo(f"skipped {skipped['study_id']}: {skipped['reason']}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        typer.echo(f"metrics written to {out}")


DICOM_HELP = (
    "Also write OUT/<study>_rtstruct.dcm, OUT/<study>_seg.dcm (DICOM-SEG) and, for a study not imported "
    "from DICOM, the T1 post-contrast MR series they reference, OUT/<study>_t1ce_dicom/."
)


@commands.command()
def segment(
    study: Path = typer.Argument(
        ..., help="A study folder (UCSF-BMSR or BraTS-METS layout) or a CSV manifest."
    ),
    model: str = typer.Option(
        "models:/bmseg-unet@champion", "--model", help="Checkpoint path or registry URI."
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder."),
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Average with the left-right mirrored prediction (default: the model's)."
    ),
    batch_size: int = typer.Option(16, help="Slices per batch."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
    dicom: bool = typer.Option(False, "--dicom", help=DICOM_HELP),
) -> None:
    """Segment studies: OUT/<study>_seg.nii.gz (input geometry) and OUT/<study>_lesions.csv."""
    from bmcore.inference import load_predictor, segment_study  # lazy: torch, kept out of --help

    errors: tuple[type[Exception], ...] = (StudyError,)
    if dicom:
        from bmcore.dicom import DicomError, write_dicom_outputs  # lazy: highdicom, only with --dicom

        errors = (StudyError, DicomError)
    refs = find_studies(study)
    predictor = load_predictor(model, device=device)
    for warning in model_warnings(model):
        typer.secho(f"warning: {model}: {warning}", fg="yellow", err=True)
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
                written = {}
                if dicom:  # the series the outputs reference: next to the T1 post-contrast file
                    t1ce = ref.images["t1ce"]
                    written = write_dicom_outputs(
                        t1ce.parent, result.mask_path, result.lesions, out, ref.study_id, ref.patient_id, t1ce
                    )
            except errors as exc:
                if len(refs) == 1:
                    raise
                failed += 1  # one bad study does not stop the others
                typer.echo(f"FAIL {exc}")
                continue
            typer.echo(
                f"{ref.study_id}: {len(result.lesions)} lesion(s) → {result.mask_path}, {result.lesions_path}"
            )
            for kind, path in written.items():
                typer.echo(f"{ref.study_id}: {kind} → {path}")
    if failed:
        typer.echo(f"{failed} of {len(refs)} studies could not be segmented", err=True)
        raise typer.Exit(1)


# compare trains every arch, and these fields at their defaults
COMPARE_WITHOUT = ("arch", "dropout", "lesion_fraction", "augment", "modalities")
COMPARE_HELP = SHORT_HELP | {
    "epochs": "Epoch budget for every model.",
    "base_channels": "Width of the first level, same for all models.",
    "early_stopping_patience": "Epochs without improvement before stopping.",
    "device": "auto, cpu, cuda.",
}


@commands.command()
@with_train_options(without=COMPARE_WITHOUT, defaults={"epochs": 30}, helps=COMPARE_HELP)
def compare(
    data: Path = typer.Option(..., "--data", help="Data folder or CSV manifest."),
    out: Path = typer.Option(Path("runs/compare"), "-o", "--out", help="Report, curves and checkpoints."),
    train_options: dict = TRAIN_OPTIONS,
    archs: str = typer.Option("unet,cnn,fcn", help="Comma-separated architectures."),
    folds: int = typer.Option(
        0,
        "--folds",
        min=0,
        max=10,
        help="K >= 2: K-fold cross-validation by patient, as the queued crossval job (mean ± std, "
        "out-of-fold lesion-wise metrics); 0: one 67/20/13 split.",
    ),
) -> None:
    """Train and test U-Net, CNN and FCN on one patient split, or K folds; the study's table beside the
    honest one, every figure with its 95 % interval over patients."""
    from bmcore.experiments.compare import run_comparison  # lazy: torch, kept out of --help

    config = train_config(train_options)
    arch_names = tuple(a.strip() for a in archs.split(","))
    if folds == 1:
        raise typer.BadParameter(
            "cross-validation needs at least 2 folds (0: one split)", param_hint="--folds"
        )
    if folds:
        from bmcore.jobs.parents.compare_folds import run_fold_comparison  # lazy: torch, as above

        run_fold_comparison(data, out, config, arch_names, folds, seed=config.seed, echo=typer.echo)
        typer.echo((out / "report.md").read_text())
        typer.echo(f"report: {out / 'report.md'}")
        return
    report = run_comparison(data, out, config, arch_names, split_seed=config.seed)
    typer.echo((out / "report.md").read_text())
    typer.echo(f"report: {out / 'report.md'}, curves: {report['files'].get('curves')}")
