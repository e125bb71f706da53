"""Jobs: the list (and its JSON for polling), the new-job form, a job's page, cancelling, artifacts."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
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

from bmcore.architectures import ARCHS
from bmcore.db import JOB_STATUSES
from bmcore.jobs.errors import JobParamsError, JobQuotaExceeded, QueueUnavailable
from bmcore.jobs.lifecycle import cancel_job as request_cancel
from bmcore.training.config import RECIPES, TrainConfig
from services.web.access import artifact_file, visible_job, visible_jobs, visible_studies
from services.web.common import WebError, db
from services.web.dashboard.job_form import DEFAULT_FOLDS, FORM_FIELDS, form_choices, job_request_from_form
from services.web.job_requests import DEFAULT_MODEL, SUBMITTABLE_TYPES, prepare_job, submit_prepared
from services.web.result_view import job_result_view
from services.web.serialize import job_detail, job_summary

INLINE_SUFFIXES = (".png", ".json", ".csv")


def _status_argument() -> str | None:
    return request.args.get("status") or None


def jobs():
    status = _status_argument()
    if status is not None and status not in JOB_STATUSES:
        status = None
    return render_template(
        "jobs.html",
        jobs=[job_summary(job) for job in visible_jobs(db(), g.user, status)],
        status=status,
        statuses=JOB_STATUSES,
    )


def jobs_json():
    status = _status_argument()
    if status is not None and status not in JOB_STATUSES:
        raise WebError(400, f"status must be one of {', '.join(JOB_STATUSES)}")
    return jsonify(jobs=[job_summary(job) for job in visible_jobs(db(), g.user, status)])


RECIPE_LABELS = {
    "bmseg": "bmseg: Dice + CE, native 64² crops",
    "study": "study: CE, whole slices resized (the paper's)",
}
RECIPE_CHOICES = {name: RECIPE_LABELS.get(name, name) for name in RECIPES}  # every recipe, worded


def _job_form_page(status: int = 200, error: str | None = None, form: dict[str, Any] | None = None):
    defaults = TrainConfig()
    values = {
        "type": request.args.get("type", "segment"),
        "arch": defaults.arch,
        "recipe": defaults.recipe,
        "epochs": defaults.epochs,
        "lr": defaults.lr,
        "batch_size": defaults.batch_size,
        "size": defaults.size,
        "data": "",
        "model": DEFAULT_MODEL,
        "study_id": request.args.get("study_id", ""),
        "grid": "",
        "budget": "",
        "folds": DEFAULT_FOLDS,
    } | (form or {})
    return (
        render_template(
            "job_new.html",
            values=values,
            error=error,
            types=SUBMITTABLE_TYPES,
            archs=ARCHS,
            recipes=RECIPE_CHOICES,
            studies=visible_studies(db(), g.user),
            **form_choices(db(), g.user),
        ),
        status,
    )


def new_job():
    return _job_form_page()


def submit():
    form = {key: request.form.get(key, "") for key in FORM_FIELDS}
    session = db()
    try:
        prepared = prepare_job(session, g.user, job_request_from_form(form))
        job = submit_prepared(session, g.user, prepared)
    except WebError as exc:
        return _job_form_page(exc.status, exc.message, form)
    except JobParamsError as exc:
        return _job_form_page(400, str(exc), form)
    except JobQuotaExceeded as exc:
        page, status = _job_form_page(429, f"{str(exc)[0].upper()}{str(exc)[1:]}.", form)
        return page, status, {"Retry-After": str(exc.retry_after_s)}
    except QueueUnavailable as exc:
        return _job_form_page(503, f"The job queue is unavailable; try again later ({exc}).", form)
    flash(f"{prepared.type.capitalize()} job queued.", "success")
    return redirect(url_for("dashboard.job", job_id=job.id), 303)


def job(job_id: str):
    session = db()
    record = visible_job(session, g.user, job_id)
    detail = job_detail(session, record, current_app.config["MLFLOW_UI_URL"], viewer=g.user)
    return render_template(
        "job.html",
        job=detail,
        study=record.study_id,
        ranking=_parent_table(detail),
        view=job_result_view(record, current_app.config["RESULTS_DIR"]),
    )


def _parent_table(detail: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A sweep's ranked table, or a cross-validation's folds, from its result (None before it ends)."""
    metrics = (detail.get("result") or {}).get("metrics") or {}
    return metrics.get("ranking") or metrics.get("folds")


def job_json(job_id: str):
    session = db()
    record = visible_job(session, g.user, job_id)
    return jsonify(job_detail(session, record, current_app.config["MLFLOW_UI_URL"], viewer=g.user))


def cancel(job_id: str):
    session = db()
    visible_job(session, g.user, job_id)
    record = request_cancel(session, job_id)
    flash(
        "Cancelled." if record.status == "cancelled" else f"Cancel requested (job is {record.status}).",
        "info",
    )
    return redirect(url_for("dashboard.job", job_id=job_id), 303)


def artifact(job_id: str, name: str):
    record = visible_job(db(), g.user, job_id)
    path = artifact_file(record, name, current_app.config["RESULTS_DIR"])
    inline = path.suffix.lower() in INLINE_SUFFIXES and request.args.get("download") is None
    return send_file(path, as_attachment=not inline, download_name=path.name)


def register(bp: Blueprint) -> None:
    bp.get("/jobs")(jobs)
    bp.get("/jobs.json")(jobs_json)
    bp.get("/jobs/new")(new_job)
    bp.post("/jobs")(submit)
    bp.get("/jobs/<job_id>")(job)
    bp.get("/jobs/<job_id>.json")(job_json)
    bp.post("/jobs/<job_id>/cancel")(cancel)
    bp.get("/jobs/<job_id>/artifacts/<name>")(artifact)
