"""What the API and the dashboard share: the request's database session, visibility rules, job requests,
artifact paths and JSON views of rows. No Flask views here."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import current_app, g
from sqlalchemy import select
from sqlalchemy.orm import Session

from bmcore.config import get_settings
from bmcore.db import Job, JobEvent, Result, Study, User, session_factory
from bmcore.jobs.lifecycle import JobParamsError, job_to_dict, validate_job
from bmcore.jobs.parents import PARENT_TYPES, is_parent_spec

# Job types a user may submit from the web; sweeps and cross-validations with their search or folds
# (a bare parent row, grouping jobs queued by hand, is CLI-only).
SUBMITTABLE_TYPES = ("train", "evaluate", "segment", "sweep", "crossval")
TYPES_HELP = (
    "train, evaluate, segment, sweep (with params.grid or params.random), crossval (with params.folds)"
)
MAX_CHILDREN_SHOWN = 200
DEFAULT_MODEL = "models:/bmseg-unet@champion"
EVENTS_SHOWN = 50
MAX_LESION_ROWS = 500


class WebError(Exception):
    """A request refused with an HTTP status and a one-line message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------------------------------ database


def db() -> Session:
    """The request's database session (opened on first use, closed when the request ends)."""
    if "db_session" not in g:
        g.db_session = session_factory(current_app.config["DATABASE_URL"])()
    return g.db_session


def close_db(_exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


# ------------------------------------------------------------------------------------------ visibility


def can_see(user: User, owner_id: int | None) -> bool:
    """Admins see everything; others see what they own (rows without an owner are admin-only)."""
    return bool(user.is_admin) or (owner_id is not None and owner_id == user.id)


def visible_job(session: Session, user: User, job_id: str) -> Job:
    job = session.get(Job, job_id) if len(job_id) <= 64 else None
    if job is None:
        raise WebError(404, f"unknown job id: {job_id}")
    if not can_see(user, job.owner_id):
        raise WebError(403, f"job {job_id} belongs to another user")
    return job


def visible_study(session: Session, user: User, study_id: int) -> Study:
    study = session.get(Study, study_id)
    if study is None:
        raise WebError(404, f"unknown study id: {study_id}")
    if not can_see(user, study.owner_id):
        raise WebError(403, f"study {study_id} belongs to another user")
    return study


def visible_studies(session: Session, user: User, limit: int = 500) -> list[Study]:
    query = select(Study).order_by(Study.created_at.desc(), Study.id.desc()).limit(limit)
    if not user.is_admin:
        query = query.where(Study.owner_id == user.id)
    return list(session.scalars(query))


# ------------------------------------------------------------------------------------------ job requests


def prepare_job(session: Session, user: User, body: Any) -> tuple[str, dict[str, Any], int | None]:
    """Validate a job request ``{"type", "params", "study_id"}``; returns (type, params, study_id).

    Raises ``WebError`` (400 bad input, 403/404 for the study) before anything is written.
    """
    if not isinstance(body, Mapping):
        raise WebError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - {"type", "params", "study_id"})
    if unknown:
        raise WebError(400, f"unknown field(s): {', '.join(unknown)}; expected type, params, study_id")
    job_type = body.get("type")
    if job_type not in SUBMITTABLE_TYPES:
        raise WebError(400, f"type must be one of {TYPES_HELP}, got {job_type!r}")
    params = body.get("params") if body.get("params") is not None else {}
    if not isinstance(params, Mapping):
        raise WebError(400, "params must be a JSON object")
    params = dict(params)
    if job_type in PARENT_TYPES and not is_parent_spec(job_type, params):
        raise WebError(400, f"type must be one of {TYPES_HELP}, got {job_type!r} without them")
    study_id = body.get("study_id")
    if study_id is not None:
        if isinstance(study_id, bool) or not isinstance(study_id, int):
            raise WebError(400, f"study_id must be an integer, got {study_id!r}")
        visible_study(session, user, study_id)
    try:
        params = validate_job(job_type, params, study_id)
    except JobParamsError as exc:
        raise WebError(400, str(exc)) from None
    check_paths_are_own(session, user, params)
    return job_type, params, study_id


PATH_PARAMS = ("data", "study_dir", "split", "model")


def check_paths_are_own(session: Session, user: User, params: Mapping[str, Any]) -> None:
    """A non-admin may not point a job at another user's uploaded study by its path (403).

    Paths inside the uploads folder must lie inside one of the user's own studies; ``..`` and links are
    resolved first, so a path cannot climb out of a study the user owns.
    """
    if user.is_admin:
        return
    uploads = get_settings().uploads_dir.resolve()
    own = [
        Path(d).resolve() for d in session.scalars(select(Study.directory).where(Study.owner_id == user.id))
    ]
    for key in PATH_PARAMS:
        value = params.get(key)
        if not isinstance(value, str) or value.startswith("models:/"):
            continue
        path = Path(value).resolve()
        if path.is_relative_to(uploads) and not any(path.is_relative_to(d) for d in own):
            raise WebError(403, f"params.{key} points at a study that belongs to another user")


# ------------------------------------------------------------------------------------------ artifacts


def artifact_file(job: Job, name: str, results_dir: Path) -> Path:
    """The file behind a job's artifact ``name``: only names the job's result lists, only inside
    ``results_dir``; anything else is a 404 (the path always comes from the database, never the user)."""
    artifacts = job.result.artifacts if job.result is not None else {}
    if name not in artifacts:
        raise WebError(404, f"job {job.id} has no artifact {name!r}")
    root = results_dir.resolve()
    path = Path(str(artifacts[name])).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise WebError(404, f"artifact {name!r} of job {job.id} is not available")
    return path


def newest_segmentation(session: Session, study: Study) -> Job | None:
    """The newest succeeded segment job of ``study`` whose result lists its mask."""
    query = (
        select(Job)
        .where(Job.study_id == study.id, Job.type == "segment", Job.status == "succeeded")
        .order_by(Job.finished_at.desc(), Job.created_at.desc())
    )
    for job in session.scalars(query):
        if job.result is not None and f"{study.study_uid}_seg" in job.result.artifacts:
            return job
    return None


def read_lesion_table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        rows = []
        for row in csv.DictReader(handle):
            rows.append(row)
            if len(rows) >= MAX_LESION_ROWS:
                break
        return rows


# ------------------------------------------------------------------------------------------ JSON views


def study_to_dict(study: Study) -> dict[str, Any]:
    return {
        "id": study.id,
        "study_uid": study.study_uid,
        "patient_id": study.patient.pseudonym if study.patient is not None else None,
        "modalities": sorted(study.files),
        "has_label": study.label_path is not None,
        "shape": list(study.shape or []),
        "spacing": list(study.spacing or []),
        "checksum": study.checksum,
        "owner_id": study.owner_id,
        "created_at": study.created_at.isoformat() if study.created_at else None,
    }


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (browsers refuse them in JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "", limit: int = 200) -> list[tuple[str, Any]]:
    """Nested metrics as ``(dotted key, scalar)`` rows; lists are summarised by their length."""
    rows: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(flatten_metrics(value, f"{name}.", limit))
        elif isinstance(value, list | tuple):
            if all(isinstance(item, int | float | str) for item in value) and len(value) <= 8:
                rows.append((name, ", ".join(str(item) for item in value)))
            else:
                rows.append((f"{name} (count)", len(value)))
        elif isinstance(value, float):
            rows.append((name, round(value, 4) if math.isfinite(value) else str(value)))
        else:
            rows.append((name, value))
        if len(rows) >= limit:
            break
    return rows[:limit]


def mlflow_run_link(base_url: str, run_id: str | None, experiment_id: str | None = None) -> str | None:
    """The MLflow UI page of a run (the UI also resolves ``#/runs/<id>`` without the experiment)."""
    if not run_id:
        return None
    base = base_url.rstrip("/")
    if experiment_id:
        return f"{base}/#/experiments/{quote(str(experiment_id))}/runs/{quote(run_id)}"
    return f"{base}/#/runs/{quote(run_id)}"


def mlflow_compare_link(base_url: str, run_ids: list[str], experiment_ids: list[str]) -> str | None:
    if not run_ids:
        return None
    runs = quote(json.dumps(run_ids, separators=(",", ":")))
    experiments = quote(json.dumps(experiment_ids, separators=(",", ":")))
    return f"{base_url.rstrip('/')}/#/compare-runs?runs={runs}&experiments={experiments}"


def job_summary(job: Job) -> dict[str, Any]:
    """The fields a job list shows."""
    return {
        "id": job.id,
        "type": job.type,
        "status": job.status,
        "progress": job.progress,
        "message": job.message,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "study_id": job.study_id,
        "owner_id": job.owner_id,
    }


def job_detail(session: Session, job: Job, mlflow_ui_url: str) -> dict[str, Any]:
    """A job with its result (metrics, artifact names) and its last events, for the API and the job page."""
    data = job_to_dict(job)
    result: Result | None = job.result
    data["result"] = (
        {
            "metrics": json_safe(result.metrics or {}),
            "metrics_table": json_safe(flatten_metrics(result.metrics or {})),
            "artifacts": sorted(result.artifacts or {}),
        }
        if result is not None
        else None
    )
    events = session.scalars(
        select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id.desc()).limit(EVENTS_SHOWN)
    ).all()
    data["events"] = [
        {"at": event.at.isoformat() if event.at else None, "level": event.level, "message": event.message}
        for event in reversed(events)
    ]
    data["mlflow_url"] = mlflow_run_link(mlflow_ui_url, job.mlflow_run_id)
    if job.type in PARENT_TYPES:
        data["children"] = job_children(session, job)
    return data


def job_children(session: Session, job: Job) -> list[dict[str, Any]]:
    """A sweep's or cross-validation's child jobs, oldest first, each with what it searched (or its fold)
    and its headline figures once finished."""
    query = (
        select(Job).where(Job.parent_id == job.id).order_by(Job.created_at, Job.id).limit(MAX_CHILDREN_SHOWN)
    )
    searched = set((job.params.get("grid") or job.params.get("random") or {}).keys())
    children = []
    for child in session.scalars(query):
        metrics = child.result.metrics if child.result is not None else {}
        split = child.params.get("split")
        label = {k: v for k, v in child.params.items() if k in searched}
        if isinstance(split, Mapping) and "fold" in split:
            label = {"fold": split["fold"]}
        children.append(
            job_summary(child)
            | {
                "params": label,
                "reused_from": metrics.get("reused_from"),
                "val_lesion_dice": json_safe(metrics.get("val_lesion_dice")),
                "val_loss": json_safe(metrics.get("val_loss")),
                "error": child.error,
            }
        )
    return children
