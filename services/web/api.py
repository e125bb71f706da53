"""The JSON API under ``/api/v1`` (bearer-token auth on every route). Thin views: validate, write a row,
queue by task name through :mod:`bmcore.jobs.lifecycle`, return. Errors are ``{"error": "..."}`` with a
4xx/5xx. Each view's docstring and :func:`~services.web.openapi.documented` make its OpenAPI entry."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request, send_file, url_for

from bmcore.db import JOB_STATUSES, JOB_TYPES
from bmcore.jobs.errors import JobParamsError, JobQuotaExceeded, QueueUnavailable
from bmcore.jobs.lifecycle import cancel_job as request_cancel
from bmcore.jobs.search import job_to_dict
from bmcore.patients import apply_patient_update, validate_patient_update
from services.web import reports, schemas
from services.web.access import (
    artifact_file,
    check_can_edit_patient,
    visible_job,
    visible_jobs,
    visible_patient,
    visible_patients,
    visible_studies,
    visible_study,
)
from services.web.auth import load_api_user
from services.web.common import WebError, db
from services.web.dicom_intake import is_dicom_upload, queue_dicom_upload
from services.web.job_inputs import datasets_for
from services.web.job_requests import prepare_job, submit_prepared
from services.web.openapi import documented, openapi_document
from services.web.serialize import job_detail, patient_detail, patient_summary, study_to_dict
from services.web.study_intake import store_study_upload

bp = Blueprint("api", __name__, url_prefix="/api/v1")
bp.before_request(load_api_user)

MAX_LIST_LIMIT = schemas.MAX_LIST_LIMIT
NOT_JSON = "the body is not application/json"


def _json_body() -> Any:
    """The request's JSON: 415 unless JSON, 413 past ``MAX_JSON_BYTES`` (read no further), 400 when
    malformed (nesting too deep included)."""
    if request.mimetype != "application/json":
        raise WebError(
            415, f"send JSON (Content-Type: application/json), not {request.mimetype or 'nothing'!r}"
        )
    limit = current_app.config["MAX_JSON_BYTES"]
    too_large = WebError(413, f"the JSON body is larger than the server accepts ({limit // 1024} KB)")
    if (request.content_length or 0) > limit:
        raise too_large
    raw = request.stream.read(limit + 1)  # never more than the cap, whatever the client claims
    if len(raw) > limit:
        raise too_large
    try:
        return json.loads(raw)
    except ValueError as exc:  # not UTF-8, not JSON, an integer of thousands of digits
        raise WebError(400, f"malformed JSON body: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise WebError(400, "malformed JSON body: nested too deeply") from None


def _limit() -> int:
    text = request.args.get("limit", str(schemas.DEFAULT_LIST_LIMIT))
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIST_LIMIT:
        raise WebError(400, f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
    return int(text)


def _created(body: dict[str, Any], status: int, location: str):
    response = jsonify(body)
    response.status_code = status
    response.headers["Location"] = location
    return response


@bp.get("/me")
@documented("me", (200, schemas.Me, "the user"))
def me():
    """The token's user"""
    user = g.user
    return jsonify(id=user.id, email=user.email, is_admin=bool(user.is_admin), role=user.role)


# ------------------------------------------------------------------------------------------ studies


@bp.get("/studies")
@documented("listStudies", (200, schemas.StudyList, "studies"), {400: None}, query=schemas.ListQuery)
def list_studies():
    """Studies you can see, newest first"""
    studies = visible_studies(db(), g.user, limit=_limit())
    return jsonify(studies=[study_to_dict(study) for study in studies])


@bp.post("/studies")
@documented(
    "uploadStudy",
    (201, schemas.Study, "the stored study (NIfTI files)"),
    {
        400: None,
        409: "a study with this study_uid exists",
        413: "the upload is larger than the server accepts",
        415: "not multipart/form-data, or a file is not NIfTI (a zip for dicom)",
        429: "a DICOM archive: you have as many queued and running jobs as allowed",
        503: "a DICOM archive: the queue is unavailable",
    },
    form=schemas.StudyUpload,
)
def upload_study():
    """Upload a study (four NIfTI modalities, optional label; or a DICOM archive)

    Every file is checked (NIfTI header first, 3D, voxel limit, bounded gzip expansion, matching shapes
    and affines, no NaN, not all zero, labels 0..3) and stored with its free-text header fields cleared.
    On any failure nothing is stored. The study goes into ``group`` (one of yours; by default your only
    group) and its patient is the pseudonym's patient in that group (made when new).

    A DICOM archive (file ``dicom``: a zip of the study's MR series; optional ``map`` such as
    ``5=t1ce, 7=flair`` for series the importer cannot place) is answered **202** with an ingest job (a
    JobQueued, with its ``status_url`` and a Location header; not a Study): the worker converts the
    series, stores the study (no PHI: the pseudonym, never the DICOM's names or ids) and names it in the
    job's result (``study_id``), or fails the job with the reason and stores nothing.
    """
    if request.mimetype != "multipart/form-data":
        raise WebError(
            415, "upload a study as multipart/form-data (fields patient_id, study_uid, group; files t1...)"
        )
    config = current_app.config
    if is_dicom_upload(request.files):
        job = queue_dicom_upload(
            db(), request.files, request.form, g.user, config["UPLOADS_DIR"], config["MAX_CONTENT_LENGTH"]
        )
        status_url = url_for("api.get_job", job_id=job.id)
        return _created(job_to_dict(job) | {"status_url": status_url}, 202, status_url)
    study = store_study_upload(
        db(),
        request.files,
        request.form.get("patient_id"),
        request.form.get("study_uid"),
        g.user,
        config["UPLOADS_DIR"],
        config["MAX_UPLOAD_VOXELS"],
        group=request.form.get("group"),
    )
    return _created(study_to_dict(study), 201, url_for("api.get_study", study_id=study.id))


@bp.get("/studies/<int:study_id>")
@documented("getStudy", (200, schemas.Study, "the study"), {404: None})
def get_study(study_id: int):
    """One study (yours or of your groups' patients; any other answers 404 as an unknown id)"""
    return jsonify(study_to_dict(visible_study(db(), g.user, study_id)))


# ------------------------------------------------------------------------------------------ jobs


@bp.get("/jobs")
@documented("listJobs", (200, schemas.JobList, "jobs"), {400: None}, query=schemas.JobListQuery)
def list_jobs_view():
    """Jobs, newest first (yours; an admin sees all)"""
    status, job_type = request.args.get("status"), request.args.get("type")
    if status is not None and status not in JOB_STATUSES:
        raise WebError(400, f"status must be one of {', '.join(JOB_STATUSES)}")
    if job_type is not None and job_type not in JOB_TYPES:
        raise WebError(400, f"type must be one of {', '.join(JOB_TYPES)}")
    jobs = visible_jobs(db(), g.user, status=status, job_type=job_type, limit=_limit())
    return jsonify(jobs=[job_to_dict(job) for job in jobs])


@bp.post("/jobs")
@documented(
    "submitJob",
    (202, schemas.JobQueued, "queued; follow status_url"),
    {
        400: None,
        403: None,
        404: "unknown study_id",
        415: NOT_JSON,
        429: "you have as many queued and running jobs as allowed; retry after Retry-After seconds",
        503: "the queue is unavailable; the job was recorded as failed",
    },
    json=schemas.JobRequest,
)
def submit():
    """Queue a train, evaluate, segment, sweep or crossval job

    Parameters are typed and bounded (limits in the settings, e.g. BMSEG_MAX_EPOCHS); unknown ones and
    the server's own (config_hash, mlflow_parent_run_id, champion_eligible, dataset) are refused with a
    400 naming them. A user has at most BMSEG_MAX_ACTIVE_JOBS_PER_USER queued and running jobs (429).
    """
    session = db()
    prepared = prepare_job(session, g.user, _json_body())
    try:
        job = submit_prepared(session, g.user, prepared)
    except JobParamsError as exc:
        raise WebError(400, str(exc)) from None
    except JobQuotaExceeded as exc:
        response = jsonify(error=str(exc))
        response.status_code = 429
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    except QueueUnavailable as exc:
        response = jsonify(error=f"the job queue is unavailable, try again later ({exc})", id=exc.job.id)
        response.status_code = 503
        return response
    status_url = url_for("api.get_job", job_id=job.id)
    return _created(job_to_dict(job) | {"status_url": status_url}, 202, status_url)


@bp.get("/jobs/<job_id>")
@documented("getJob", (200, schemas.JobDetail, "the job"), {403: None, 404: None})
def get_job(job_id: str):
    """A job: status, progress, result (metrics, artifact names), last 50 events"""
    session = db()
    job = visible_job(session, g.user, job_id)
    return jsonify(job_detail(session, job, current_app.config["MLFLOW_UI_URL"], viewer=g.user))


@bp.post("/jobs/<job_id>/cancel")
@documented("cancelJob", (200, schemas.Job, "the job after the request"), {403: None, 404: None})
def cancel_job(job_id: str):
    """Cancel a job (at once when queued, between steps when running)"""
    session = db()
    visible_job(session, g.user, job_id)
    return jsonify(job_to_dict(request_cancel(session, job_id)))


@bp.get("/jobs/<job_id>/artifacts/<name>")
@documented("downloadArtifact", (200, None, "the file"), {403: None, 404: None})
def download_artifact(job_id: str, name: str):
    """Download one of a job's artifacts (names as listed in its result)"""
    job = visible_job(db(), g.user, job_id)
    path = artifact_file(job, name, current_app.config["RESULTS_DIR"])
    return send_file(path, as_attachment=True, download_name=path.name)


# ------------------------------------------------------------------------------- models, patients, cohort


@bp.get("/models")
@documented("listModels", (200, schemas.ModelList, "registered models"), {503: "the registry is unavailable"})
def models():
    """The model registry: bmseg-unet, -cnn and -fcn with versions and aliases"""
    try:
        overview = reports.registry_models()
    except Exception as exc:  # MLflow down, misconfigured or not installed: the rest of the API lives on
        current_app.logger.warning("model registry unavailable: %s", exc)
        raise WebError(503, f"registry unavailable: {type(exc).__name__}: {exc}") from None
    return jsonify(models=overview)


@bp.get("/datasets")
@documented("listDatasets", (200, schemas.DatasetList, "the data sets you may use"))
def list_datasets():
    """Registered data sets you may name as a job's params.data (an admin also sees their paths)"""
    return jsonify(datasets=datasets_for(db(), g.user))


@bp.get("/patients")
@documented("listPatients", (200, schemas.PatientList, "patients"), {400: None}, query=schemas.ListQuery)
def list_patients():
    """The patients of your groups (an admin sees all), by pseudonym"""
    patients = visible_patients(db(), g.user, limit=_limit())
    return jsonify(patients=[patient_summary(g.user, patient) for patient in patients])


@bp.get("/patients/<int:patient_id>")
@documented("getPatient", (200, schemas.PatientDetail, "the patient"), {404: None})
def get_patient(patient_id: int):
    """One patient of your groups with its studies (another group's answers 404 as an unknown id)"""
    return jsonify(patient_detail(g.user, visible_patient(db(), g.user, patient_id)))


@bp.patch("/patients/<int:patient_id>")
@documented(
    "updatePatient",
    (200, schemas.PatientDetail, "the patient after the edit"),
    {400: None, 403: None, 404: None, 415: NOT_JSON},
    json=schemas.PatientUpdate,
)
def update_patient(patient_id: int):
    """Edit a patient's primary cancer and clinical fields

    Admins edit any patient; a user edits the patients of their groups.
    """
    session = db()
    patient = visible_patient(session, g.user, patient_id)
    check_can_edit_patient(g.user, patient)
    try:
        primary, primary_given, clinical = validate_patient_update(_json_body())
    except ValueError as exc:
        raise WebError(400, str(exc)) from None
    apply_patient_update(patient, primary, primary_given, clinical)
    session.commit()
    return jsonify(patient_detail(g.user, patient))


@bp.get("/cohort")
@documented("getCohort", (200, schemas.CohortSummary, "the summary"), {400: None}, query=schemas.CohortQuery)
def cohort():
    """The cohort summary of the studies you can see (computed once, then cached)"""
    summary, _ = reports.cohort_summary(g.user, reports.seed_argument())
    return jsonify(summary)


@bp.get("/openapi.json")
@documented("openapi", (200, schemas.OpenAPIDocument, "OpenAPI 3.1"))
def openapi():
    """This document"""
    return jsonify(openapi_document())
