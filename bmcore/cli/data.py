"""``bmseg synth``, ``check`` and ``split``: write, validate and split cohorts (no model involved)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from bmcore.cli.console import parse_modalities, progress_bar
from bmcore.data.split import lesion_free_patients, save_split, split_studies
from bmcore.data.synth import plan_cohort, synth_cohort
from bmcore.imaging import StudyError, find_studies, load_study

commands = typer.Typer()


@commands.command()
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


@commands.command()
def check(
    data: Path = typer.Argument(..., help="A data folder, one study folder, or a CSV manifest."),
    modalities: str | None = typer.Option(None, help="Comma-separated subset, e.g. t1ce,flair."),
    max_voxels: int | None = typer.Option(
        None, help="Refuse headers claiming more voxels (default: settings)."
    ),
) -> None:
    """Validate studies: one line per study (usable, or what is wrong); exit 0 only if all are usable."""
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


@commands.command()
def split(
    data: Path = typer.Argument(..., help="Data folder or manifest."),
    seed: int = typer.Option(0, help="Split seed."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Write the split JSON here."),
) -> None:
    """Show (and optionally save) the 67/20/13 patient-level split that training draws with this seed
    (patients without lesions are split apart, so validation and test get lesion-bearing patients)."""
    studies = find_studies(data)
    result = split_studies(studies, seed=seed, lesion_free=lesion_free_patients(studies))
    if out:
        save_split(result, out)
    typer.echo(json.dumps(result, indent=1))
