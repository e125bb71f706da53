"""``bmseg patients import``: per-patient metadata (primary cancer, clinical fields) into the database,
into one group (``--group``, by default ``default``): its members see the patients."""

from __future__ import annotations

from pathlib import Path

import typer

from bmcore.db import init_db, session_scope
from bmcore.db.groups import DEFAULT_GROUP
from bmcore.patients import import_cohort_json, import_metadata

patients_app = typer.Typer(help="Patient metadata (primary cancer, clinical fields).", no_args_is_help=True)
commands = typer.Typer()
commands.add_typer(patients_app, name="patients")


def parse_columns(column: list[str]) -> dict[str, str]:
    """``--column HEADER=FIELD`` options as a header → field mapping."""
    mapping = {}
    for item in column:
        header, sep, name = item.rpartition("=")
        if not sep or not header or not name:
            raise ValueError(f"--column {item!r}: expected HEADER=FIELD")
        mapping[header] = name.strip()
    return mapping


@patients_app.command("import")
def patients_import(
    source: Path = typer.Argument(
        ..., help="A CSV of per-patient fields, or a synthetic cohort folder (its cohort.json)."
    ),
    create_missing: bool = typer.Option(
        False, "--create-missing", help="Create patients the database does not know."
    ),
    allow_extra: bool = typer.Option(False, "--allow-extra", help="Store unknown columns as they are."),
    group: str = typer.Option(
        DEFAULT_GROUP,
        "--group",
        help="The group whose patients these are: looked up and created there (it must exist, "
        "except 'default'); its members see them.",
    ),
    column: list[str] = typer.Option(
        [],
        "--column",
        help="HEADER=FIELD: read a column as patient_id, primary_cancer, age, sex, … or extra.",
    ),
) -> None:
    """Import patient metadata into one group, all or nothing (an error writes nothing); column names:
    bmcore.patients."""
    mapping = parse_columns(column)
    init_db()
    with session_scope() as session:
        if source.is_dir() or source.suffix.lower() == ".json":
            report = import_cohort_json(session, source, group=group)
        else:
            report = import_metadata(
                session, source, mapping, create_missing=create_missing, allow_extra=allow_extra, group=group
            )
    typer.echo(report.summary())
