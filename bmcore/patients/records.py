"""One patient as the API and the CLI see it: its JSON view, and a checked ``{"primary_cancer",
"clinical"}`` update applied to its row (the web's patient page and ``PATCH /api/v1/patients/<id>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bmcore.db import Patient
from bmcore.patients.fields import MAX_TEXT, PRIMARY_CANCER_TYPES


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
        merge_clinical(patient, clinical)


def merge_clinical(patient: Patient, clinical: Mapping[str, Any]) -> None:
    """Merge ``clinical`` into ``patient.clinical``; a None value removes its key."""
    merged = {**(patient.clinical or {}), **clinical}
    patient.clinical = {k: v for k, v in merged.items() if v is not None}  # new dict: JSON change
