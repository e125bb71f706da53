"""``bmseg import-dicom``: a DICOM MR study (a folder or a .zip) into a study folder bmseg reads.

``--list`` prints the series and how each was identified; otherwise the four series are placed (rules,
then ``--map``), converted to NIfTI on the T1 post-contrast grid and written to ``OUT/<study>/`` with
``dicom_source.json`` (UIDs only). The series it could not place are named. Every refusal is one line
and exit code 1, with nothing written.
"""

from __future__ import annotations

from pathlib import Path

import typer

from bmcore.dicom import DicomError, SeriesInfo, import_dicom, list_series, load_rules, parse_mapping

commands = typer.Typer()


def _table(rows: list[SeriesInfo]) -> list[str]:
    """The series as aligned text lines: number, files, modality, description, why."""
    width = max([len(r.description) for r in rows] + [len("description")])
    lines = [f"{'series':>6}  {'files':>5}  {'modality':<8}  {'description':<{width}}  how identified"]
    for r in rows:
        number = "-" if r.number is None else str(r.number)
        lines.append(f"{number:>6}  {r.files:>5}  {r.modality or '-':<8}  {r.description:<{width}}  {r.why}")
    return lines


def _import(
    source: Path, out: Path | None, study: str | None, map_items: list[str], rules: Path | None, listing: bool
):
    table = load_rules(rules)
    if listing:
        for line in _table(list_series(source, rules=table)):
            typer.echo(line)
        return
    if out is None:
        raise DicomError("-o/--out is needed to import (or pass --list to see the series)")
    result = import_dicom(source, out, study, parse_mapping(map_items), rules=table)
    typer.echo(f"imported study {result.study_name} into {result.folder}")
    for modality, info in result.series.items():
        resampled = ", resampled onto the T1ce grid" if modality in result.resampled else ""
        typer.echo(f"  {modality:<5} {info.label}, {info.files} slices: {info.why}{resampled}")
    if result.unplaced:
        typer.echo("not placed:")
        for info in result.unplaced:
            typer.echo(f"  {info.label}: {info.why}")


@commands.command("import-dicom")
def import_dicom_command(
    source: Path = typer.Argument(..., help="A folder of DICOM files (any names, nested) or a .zip of them."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Write the study into OUT/<study>/."),
    study: str | None = typer.Option(
        None,
        "--study",
        help="The study's name, a pseudonym (folder and file names); default dicom-<hash of the "
        "StudyInstanceUID>. Nothing is taken from the patient's name or id.",
    ),
    map_items: list[str] = typer.Option(
        [],
        "--map",
        help="SERIES_NUMBER=MODALITY (t1, t1ce, t2 or flair): place a series by hand, over the rules; "
        "repeat for several.",
    ),
    rules: Path | None = typer.Option(
        None,
        "--rules",
        help="A JSON or TOML rules file replacing the built-in identification table "
        "(default: BMSEG_DICOM_RULES_FILE, else built in; see bmcore.dicom.identify).",
    ),
    listing: bool = typer.Option(
        False, "--list", help="Print the series and how each was identified, and exit."
    ),
) -> None:
    """Import a DICOM MR study: T1, T1 post-contrast, T2 and FLAIR series into a study folder."""
    try:
        _import(source, out, study, map_items, rules, listing)
    except DicomError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
