"""Importing patient metadata onto ``Patient`` rows: a CSV of clinical fields, or a synthetic cohort's
``cohort.json``. All or nothing: every row is checked before anything is written, and an error while
writing rolls the session back.

An import writes into one group (``group``, by default ``default``): patients are looked up by pseudonym
within that group and created there, so an import never touches another group's patient of the same
pseudonym. The group must exist (``bmseg group create``), except ``default``, made on first use.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from bmcore.db import Group, Patient
from bmcore.db.groups import DEFAULT_GROUP, check_group_name, find_group, group_named
from bmcore.patients.fields import (
    ID_FIELD,
    MAX_PSEUDONYM,
    MAX_TEXT,
    ORIGINAL_PRIMARY_KEY,
    PRIMARY_FIELD,
    UCSF_VISIT_ID,
    MetadataError,
    clinical_value,
    map_columns,
    normalize_primary,
)
from bmcore.patients.records import merge_clinical


@dataclass
class ImportReport:
    """What an import did (or, for an error, would have done: nothing)."""

    source: str
    rows: int = 0
    updated: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # header -> field (or "extra")
    primary_cancer: dict[str, int] = field(default_factory=dict)

    def count_primary(self, primary: str | None) -> None:
        """Count one patient under its primary cancer (``unchanged`` when the row gave none)."""
        key = primary or "unchanged"
        self.primary_cancer[key] = self.primary_cancer.get(key, 0) + 1

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.primary_cancer.items()) or "none"
        return (
            f"{self.rows} row(s) from {self.source}: {len(self.updated)} patient(s) updated, "
            f"{len(self.created)} created; primary cancer: {counts}"
        )


def _match_patient(text: str, patients: Mapping[str, Patient]) -> Patient | None:
    """The patient a CSV id means: exact, a UCSF visit id's patient, or a zero-padded number."""
    if text in patients:
        return patients[text]
    visit = UCSF_VISIT_ID.match(text)
    if visit and visit.group(1) in patients:
        return patients[visit.group(1)]
    if text.isdigit():
        same = [p for name, p in patients.items() if name.isdigit() and int(name) == int(text)]
        if len(same) == 1:
            return same[0]
    return None


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the non-empty rows (each with its line number under ``__line__``)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MetadataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    header_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=header_line.count)  # spreadsheets export ; or tabs too
    reader = csv.DictReader(StringIO(text, newline=""), delimiter=delimiter)
    headers = list(reader.fieldnames or [])
    if not headers:
        raise MetadataError(f"{path.name}: empty file (no header row)")
    rows = []
    for row in reader:
        if None in row:
            raise MetadataError(f"{path.name}:{reader.line_num}: more cells than the header has columns")
        if any((v or "").strip() for v in row.values()):
            rows.append({"__line__": str(reader.line_num), **{k: (v or "").strip() for k, v in row.items()}})
    return headers, rows


def import_group(session: Session, name: str) -> Group:
    """The group an import writes into: an existing one, or ``default`` (made on first use; not
    committed); :class:`MetadataError` for a malformed name or a group that does not exist."""
    try:
        name = check_group_name(name)
    except ValueError as exc:
        raise MetadataError(str(exc)) from None
    if name == DEFAULT_GROUP:
        return group_named(session, name)
    group = find_group(session, name)
    if group is None:
        raise MetadataError(f"no group {name} (create it first: bmseg group create {name})")
    return group


def _group_patients(session: Session, group: Group) -> dict[str, Patient]:
    return {p.pseudonym: p for p in session.scalars(select(Patient).where(Patient.group_id == group.id))}


class _PlannedRow(NamedTuple):
    text: str  # the id as written in the file
    patient: Patient | None  # None: not in the database yet
    primary: str | None
    clinical: dict[str, Any]


def import_metadata(
    session: Session,
    csv_path: str | Path,
    column_map: Mapping[str, str] | None = None,
    *,
    create_missing: bool = False,
    allow_extra: bool = False,
    group: str = DEFAULT_GROUP,
) -> ImportReport:
    """Read a CSV of per-patient clinical fields onto the ``Patient`` rows of ``group`` and commit; all or
    nothing.

    Raises :class:`MetadataError` (nothing written) for unknown columns, missing patients (listed), an
    empty or duplicated id, bad numbers and an unknown group. Clinical fields are merged into
    ``Patient.clinical``.
    """
    path = Path(csv_path)
    source = path.name
    headers, rows = _read_rows(path)
    mapping = map_columns(headers, column_map, allow_extra, source)
    target = import_group(session, group)
    try:
        planned = _plan_rows(rows, mapping, _group_patients(session, target), source)
        missing = [row.text for row in planned if row.patient is None]
        if missing and not create_missing:
            shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
            raise MetadataError(
                f"{source}: {len(missing)} patient(s) not in group {target.name}: {shown} "
                "(import their studies first, or pass --create-missing)"
            )
    except MetadataError:
        session.rollback()  # nor the default group, when this import made it
        raise
    report = ImportReport(source=str(path), rows=len(rows), columns=dict(mapping))
    try:
        for row in planned:
            _write_row(session, row, report, target)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return report


def _plan_rows(
    rows: list[dict[str, str]], mapping: dict[str, str], patients: Mapping[str, Patient], source: str
) -> list[_PlannedRow]:
    """Every row checked and matched to its patient; :class:`MetadataError` for the first bad one."""
    id_column = next(h for h, f in mapping.items() if f == ID_FIELD)
    planned: list[_PlannedRow] = []
    seen: dict[str, int] = {}
    for row in rows:
        line = int(row["__line__"])
        text = row[id_column]
        if not text:
            raise MetadataError(f"{source}:{line}: empty patient id")
        if len(text) > MAX_PSEUDONYM:
            raise MetadataError(f"{source}:{line}: patient id longer than {MAX_PSEUDONYM} characters")
        patient = _match_patient(text, patients)
        key = patient.pseudonym if patient is not None else text
        if key in seen:
            raise MetadataError(f"{source}:{line}: patient {key} appears again (first on line {seen[key]})")
        seen[key] = line
        primary, clinical = _row_fields(row, mapping, line, source)
        planned.append(_PlannedRow(text, patient, primary, clinical))
    return planned


def _row_fields(
    row: dict[str, str], mapping: dict[str, str], line: int, source: str
) -> tuple[str | None, dict[str, Any]]:
    """A row's primary cancer (normalised) and clinical fields (the original primary text among them)."""
    primary_text: str | None = None
    clinical: dict[str, Any] = {}
    for header, name in mapping.items():
        value = row[header]
        if not value or name == ID_FIELD:
            continue
        if name == PRIMARY_FIELD:
            primary_text = value
        elif name == "extra":
            clinical[header.strip()] = value[:MAX_TEXT]
        else:
            clinical[name] = clinical_value(name, value, line, source)
    primary = normalize_primary(primary_text)
    if primary is not None and primary_text and primary_text.strip().lower() != primary:
        clinical[ORIGINAL_PRIMARY_KEY] = primary_text[:MAX_TEXT]
    return primary, clinical


def _write_row(session: Session, row: _PlannedRow, report: ImportReport, group: Group) -> None:
    """One planned row onto its patient (created in ``group`` when missing), counted in ``report``."""
    patient, clinical = row.patient, row.clinical
    if patient is None:
        patient = Patient(pseudonym=row.text, clinical={}, group=group)
        session.add(patient)
        report.created.append(row.text)
    else:
        report.updated.append(patient.pseudonym)
    if row.primary is not None:
        patient.primary_cancer = row.primary
        if ORIGINAL_PRIMARY_KEY not in clinical:
            clinical[ORIGINAL_PRIMARY_KEY] = None  # a clean value replaces an older original text
    merge_clinical(patient, clinical)
    report.count_primary(row.primary)


def import_cohort_json(session: Session, data_dir: str | Path, group: str = DEFAULT_GROUP) -> ImportReport:
    """Patients of a synthetic cohort (``DATA_DIR/cohort.json``) with their primary cancers, in ``group``;
    commits.

    Creates the missing ``Patient`` rows of ``group`` and sets every listed patient's primary cancer (the
    generator's draw, in the reference study's proportions).
    """
    path = Path(data_dir)
    if path.is_dir():
        path = path / "cohort.json"
    try:
        cohort = json.loads(path.read_text())
        listed = cohort["patients"]
        if not isinstance(listed, dict):
            raise TypeError("patients is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MetadataError(f"{path}: not a synthetic cohort's cohort.json ({exc})") from None
    target = import_group(session, group)
    existing = _group_patients(session, target)
    report = ImportReport(source=str(path), rows=len(listed), columns={"patients": "cohort.json"})
    try:
        for pseudonym, record in listed.items():
            primary = normalize_primary((record or {}).get("primary_cancer"))
            patient = existing.get(str(pseudonym))
            if patient is None:
                patient = Patient(pseudonym=str(pseudonym), clinical={}, group=target)
                session.add(patient)
                report.created.append(str(pseudonym))
            else:
                report.updated.append(str(pseudonym))
            if primary is not None:
                patient.primary_cancer = primary
            report.count_primary(primary)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return report
