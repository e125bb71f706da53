"""Patient metadata: primary cancer and other clinical fields, read from a CSV onto ``Patient`` rows.

Torch-free (the web imports it).

Columns are recognised by name. A header is normalised first (lower case; spaces, dots, slashes and
hyphens become ``_``; brackets dropped), then looked up in :data:`ID_ALIASES`, :data:`PRIMARY_ALIASES`
and :data:`CLINICAL_ALIASES`:

* the **patient id** column (required): ``patient_id``, ``subject_id``, ``id``, ``bmr_id``, ``pseudonym``…
* the **primary cancer** column (optional): ``primary``, ``primary_cancer``, ``primary_tumor``,
  ``Primary Diagnosis``, ``cancer_type``…
* known **clinical** columns, stored in ``Patient.clinical`` under their canonical name: ``age``, ``sex``,
  ``race``, ``ethnicity``, ``kps``, ``histology``, ``molecular``, ``extracranial_disease``,
  ``prior_treatment``, ``smoking``.

Any other column is an error naming it and the accepted names, unless ``allow_extra`` stores it as-is
(under its header, as text). ``column_map`` names columns explicitly (``{"Dx": "primary_cancer"}``).

UCSF-BMSR ships a subject-information table with its images. We have not seen it (the data set is
access-controlled); the alias set covers the shapes such tables usually have (``bmr_id`` / ``ID``,
``Primary Diagnosis`` / ``primary``, ``Age``, ``Sex``). When its columns differ, ``column_map`` (CLI:
``--column HEADER=FIELD``) or ``allow_extra`` reads it without a code change.

Primary cancer values are normalised onto :data:`PRIMARY_CANCER_TYPES` by keyword (case-insensitive):
``melanoma`` → melanoma; ``breast`` → breast; ``lung``, ``NSCLC``, ``SCLC``, ``pulmonary``, ``bronch…`` →
lung; ``renal``, ``kidney``, ``RCC`` → renal; everything else (GI, colorectal, gynaecological, prostate,
thyroid, sarcoma, unknown primary, …) → other, as the reference study groups them. When the cell's text
is not already one of the five names, the original text is kept in ``clinical["primary_cancer_text"]``.
An empty cell leaves the patient's primary cancer as it was.

Ids are matched exactly; failing that, a UCSF-BMSR visit id (``100101A``) matches its patient
(``100101``) and a number matches a zero-padded pseudonym (``1`` → ``00001``, as spreadsheets strip
leading zeros). A row for an unknown patient is an error listing the ids, unless ``create_missing``.

The import is all-or-nothing: every row is checked before anything is written, and an error while
writing rolls the session back.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bmcore.db import Patient

PRIMARY_CANCER_TYPES: tuple[str, ...] = ("lung", "breast", "melanoma", "renal", "other")
ID_FIELD = "patient_id"
PRIMARY_FIELD = "primary_cancer"
ORIGINAL_PRIMARY_KEY = "primary_cancer_text"
MAX_PSEUDONYM = 64
MAX_TEXT = 200

ID_ALIASES: tuple[str, ...] = (
    "patient_id",
    "patientid",
    "patient",
    "patient_pseudonym",
    "pseudonym",
    "subject_id",
    "subjectid",
    "subject",
    "id",
    "bmr_id",
    "bmrid",
    "ucsf_bmsr_id",
    "case_id",
    "case",
)
PRIMARY_ALIASES: tuple[str, ...] = (
    "primary",
    "primary_cancer",
    "primary_cancer_type",
    "primary_tumor",
    "primary_tumour",
    "primary_tumor_type",
    "primary_tumour_type",
    "primary_diagnosis",
    "primary_site",
    "primary_type",
    "primary_histology",
    "cancer",
    "cancer_type",
    "tumor_type",
    "tumour_type",
    "diagnosis",
)
CLINICAL_ALIASES: dict[str, tuple[str, ...]] = {
    "age": ("age", "age_years", "age_yr", "age_at_diagnosis", "age_at_imaging", "age_at_scan", "age_at_srs"),
    "sex": ("sex", "gender", "patient_sex"),
    "race": ("race",),
    "ethnicity": ("ethnicity",),
    "kps": ("kps", "karnofsky", "karnofsky_performance_status", "performance_status"),
    "histology": ("histology", "histologic_subtype", "subtype", "pathology"),
    "molecular": ("molecular", "molecular_markers", "mutation", "mutations", "biomarkers", "receptor_status"),
    "extracranial_disease": ("extracranial_disease", "extracranial_metastases", "ecd"),
    "prior_treatment": ("prior_treatment", "prior_therapy", "prior_radiation", "treatment"),
    "smoking": ("smoking", "smoking_status", "smoker"),
}
KNOWN_FIELDS: tuple[str, ...] = (ID_FIELD, PRIMARY_FIELD, *CLINICAL_ALIASES)

PRIMARY_KEYWORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("melanoma", re.compile(r"melanom")),
    ("breast", re.compile(r"breast|mamma")),
    ("lung", re.compile(r"lung|\bn?sclc\b|pulmonar|bronch")),
    ("renal", re.compile(r"renal|kidney|\brcc\b")),
)
SEX_VALUES = {"f": "F", "female": "F", "w": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}
UCSF_VISIT_ID = re.compile(r"^(\d{6})[A-Za-z]+$")


class MetadataError(ValueError):
    """A metadata file that cannot be imported; the message is one line saying what and where."""


@dataclass
class ImportReport:
    """What an import did (or, for an error, would have done: nothing)."""

    source: str
    rows: int = 0
    updated: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # header -> field (or "extra")
    primary_cancer: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.primary_cancer.items()) or "none"
        return (
            f"{self.rows} row(s) from {self.source}: {len(self.updated)} patient(s) updated, "
            f"{len(self.created)} created; primary cancer: {counts}"
        )


# ------------------------------------------------------------------------------------------ values


def normalize_header(header: str) -> str:
    """``"Primary Diagnosis"`` → ``"primary_diagnosis"``; ``"Age (years)"`` → ``"age_years"``."""
    text = header.strip().lstrip("\ufeff").lower()
    text = re.sub(r"[()\[\]{}#:]", " ", text)
    text = re.sub(r"[\s./\\-]+", "_", text)
    return re.sub(r"_+", "_", text).strip("_")


def normalize_primary(value: str | None) -> str | None:
    """A primary cancer text → one of :data:`PRIMARY_CANCER_TYPES` (None for an empty cell)."""
    text = (value or "").strip().lower()
    if not text or text in ("nan", "na", "n/a", "none", "null"):
        return None
    for name, pattern in PRIMARY_KEYWORDS:
        if pattern.search(text):
            return name
    return "other"


def _clinical_value(name: str, text: str, line: int, source: str) -> Any:
    """A clinical cell as stored: numbers for age and KPS, F/M for sex, else the stripped text."""
    if name in ("age", "kps"):
        try:
            number = float(text.replace(",", "."))
        except ValueError:
            raise MetadataError(f"{source}:{line}: {name} {text!r} is not a number") from None
        if not 0 <= number <= (150 if name == "age" else 100):
            raise MetadataError(f"{source}:{line}: {name} {text!r} is out of range")
        return int(number) if number.is_integer() else round(number, 2)
    if name == "sex":
        return SEX_VALUES.get(text.lower(), text[:MAX_TEXT])
    return text[:MAX_TEXT]


# ------------------------------------------------------------------------------------------ columns


def _alias_table() -> dict[str, str]:
    table = {alias: ID_FIELD for alias in ID_ALIASES}
    table.update({alias: PRIMARY_FIELD for alias in PRIMARY_ALIASES})
    for name, aliases in CLINICAL_ALIASES.items():
        table.update({alias: name for alias in aliases})
    return table


def accepted_columns() -> str:
    """The accepted column names, one group per field, for error messages and ``--help``."""
    groups = [f"id: {', '.join(ID_ALIASES)}", f"primary cancer: {', '.join(PRIMARY_ALIASES)}"]
    groups += [f"{name}: {', '.join(aliases)}" for name, aliases in CLINICAL_ALIASES.items()]
    return "; ".join(groups)


def map_columns(
    headers: list[str],
    column_map: Mapping[str, str] | None = None,
    allow_extra: bool = False,
    source: str = "CSV",
) -> dict[str, str]:
    """Header → field (``patient_id``, ``primary_cancer``, a clinical name, or ``extra``).

    Raises :class:`MetadataError` for unknown columns (unless ``allow_extra``), two columns for one
    field, a ``column_map`` naming a missing column or an unknown field, and a missing id column.
    """
    column_map = dict(column_map or {})
    missing = [h for h in column_map if h not in headers]
    if missing:
        raise MetadataError(f"{source}: column map names column(s) not in the file: {', '.join(missing)}")
    bad_fields = sorted({f for f in column_map.values() if f not in KNOWN_FIELDS and f != "extra"})
    if bad_fields:
        raise MetadataError(
            f"{source}: column map field(s) {', '.join(bad_fields)} unknown; "
            f"use one of {', '.join(KNOWN_FIELDS)} or extra"
        )
    aliases = _alias_table()
    mapping: dict[str, str] = {}
    unknown: list[str] = []
    for header in headers:
        if header in column_map:
            mapping[header] = column_map[header]
        elif normalize_header(header) in aliases:
            mapping[header] = aliases[normalize_header(header)]
        elif not header.strip():
            raise MetadataError(f"{source}: a column has no header")
        elif allow_extra:
            mapping[header] = "extra"
        else:
            unknown.append(header)
    if unknown:
        raise MetadataError(
            f"{source}: unknown column(s) {', '.join(repr(h) for h in unknown)}; accepted names ("
            f"{accepted_columns()}); map them with --column HEADER=FIELD or keep them with --allow-extra"
        )
    used = Counter(f for f in mapping.values() if f != "extra")
    twice = sorted(f for f, n in used.items() if n > 1)
    if twice:
        columns = [h for h, f in mapping.items() if f in twice]
        raise MetadataError(
            f"{source}: column(s) {', '.join(repr(h) for h in columns)} all mean {', '.join(twice)}; keep one"
        )
    if ID_FIELD not in used:
        raise MetadataError(f"{source}: no patient id column; name it one of {', '.join(ID_ALIASES)}")
    return mapping


# ------------------------------------------------------------------------------------------ matching


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


# ------------------------------------------------------------------------------------------ import


def import_metadata(
    session: Session,
    csv_path: str | Path,
    column_map: Mapping[str, str] | None = None,
    *,
    create_missing: bool = False,
    allow_extra: bool = False,
) -> ImportReport:
    """Read a CSV of per-patient clinical fields onto ``Patient`` rows and commit; all or nothing.

    Raises :class:`MetadataError` (nothing written) for unknown columns, missing patients (listed), an
    empty or duplicated id, and bad numbers. Clinical fields are merged into ``Patient.clinical``.
    """
    path = Path(csv_path)
    source = path.name
    headers, rows = _read_rows(path)
    mapping = map_columns(headers, column_map, allow_extra, source)
    id_column = next(h for h, f in mapping.items() if f == ID_FIELD)
    patients = {p.pseudonym: p for p in session.scalars(select(Patient))}

    planned: list[tuple[str, Patient | None, str | None, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    missing: list[str] = []
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
        if patient is None:
            missing.append(text)
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
                clinical[name] = _clinical_value(name, value, line, source)
        primary = normalize_primary(primary_text)
        if primary is not None and primary_text and primary_text.strip().lower() != primary:
            clinical[ORIGINAL_PRIMARY_KEY] = primary_text[:MAX_TEXT]
        planned.append((text, patient, primary, clinical))
    if missing and not create_missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise MetadataError(
            f"{source}: {len(missing)} patient(s) not in the database: {shown} "
            "(import their studies first, or pass --create-missing)"
        )

    report = ImportReport(source=str(path), rows=len(rows), columns=dict(mapping))
    try:
        for text, patient, primary, clinical in planned:
            if patient is None:
                patient = Patient(pseudonym=text, clinical={})
                session.add(patient)
                report.created.append(text)
            else:
                report.updated.append(patient.pseudonym)
            if primary is not None:
                patient.primary_cancer = primary
                if ORIGINAL_PRIMARY_KEY not in clinical:
                    clinical[ORIGINAL_PRIMARY_KEY] = None  # a clean value replaces an older original text
            merged = {**(patient.clinical or {}), **clinical}
            patient.clinical = {k: v for k, v in merged.items() if v is not None}  # new dict: JSON change
            report.primary_cancer[primary or "unchanged"] = (
                report.primary_cancer.get(primary or "unchanged", 0) + 1
            )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return report


def import_cohort_json(session: Session, data_dir: str | Path) -> ImportReport:
    """Patients of a synthetic cohort (``DATA_DIR/cohort.json``) with their primary cancers; commits.

    Creates the missing ``Patient`` rows and sets every listed patient's primary cancer (the generator's
    draw, in the reference study's proportions).
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
    existing = {p.pseudonym: p for p in session.scalars(select(Patient))}
    report = ImportReport(source=str(path), rows=len(listed), columns={"patients": "cohort.json"})
    try:
        for pseudonym, record in listed.items():
            primary = normalize_primary((record or {}).get("primary_cancer"))
            patient = existing.get(str(pseudonym))
            if patient is None:
                patient = Patient(pseudonym=str(pseudonym), clinical={})
                session.add(patient)
                report.created.append(str(pseudonym))
            else:
                report.updated.append(str(pseudonym))
            if primary is not None:
                patient.primary_cancer = primary
            key = primary or "unchanged"
            report.primary_cancer[key] = report.primary_cancer.get(key, 0) + 1
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return report


def patient_to_dict(patient: Patient, studies: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON view of a patient (the API's and the CLI's)."""
    data: dict[str, Any] = {
        "id": patient.id,
        "pseudonym": patient.pseudonym,
        "primary_cancer": patient.primary_cancer,
        "clinical": dict(patient.clinical or {}),
        "created_at": patient.created_at.isoformat() if patient.created_at else None,
    }
    if studies is not None:
        data["studies"] = studies
    return data


def validate_patient_update(body: Any) -> tuple[str | None, bool, dict[str, Any] | None]:
    """A ``{"primary_cancer", "clinical"}`` update → (primary, primary given, clinical or None).

    ``primary_cancer``: one of :data:`PRIMARY_CANCER_TYPES` or null (unknown); ``clinical``: an object of
    short scalar values (``age`` and ``kps`` numbers); a null value removes a key. Raises ``ValueError``.
    """
    if not isinstance(body, Mapping):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(body) - {"primary_cancer", "clinical"})
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}; expected primary_cancer, clinical")
    primary = body.get("primary_cancer")
    if primary is not None and primary not in PRIMARY_CANCER_TYPES:
        raise ValueError(f"primary_cancer must be one of {', '.join(PRIMARY_CANCER_TYPES)} or null")
    clinical = body.get("clinical")
    if clinical is not None:
        if not isinstance(clinical, Mapping):
            raise ValueError("clinical must be a JSON object")
        checked: dict[str, Any] = {}
        for key, value in clinical.items():
            if not isinstance(key, str) or not key.strip() or len(key) > 64:
                raise ValueError("clinical keys must be 1-64 characters")
            if value is not None and not isinstance(value, str | int | float | bool):
                raise ValueError(f"clinical.{key} must be a string, a number, a boolean or null")
            if isinstance(value, str) and len(value) > MAX_TEXT:
                raise ValueError(f"clinical.{key} is longer than {MAX_TEXT} characters")
            if key in ("age", "kps") and value is not None:
                value = _number_in_range(key, value)
            checked[key.strip()] = value
        clinical = checked
    return primary, "primary_cancer" in body, clinical


def _number_in_range(name: str, value: Any) -> int | float | None:
    """``age`` (0-150) or ``kps`` (0-100) from a number or its text; empty text is None."""
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = float(value.strip().replace(",", "."))
        except ValueError:
            raise ValueError(f"clinical.{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not 0 <= value <= (150 if name == "age" else 100):
        raise ValueError(f"clinical.{name} must be a number from 0 to {150 if name == 'age' else 100}")
    return int(value) if float(value).is_integer() else round(float(value), 2)


def apply_patient_update(
    patient: Patient, primary: str | None, primary_given: bool, clinical: dict[str, Any] | None
) -> None:
    """Set the primary cancer (when given) and merge ``clinical`` (None values remove keys)."""
    if primary_given:
        patient.primary_cancer = primary
    if clinical is not None:
        merged = {**(patient.clinical or {}), **clinical}
        patient.clinical = {k: v for k, v in merged.items() if v is not None}
