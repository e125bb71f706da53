"""The JSON API under ``/api/v1`` (bearer-token auth on every route). Thin views: validate, write a row,
queue by task name
through :mod:`bmcore.jobs.lifecycle`, return. Errors are ``{"error": "..."}`` with a 4xx/5xx."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request, send_file, url_for

from bmcore.db import JOB_STATUSES, JOB_TYPES, Study
from bmcore.jobs.lifecycle import JobParamsError, QueueUnavailable, job_to_dict, list_jobs, submit_job
from bmcore.jobs.lifecycle import cancel_job as request_cancel
from bmcore.patients import apply_patient_update, patient_to_dict, validate_patient_update
from services.web.auth import load_api_user
from services.web.common import (
    WebError,
    artifact_file,
    db,
    job_detail,
    prepare_job,
    study_to_dict,
    visible_job,
    visible_studies,
    visible_study,
)
from services.web.dashboard import (
    can_edit_patient,
    cohort_summary,
    patient_studies,
    seed_argument,
    visible_patient,
    visible_patients,
)
from services.web.openapi import openapi_document
from services.web.uploads import store_study_upload

bp = Blueprint("api", __name__, url_prefix="/api/v1")
bp.before_request(load_api_user)

MAX_LIST_LIMIT = 500


def _json_body() -> Any:
    if request.mimetype != "application/json":
        raise WebError(
            415, f"send JSON (Content-Type: application/json), not {request.mimetype or 'nothing'!r}"
        )
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebError(400, f"malformed JSON body: {exc}") from None


def _limit() -> int:
    text = request.args.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIST_LIMIT:
        raise WebError(400, f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
    return int(text)


def registry_models() -> list[dict[str, Any]]:
    """The registry overview; imported lazily (MLflow is slow to import and the page is optional)."""
    from bmcore import tracking

    return tracking.registry_overview()


@bp.get("/me")
def me():
    user = g.user
    return jsonify(id=user.id, email=user.email, is_admin=bool(user.is_admin))


@bp.get("/studies")
def list_studies():
    studies = visible_studies(db(), g.user, limit=_limit())
    return jsonify(studies=[study_to_dict(study) for study in studies])


@bp.post("/studies")
def upload_study():
    if request.mimetype != "multipart/form-data":
        raise WebError(
            415, "upload a study as multipart/form-data (fields patient_id, study_uid; files t1...)"
        )
    config = current_app.config
    study = store_study_upload(
        db(),
        request.files,
        request.form.get("patient_id"),
        request.form.get("study_uid"),
        g.user.id,
        config["UPLOADS_DIR"],
        config["MAX_VOXELS"],
    )
    response = jsonify(study_to_dict(study))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_study", study_id=study.id)
    return response


@bp.get("/studies/<int:study_id>")
def get_study(study_id: int):
    study: Study = visible_study(db(), g.user, study_id)
    return jsonify(study_to_dict(study))


@bp.get("/jobs")
def list_jobs_view():
    status, job_type = request.args.get("status"), request.args.get("type")
    if status is not None and status not in JOB_STATUSES:
        raise WebError(400, f"status must be one of {', '.join(JOB_STATUSES)}")
    if job_type is not None and job_type not in JOB_TYPES:
        raise WebError(400, f"type must be one of {', '.join(JOB_TYPES)}")
    owner = None if g.user.is_admin else g.user.id
    jobs = list_jobs(db(), status=status, type=job_type, owner_id=owner, limit=_limit())
    return jsonify(jobs=[job_to_dict(job) for job in jobs])


@bp.post("/jobs")
def submit():
    session = db()
    job_type, params, study_id = prepare_job(session, g.user, _json_body())
    try:
        job = submit_job(session, job_type, params, owner_id=g.user.id, study_id=study_id)
    except JobParamsError as exc:
        raise WebError(400, str(exc)) from None
    except QueueUnavailable as exc:
        response = jsonify(error=f"the job queue is unavailable, try again later ({exc})", id=exc.job.id)
        response.status_code = 503
        return response
    status_url = url_for("api.get_job", job_id=job.id)
    response = jsonify(job_to_dict(job) | {"status_url": status_url})
    response.status_code = 202
    response.headers["Location"] = status_url
    return response


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    session = db()
    job = visible_job(session, g.user, job_id)
    return jsonify(job_detail(session, job, current_app.config["MLFLOW_UI_URL"]))


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    session = db()
    visible_job(session, g.user, job_id)
    job = request_cancel(session, job_id)
    return jsonify(job_to_dict(job))


@bp.get("/jobs/<job_id>/artifacts/<name>")
def download_artifact(job_id: str, name: str):
    job = visible_job(db(), g.user, job_id)
    path = artifact_file(job, name, current_app.config["RESULTS_DIR"])
    return send_file(path, as_attachment=True, download_name=path.name)


@bp.get("/models")
def models():
    try:
        overview = registry_models()
    except Exception as exc:  # MLflow down, misconfigured or not installed: the rest of the API lives on
        current_app.logger.warning("model registry unavailable: %s", exc)
        raise WebError(503, f"registry unavailable: {type(exc).__name__}: {exc}") from None
    return jsonify(models=overview)


@bp.get("/patients")
def list_patients():
    user = g.user
    patients = visible_patients(db(), user, limit=_limit())
    return jsonify(
        patients=[
            patient_to_dict(patient)
            | {"studies": sum(1 for s in patient.studies if user.is_admin or s.owner_id == user.id)}
            for patient in patients
        ]
    )


def _patient_detail(patient) -> dict[str, Any]:
    studies = [study_to_dict(study) for study in patient_studies(g.user, patient)]
    return patient_to_dict(patient, studies) | {"can_edit": can_edit_patient(g.user, patient)}


@bp.get("/patients/<int:patient_id>")
def get_patient(patient_id: int):
    return jsonify(_patient_detail(visible_patient(db(), g.user, patient_id)))


@bp.patch("/patients/<int:patient_id>")
def update_patient(patient_id: int):
    session = db()
    patient = visible_patient(session, g.user, patient_id)
    if not can_edit_patient(g.user, patient):
        raise WebError(
            403, f"patient {patient.pseudonym} has studies of other users; only an admin may edit it"
        )
    try:
        primary, primary_given, clinical = validate_patient_update(_json_body())
    except ValueError as exc:
        raise WebError(400, str(exc)) from None
    apply_patient_update(patient, primary, primary_given, clinical)
    session.commit()
    return jsonify(_patient_detail(patient))


@bp.get("/cohort")
def cohort():
    summary, _ = cohort_summary(g.user, seed_argument())
    return jsonify(summary)


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())
