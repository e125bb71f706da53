"""A patient's page: visits with their lesions (the newest segmentation's table, else the label's), the
lesion volumes over time as a plot, the patient's jobs, and the form editing its clinical fields."""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from typing import Any

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, send_file, url_for

from bmcore.db import Patient, User
from bmcore.imaging import StudyError
from bmcore.metrics import LABELS
from bmcore.patients import (
    CLINICAL_ALIASES,
    PRIMARY_CANCER_TYPES,
    apply_patient_update,
    validate_patient_update,
)
from bmcore.reports import cohort as cohort_report
from services.web.access import (
    can_edit_patient,
    check_can_edit_patient,
    jobs_of_studies,
    patient_studies,
    visible_patient,
)
from services.web.common import WebError, db, privately_cached
from services.web.reports import cohort_cache_dir, has_lesion_table, newest_segmentation, segmentation_lesions

MAX_PATIENT_JOBS = 50
CLINICAL_PREFIX = "clinical."


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _visit(study_row) -> dict[str, Any]:
    """One visit: its newest segmentation and lesions (prediction, else ground truth), or the reason."""
    segmentation = newest_segmentation(db(), study_row, g.user)
    lesions, source, error = None, None, None
    try:
        if has_lesion_table(segmentation, study_row):
            lesions = segmentation_lesions(segmentation, study_row)
            source = "prediction"
        else:
            lesions = cohort_report.cached_study_lesions(
                study_row, cohort_cache_dir(), current_app.config["MAX_VOXELS"]
            )
            source = "ground truth" if lesions is not None else None
    except (StudyError, OSError, WebError, UnicodeDecodeError, ValueError) as exc:
        error = getattr(exc, "message", None) or str(exc).splitlines()[0]
    volumes = [v for v in (_as_float(row.get("volume_ml")) for row in lesions or []) if v is not None]
    return {
        "study": study_row,
        "label": cohort_report.visit_label(study_row),
        "segmentation": segmentation,
        "lesions": lesions,
        "source": source,
        "error": error,
        "volumes_ml": volumes,
        "total_ml": round(sum(volumes), 4) if lesions else None,
    }


def patient_visits(user: User, patient: Patient) -> list[dict[str, Any]]:
    """Every visible visit with its lesions: the newest segment job's lesion table, else the label's."""
    return [_visit(study_row) for study_row in patient_studies(user, patient)]


def patient(patient_id: int):
    record = visible_patient(db(), g.user, patient_id)
    visits = patient_visits(g.user, record)
    known = list(CLINICAL_ALIASES)
    clinical = dict(record.clinical or {})
    return render_template(
        "patient.html",
        patient=record,
        visits=visits,
        jobs=jobs_of_studies(db(), g.user, [v["study"].id for v in visits], MAX_PATIENT_JOBS),
        can_edit=can_edit_patient(g.user, record),
        primary_types=PRIMARY_CANCER_TYPES,
        clinical_fields=known + sorted(k for k in clinical if k not in known),
        clinical=clinical,
        has_volumes=any(v["volumes_ml"] for v in visits),
        label_names=LABELS,
    )


def _update_from_form(form) -> dict[str, Any]:
    """The edit form as the API's patient update ``{"primary_cancer", "clinical"}`` (blank → None)."""
    body: dict[str, Any] = {}
    if "primary_cancer" in form:
        body["primary_cancer"] = form["primary_cancer"].strip() or None
    clinical = {
        key.removeprefix(CLINICAL_PREFIX): value.strip() or None
        for key, value in form.items()
        if key.startswith(CLINICAL_PREFIX)
    }
    new_key = form.get("new_key", "").strip()
    if new_key:
        clinical[new_key] = form.get("new_value", "").strip() or None
    if clinical:
        body["clinical"] = clinical
    return body


def update_patient(patient_id: int):
    session = db()
    record = visible_patient(session, g.user, patient_id)
    check_can_edit_patient(g.user, record)
    body = _update_from_form(request.form)
    try:
        primary, primary_given, checked = validate_patient_update(body)
    except ValueError as exc:
        flash(f"Not saved: {exc}", "error")
        return redirect(url_for("dashboard.patient", patient_id=patient_id), 303)
    if body:
        apply_patient_update(record, primary, primary_given, checked)
        session.commit()
        flash(f"Patient {record.pseudonym} saved.", "success")
    return redirect(url_for("dashboard.patient", patient_id=patient_id), 303)


def patient_volumes(patient_id: int):
    record = visible_patient(db(), g.user, patient_id)
    visits = [
        {"label": f"{v['label']}\n{v['study'].study_uid}", "volumes_ml": v["volumes_ml"]}
        for v in patient_visits(g.user, record)
    ]
    if not any(v["volumes_ml"] for v in visits):
        raise WebError(404, f"patient {record.pseudonym} has no lesions to plot")
    key = hashlib.sha256(json.dumps([cohort_report.CACHE_VERSION, visits]).encode()).hexdigest()[:32]
    path = cohort_cache_dir() / "patients" / f"{key}.png"
    if not path.is_file():
        temp = path.with_name(f".{key}.{uuid.uuid4().hex}.png")
        try:
            cohort_report.plot_lesion_volumes(visits, temp)
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        cohort_report.prune_cache(path.parent, cohort_report.KEEP_PATIENT_PLOTS)
    return privately_cached(send_file(path, mimetype="image/png"))


def register(bp: Blueprint) -> None:
    bp.get("/patients/<int:patient_id>")(patient)
    bp.post("/patients/<int:patient_id>")(update_patient)
    bp.get("/patients/<int:patient_id>/volumes.png")(patient_volumes)
