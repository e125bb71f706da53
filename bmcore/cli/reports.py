"""``bmseg cohort``: the cohort report (patients, primary cancers, lesions, split, class shares)."""

from __future__ import annotations

from pathlib import Path

import typer

from bmcore.reports.cohort import format_table, write_cohort_report

commands = typer.Typer()


@commands.command()
def cohort(
    data: Path = typer.Argument(..., help="A data folder or CSV manifest."),
    out: Path = typer.Option(Path("cohort-report"), "-o", "--out", help="Folder for cohort.json and PNGs."),
    seed: int = typer.Option(0, help="Split seed."),
    predictions: Path | None = typer.Option(
        None, help="Folder of predicted masks <study>_seg.nii.gz (from bmseg segment) for their class shares."
    ),
) -> None:
    """The cohort at a glance: patients, primary cancers, lesions, split, class shares (JSON + PNG plots)."""
    masks = None
    if predictions is not None:
        if not predictions.is_dir():
            raise ValueError(f"--predictions {predictions}: not a folder")
        masks = {p.name[: -len("_seg.nii.gz")]: p for p in sorted(predictions.glob("*_seg.nii.gz"))}
    summary = write_cohort_report(data, out, predictions=masks, seed=seed)
    typer.echo(format_table(summary))
    typer.echo(f"\nwrote {out / 'cohort.json'} and {len(summary['plots'])} plot(s) to {out}")
