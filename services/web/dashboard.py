"""The dashboard: HTML pages with session-cookie auth, plus the small JSON and PNG routes its scripts poll.

Thin views: validate, write a row (``store_study_upload``, ``submit_job``), redirect. Every POST carries
the session's CSRF token (checked in :func:`services.web.auth.load_dashboard_user`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from sqlalchemy import select

from bmcore.accounts import authenticate
from bmcore.config import get_settings
from bmcore.db import JOB_STATUSES, Job, Patient, Study, User
from bmcore.imaging import MODALITIES, StudyError
from bmcore.jobs.lifecycle import JobParamsError, QueueUnavailable, list_jobs, submit_job
from bmcore.jobs.lifecycle import cancel_job as request_cancel
from bmcore.jobs.parents import parse_grid
from bmcore.metrics import LABELS
from bmcore.patients import (
    CLINICAL_ALIASES,
    PRIMARY_CANCER_TYPES,
    apply_patient_update,
    validate_patient_update,
)
from bmcore.reports import cohort as cohort_report
from bmcore.training.config import ARCHS, TrainConfig
from services.web import slices
from services.web.auth import load_dashboard_user, safe_next, sign_in_user, sign_out_user
from services.web.common import (
    DEFAULT_MODEL,
    SUBMITTABLE_TYPES,
    WebError,
    artifact_file,
    db,
    job_detail,
    job_summary,
    mlflow_compare_link,
    mlflow_run_link,
    newest_segmentation,
    prepare_job,
    read_lesion_table,
    visible_job,
    visible_studies,
    visible_study,
)
from services.web.uploads import UploadError, store_study_upload

bp = Blueprint("dashboard", __name__)
bp.before_request(load_dashboard_user)

OVERLAYS = ("prediction", "label", "none")
# Metrics shown first on the model comparison page, when a version has them.
KEY_METRICS = (
    "val_lesion_dice",
    "val_dice",
    "val_dice_ET",
    "val_dice_TC",
    "val_dice_WT",
    "val_loss",
    "val_paper_dice",
    "val_paper_iou",
    "epochs_run",
)
MAX_METRIC_COLUMNS = 8


# ------------------------------------------------------------------------------------------ sign-in


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    next_path = safe_next(request.values.get("next"))
    if request.method == "GET":
        if g.user is not None:
            return redirect(next_path or url_for("dashboard.jobs"))
        return render_template("sign_in.html", next=next_path, email="")
    email = request.form.get("email", "").strip()
    user = authenticate(db(), email, request.form.get("password", ""))
    if user is None:
        return render_template(
            "sign_in.html", next=next_path, email=email, error="Wrong e-mail or password."
        ), 401
    sign_in_user(user)
    return redirect(next_path or url_for("dashboard.jobs"), 303)


@bp.post("/sign-out")
def sign_out():
    sign_out_user()
    return redirect(url_for("dashboard.sign_in"), 303)


@bp.get("/")
def index():
    return redirect(url_for("dashboard.jobs"))


# ------------------------------------------------------------------------------------------ studies


def _studies_page(status: int = 200, error: str | None = None, form: dict[str, str] | None = None):
    session = db()
    studies = visible_studies(session, g.user)
    return (
        render_template(
            "studies.html",
            studies=studies,
            modalities=MODALITIES,
            error=error,
            form=form or {},
            max_upload_mb=current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024),
        ),
        status,
    )


@bp.get("/studies")
def studies():
    return _studies_page()


@bp.post("/studies")
def upload_study():
    form = {"patient_id": request.form.get("patient_id", ""), "study_uid": request.form.get("study_uid", "")}
    config = current_app.config
    try:
        study = store_study_upload(
            db(),
            request.files,
            form["patient_id"],
            form["study_uid"],
            g.user.id,
            config["UPLOADS_DIR"],
            config["MAX_VOXELS"],
        )
    except UploadError as exc:
        return _studies_page(exc.status, f"Upload refused: {exc.message}", form)
    flash(f"Study {study.study_uid} stored and checked.", "success")
    return redirect(url_for("dashboard.study", study_id=study.id), 303)


@bp.get("/studies/<int:study_id>")
def study(study_id: int):
    session = db()
    record = visible_study(session, g.user, study_id)
    config = current_app.config
    segmentation = newest_segmentation(session, record)
    mask_name = f"{record.study_uid}_seg" if segmentation else None
    lesions_name = f"{record.study_uid}_lesions"
    lesions: list[dict[str, str]] | None = None
    error = None
    depth, best = 1, 0
    lesion_z: dict[str, int] = {}
    try:
        volume = slices.display_volume(record.directory, config["MAX_VOXELS"])
        depth = volume.shape[2]
        mask = None
        if segmentation is not None:
            mask_path = artifact_file(segmentation, mask_name, config["RESULTS_DIR"])
            mask = slices.display_mask(record.directory, str(mask_path), config["MAX_VOXELS"])
            lesion_z = slices.lesion_slices(mask, volume.spacing)
        best = slices.best_slice(mask if mask is not None else volume.label, depth)
    except (StudyError, OSError, WebError) as exc:
        error = f"Cannot display this study: {getattr(exc, 'message', exc)}"
    if segmentation is not None and lesions_name in (segmentation.result.artifacts or {}):
        try:
            lesions = read_lesion_table(artifact_file(segmentation, lesions_name, config["RESULTS_DIR"]))
        except (WebError, OSError, UnicodeDecodeError):
            lesions = None
    return render_template(
        "study.html",
        study=record,
        segmentation=segmentation,
        mask_name=mask_name,
        lesions=lesions,
        lesion_z=lesion_z,
        has_label=record.label_path is not None,
        depth=depth,
        best_slice=best,
        modalities=sorted(record.files, key=MODALITIES.index),
        label_names=LABELS,
        colours=slices.LABEL_COLOURS,
        error=error,
        jobs=_study_jobs(record.id),
    )


def _study_jobs(study_id: int) -> list[Job]:
    query = select(Job).where(Job.study_id == study_id).order_by(Job.created_at.desc()).limit(10)
    return [job for job in db().scalars(query) if job.owner_id == g.user.id or g.user.is_admin]


@bp.get("/studies/<int:study_id>/slice.png")
def study_slice(study_id: int):
    session = db()
    record = visible_study(session, g.user, study_id)
    config = current_app.config
    modality = request.args.get("modality", MODALITIES[0])
    overlay_kind = request.args.get("overlay", "prediction")
    if modality not in record.files or overlay_kind not in OVERLAYS:
        raise WebError(
            400, f"modality must be one of {', '.join(record.files)}; overlay one of {', '.join(OVERLAYS)}"
        )
    try:
        z = int(request.args.get("z", "0"))
        opacity = float(request.args.get("opacity", "0.45"))
    except ValueError:
        raise WebError(400, "z must be an integer and opacity a number") from None
    if not math.isfinite(opacity):
        raise WebError(400, "opacity must be a number from 0 to 1")
    try:
        volume = slices.display_volume(record.directory, config["MAX_VOXELS"])
        overlay = None
        if overlay_kind == "label":
            overlay = volume.label
        elif overlay_kind == "prediction":
            job_id = request.args.get("job")
            segmentation = (
                visible_job(session, g.user, job_id) if job_id else newest_segmentation(session, record)
            )
            if segmentation is not None:
                if segmentation.study_id != record.id:
                    raise WebError(400, f"job {segmentation.id} did not segment this study")
                path = artifact_file(segmentation, f"{record.study_uid}_seg", config["RESULTS_DIR"])
                overlay = slices.display_mask(record.directory, str(path), config["MAX_VOXELS"])
        png = slices.render_slice(volume, modality, z, overlay, opacity)
    except StudyError as exc:
        raise WebError(422, f"cannot display this study: {exc}") from None
    response = Response(png, mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=60"
    return response


# ------------------------------------------------------------------------------------------ jobs


def _visible_jobs(status: str | None = None, limit: int = 100) -> list[Job]:
    owner = None if g.user.is_admin else g.user.id
    return list_jobs(db(), status=status, owner_id=owner, limit=limit)


@bp.get("/jobs")
def jobs():
    status = request.args.get("status") or None
    if status is not None and status not in JOB_STATUSES:
        status = None
    return render_template(
        "jobs.html",
        jobs=[job_summary(job) for job in _visible_jobs(status)],
        status=status,
        statuses=JOB_STATUSES,
    )


@bp.get("/jobs.json")
def jobs_json():
    status = request.args.get("status") or None
    if status is not None and status not in JOB_STATUSES:
        raise WebError(400, f"status must be one of {', '.join(JOB_STATUSES)}")
    return jsonify(jobs=[job_summary(job) for job in _visible_jobs(status)])


def _job_form_page(status: int = 200, error: str | None = None, form: dict[str, Any] | None = None):
    defaults = TrainConfig()
    values = {
        "type": request.args.get("type", "segment"),
        "arch": defaults.arch,
        "epochs": defaults.epochs,
        "lr": defaults.lr,
        "batch_size": defaults.batch_size,
        "size": defaults.size,
        "data": "",
        "model": DEFAULT_MODEL,
        "study_id": request.args.get("study_id", ""),
        "grid": "",
        "budget": "",
        "folds": 5,
    } | (form or {})
    return (
        render_template(
            "job_new.html",
            values=values,
            error=error,
            types=SUBMITTABLE_TYPES,
            archs=ARCHS,
            studies=visible_studies(db(), g.user),
        ),
        status,
    )


@bp.get("/jobs/new")
def new_job():
    return _job_form_page()


def _number(form: dict[str, str], name: str, kind: type) -> int | float | None:
    text = (form.get(name) or "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise WebError(
            400, f"{name.replace('_', ' ')} must be {'a whole number' if kind is int else 'a number'}"
        ) from None


def job_request_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The new-job form as the API's job request ``{"type", "params", "study_id"}``."""
    job_type = form.get("type", "")
    study_text = (form.get("study_id") or "").strip()
    if study_text and not study_text.isdigit():
        raise WebError(400, "choose a study from the list")
    study_id = int(study_text) if study_text else None
    data = (form.get("data") or "").strip()
    model = (form.get("model") or "").strip() or DEFAULT_MODEL
    params: dict[str, Any] = {}
    if job_type in ("train", "sweep", "crossval"):
        training = {"arch": form.get("arch", "unet")}
        for name, kind in (("epochs", int), ("lr", float), ("batch_size", int), ("size", int)):
            value = _number(form, name, kind)
            if value is not None:
                training[name] = value
        if not data:
            raise WebError(400, "a training job needs a data set path (as the workers see it)")
        study_id = None
        params = {"data": data} | _parent_params(job_type, form, training)
    elif job_type in ("evaluate", "segment"):
        params["model"] = model
        if data and study_id is None:
            params["data" if job_type == "evaluate" else "study_dir"] = data
        if form.get("tta"):
            params["tta"] = True
    return {"type": job_type, "params": params, "study_id": study_id}


def _parent_params(job_type: str, form: dict[str, str], training: dict[str, Any]) -> dict[str, Any]:
    """Training fields as they are (train), or as every child's ``base`` of a sweep (the grid's names
    taken out) or cross-validation."""
    if job_type == "train":
        return training
    if job_type == "crossval":
        folds = _number(form, "folds", int)
        return {"folds": folds if folds is not None else 5, "base": training}
    try:
        grid = parse_grid(form.get("grid") or "")
    except JobParamsError as exc:
        raise WebError(400, f"grid: {exc}") from None
    params: dict[str, Any] = {"grid": grid, "base": {k: v for k, v in training.items() if k not in grid}}
    budget = _number(form, "budget", int)
    if budget is not None:
        params["budget"] = budget
    if form.get("promote_best"):
        params["promote_best"] = True
    return params


@bp.post("/jobs")
def submit():
    fields = ("type", "arch", "epochs", "lr", "batch_size", "size", "data", "model", "study_id", "tta")
    fields += ("grid", "budget", "folds", "promote_best")
    form = {key: request.form.get(key, "") for key in fields}
    session = db()
    try:
        job_type, params, study_id = prepare_job(session, g.user, job_request_from_form(form))
        job = submit_job(session, job_type, params, owner_id=g.user.id, study_id=study_id)
    except WebError as exc:
        return _job_form_page(exc.status, exc.message, form)
    except JobParamsError as exc:
        return _job_form_page(400, str(exc), form)
    except QueueUnavailable as exc:
        return _job_form_page(503, f"The job queue is unavailable; try again later ({exc}).", form)
    flash(f"{job_type.capitalize()} job queued.", "success")
    return redirect(url_for("dashboard.job", job_id=job.id), 303)


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    session = db()
    record = visible_job(session, g.user, job_id)
    detail = job_detail(session, record, current_app.config["MLFLOW_UI_URL"])
    return render_template("job.html", job=detail, study=record.study_id, ranking=_parent_table(detail))


def _parent_table(detail: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A sweep's ranked table, or a cross-validation's folds, from its result (None before it ends)."""
    metrics = (detail.get("result") or {}).get("metrics") or {}
    return metrics.get("ranking") or metrics.get("folds")


@bp.get("/jobs/<job_id>.json")
def job_json(job_id: str):
    session = db()
    record = visible_job(session, g.user, job_id)
    return jsonify(job_detail(session, record, current_app.config["MLFLOW_UI_URL"]))


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):
    session = db()
    visible_job(session, g.user, job_id)
    record = request_cancel(session, job_id)
    flash(
        "Cancelled." if record.status == "cancelled" else f"Cancel requested (job is {record.status}).",
        "info",
    )
    return redirect(url_for("dashboard.job", job_id=job_id), 303)


@bp.get("/jobs/<job_id>/artifacts/<name>")
def artifact(job_id: str, name: str):
    record = visible_job(db(), g.user, job_id)
    path = artifact_file(record, name, current_app.config["RESULTS_DIR"])
    inline = path.suffix.lower() in (".png", ".json", ".csv") and request.args.get("download") is None
    return send_file(path, as_attachment=not inline, download_name=path.name)


# ------------------------------------------------------------------------------------------ models


def _metric_columns(versions: list[dict[str, Any]]) -> list[str]:
    present: list[str] = []
    for version in versions:
        for key in version.get("metrics", {}):
            if key not in present:
                present.append(key)
    ordered = [key for key in KEY_METRICS if key in present]
    ordered += sorted(key for key in present if key not in ordered and key.startswith("val_"))
    ordered += sorted(key for key in present if key not in ordered)
    return ordered[:MAX_METRIC_COLUMNS]


@bp.get("/models")
def models():
    from services.web.api import registry_models

    base = current_app.config["MLFLOW_UI_URL"]
    try:
        overview = registry_models()
        error = None
    except Exception as exc:  # the registry is optional for the rest of the dashboard
        current_app.logger.warning("model registry unavailable: %s", exc)
        overview, error = [], f"Registry unavailable: {type(exc).__name__}: {exc}"
    all_versions = [version for model in overview for version in model.get("versions", [])]
    run_ids = [version["run_id"] for version in all_versions if version.get("run_id")]
    experiments = sorted({str(v["experiment_id"]) for v in all_versions if v.get("experiment_id")})
    for version in all_versions:
        version["mlflow_url"] = mlflow_run_link(base, version.get("run_id"), version.get("experiment_id"))
    champions = [
        (model["name"], version)
        for model in overview
        for version in model.get("versions", [])
        if model.get("champion") is not None and version.get("version") == model["champion"]
    ]
    return render_template(
        "models.html",
        models=overview,
        champions=champions,
        error=error,
        columns=_metric_columns(all_versions),
        compare_url=mlflow_compare_link(base, run_ids, experiments),
        mlflow_ui_url=base,
    )


# ---------------------------------------------------------------------------------------- cohort and patients
# (the JSON API imports the helpers of this section)

MAX_COHORT_STUDIES = 500
MAX_PATIENT_JOBS = 50


def cohort_cache_dir() -> Path:
    """Where cohort reports, lesion tables and patient plots are cached (``data_dir/cache/cohort``)."""
    configured = current_app.config.get("COHORT_CACHE_DIR")
    return Path(configured) if configured else get_settings().cache_dir / "cohort"


def seed_argument() -> int:
    text = request.args.get("seed", "0")
    if not text.isdigit() or int(text) >= 2**31:
        raise WebError(400, "seed must be a whole number from 0 to 2147483647")
    return int(text)


def cohort_summary(user: User, seed: int = 0) -> tuple[dict[str, Any], Path]:
    """The cohort report of the studies ``user`` can see (cached; drawn on first request): summary, folder.

    Predictions: the newest succeeded segment job's mask of each study.
    """
    session = db()
    studies = visible_studies(session, user, limit=MAX_COHORT_STUDIES)
    predictions = {}
    for study_row in studies:
        segmentation = newest_segmentation(session, study_row)
        if segmentation is not None:
            try:
                predictions[study_row.study_uid] = artifact_file(
                    segmentation, f"{study_row.study_uid}_seg", current_app.config["RESULTS_DIR"]
                )
            except WebError:
                continue
    return cohort_report.database_report(
        studies, cohort_cache_dir(), predictions, seed, current_app.config["MAX_VOXELS"]
    )


def visible_patient(session, user: User, patient_id: int) -> Patient:
    """A patient ``user`` may see: admins see all; others the patients of their own studies."""
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise WebError(404, f"unknown patient id: {patient_id}")
    if not user.is_admin and not any(s.owner_id == user.id for s in patient.studies):
        raise WebError(403, f"patient {patient_id} has no studies of yours")
    return patient


def visible_patients(session, user: User, limit: int = 500) -> list[Patient]:
    query = select(Patient).order_by(Patient.pseudonym).limit(limit)
    if not user.is_admin:
        query = query.where(Patient.studies.any(Study.owner_id == user.id))
    return list(session.scalars(query))


def patient_studies(user: User, patient: Patient) -> list[Study]:
    """The patient's studies ``user`` can see, in visit order."""
    return cohort_report.sort_visits([s for s in patient.studies if user.is_admin or s.owner_id == user.id])


def can_edit_patient(user: User, patient: Patient) -> bool:
    """Admins edit any patient; a user edits a patient whose studies are all theirs."""
    return bool(user.is_admin) or (
        bool(patient.studies) and all(s.owner_id == user.id for s in patient.studies)
    )


def patient_visits(user: User, patient: Patient) -> list[dict[str, Any]]:
    """Every visible visit with its lesions: the newest segment job's lesion table, else the label's."""
    session = db()
    config = current_app.config
    visits = []
    for study_row in patient_studies(user, patient):
        segmentation = newest_segmentation(session, study_row)
        lesions, source, error = None, None, None
        name = f"{study_row.study_uid}_lesions"
        try:
            if segmentation is not None and name in (segmentation.result.artifacts or {}):
                lesions = read_lesion_table(artifact_file(segmentation, name, config["RESULTS_DIR"]))
                source = "prediction"
            else:
                lesions = cohort_report.cached_study_lesions(
                    study_row, cohort_cache_dir(), config["MAX_VOXELS"]
                )
                source = "ground truth" if lesions is not None else None
        except (StudyError, OSError, WebError, UnicodeDecodeError, ValueError) as exc:
            error = getattr(exc, "message", None) or str(exc).splitlines()[0]
        volumes = [_as_float(row.get("volume_ml")) for row in lesions or []]
        visits.append(
            {
                "study": study_row,
                "label": cohort_report.visit_label(study_row),
                "segmentation": segmentation,
                "lesions": lesions,
                "source": source,
                "error": error,
                "volumes_ml": [v for v in volumes if v is not None],
                "total_ml": round(sum(v for v in volumes if v is not None), 4) if lesions else None,
            }
        )
    return visits


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def patient_jobs(user: User, studies: list[Study]) -> list[Job]:
    if not studies:
        return []
    query = (
        select(Job)
        .where(Job.study_id.in_([s.id for s in studies]))
        .order_by(Job.created_at.desc())
        .limit(MAX_PATIENT_JOBS)
    )
    return [job for job in db().scalars(query) if user.is_admin or job.owner_id == user.id]


@bp.get("/cohort")
def cohort():
    seed = seed_argument()
    summary, folder = cohort_summary(g.user, seed)
    pseudonyms = [p["patient_id"] for p in summary["patients"]]
    rows = db().scalars(select(Patient).where(Patient.pseudonym.in_(pseudonyms))) if pseudonyms else []
    patient_ids = {p.pseudonym: p.id for p in rows}
    records = {r["study_id"]: r for r in summary["studies"]}
    study_ids = {s.study_uid: s.id for s in visible_studies(db(), g.user, limit=MAX_COHORT_STUDIES)}
    return render_template(
        "cohort.html",
        summary=summary,
        seed=seed,
        version=folder.name,
        plots=summary.get("plots", {}),
        titles=cohort_report.PLOT_TITLES,
        patient_ids=patient_ids,
        records=records,
        study_ids=study_ids,
        primary_types=PRIMARY_CANCER_TYPES,
        classes=list(cohort_report.CLASSES),
    )


@bp.get("/cohort.json")
def cohort_json():
    summary, _ = cohort_summary(g.user, seed_argument())
    return jsonify(summary)


@bp.get("/cohort/plot.png")
def cohort_plot():
    name = request.args.get("name", cohort_report.PLOTS[0])
    if name not in cohort_report.PLOTS:
        raise WebError(400, f"name must be one of {', '.join(cohort_report.PLOTS)}")
    summary, folder = cohort_summary(g.user, seed_argument())
    if name not in summary.get("plots", {}):
        raise WebError(404, f"no {name} plot for this cohort")
    response = send_file(folder / summary["plots"][name], mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=60"
    return response


@bp.get("/patients/<int:patient_id>")
def patient(patient_id: int):
    record = visible_patient(db(), g.user, patient_id)
    visits = patient_visits(g.user, record)
    known = list(CLINICAL_ALIASES)
    clinical = dict(record.clinical or {})
    return render_template(
        "patient.html",
        patient=record,
        visits=visits,
        jobs=patient_jobs(g.user, [v["study"] for v in visits]),
        can_edit=can_edit_patient(g.user, record),
        primary_types=PRIMARY_CANCER_TYPES,
        clinical_fields=known + sorted(k for k in clinical if k not in known),
        clinical=clinical,
        has_volumes=any(v["volumes_ml"] for v in visits),
        label_names=LABELS,
    )


@bp.post("/patients/<int:patient_id>")
def update_patient(patient_id: int):
    session = db()
    record = visible_patient(session, g.user, patient_id)
    if not can_edit_patient(g.user, record):
        raise WebError(403, f"patient {record.pseudonym} has studies of other users; ask an admin to edit it")
    form = request.form
    body: dict[str, Any] = {}
    if "primary_cancer" in form:
        body["primary_cancer"] = form["primary_cancer"].strip() or None
    clinical = {
        key.removeprefix("clinical."): value.strip() or None
        for key, value in form.items()
        if key.startswith("clinical.")
    }
    new_key = form.get("new_key", "").strip()
    if new_key:
        clinical[new_key] = form.get("new_value", "").strip() or None
    if clinical:
        body["clinical"] = clinical
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


@bp.get("/patients/<int:patient_id>/volumes.png")
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
    response = send_file(path, mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=60"
    return response
