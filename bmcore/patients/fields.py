"""Patient metadata fields: the recognised columns and their aliases, and how headers and values are
normalised (primary cancer onto :data:`PRIMARY_CANCER_TYPES`, age and KPS as numbers, sex as F/M).

See :mod:`bmcore.patients` for the rules as a whole.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

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


def clinical_value(name: str, text: str, line: int, source: str) -> Any:
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
