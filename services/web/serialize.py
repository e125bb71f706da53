"""Rows as the JSON dicts the API returns and the dashboard's pages and scripts read: studies, jobs (a
list's summary, the detail with result, events and children), patients, and links into the MLflow UI.
NaN and infinities become None on the way (browsers refuse them in JSON)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from bmcore.db import Job, JobEvent, Patient, Result, Study, User
from bmcore.jobs.params import PARENT_TYPES
from bmcore.jobs.search import job_to_dict
from bmcore.patients import patient_to_dict
from services.web.access import can_edit_patient, can_see_study, patient_studies

MAX_CHILDREN_SHOWN = 200
EVENTS_SHOWN = 50


def study_to_dict(study: Study) -> dict[str, Any]:
    return {
        "id": study.id,
        "study_uid": study.study_uid,
        "patient_id": study.patient.pseudonym if study.patient is not None else None,
        "group": study.patient.group.name if study.patient is not None else None,
        "modalities": sorted(study.files),
        "has_label": study.label_path is not None,
        "shape": list(study.shape or []),
        "spacing": list(study.spacing or []),
        "checksum": study.checksum,
        "owner_id": study.owner_id,
        "created_at": study.created_at.isoformat() if study.created_at else None,
    }


def patient_summary(user: User, patient: Patient) -> dict[str, Any]:
    """A patient in a list: its fields, its group and how many of its studies ``user`` can see."""
    return patient_to_dict(patient) | {
        "group": patient.group.name,
        "studies": sum(1 for s in patient.studies if can_see_study(user, s)),
    }


def patient_detail(user: User, patient: Patient) -> dict[str, Any]:
    """A patient with the studies ``user`` can see (in visit order) and whether ``user`` may edit it."""
    studies = [study_to_dict(study) for study in patient_studies(user, patient)]
    return patient_to_dict(patient, studies) | {
        "group": patient.group.name,
        "can_edit": can_edit_patient(user, patient),
    }


# ------------------------------------------------------------------------------------------ values


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


# ------------------------------------------------------------------------------------------ jobs


JOB_SUMMARY_FIELDS = (
    "id",
    "type",
    "status",
    "progress",
    "message",
    "created_at",
    "finished_at",
    "study_id",
    "owner_id",
)


def job_summary(job: Job) -> dict[str, Any]:
    """The fields a job list shows: a subset of :func:`bmcore.jobs.search.job_to_dict`."""
    full = job_to_dict(job)
    return {name: full[name] for name in JOB_SUMMARY_FIELDS}


def job_detail(session: Session, job: Job, mlflow_ui_url: str, viewer: User | None = None) -> dict[str, Any]:
    """A job with its result (metrics, artifact names) and its last events, for the API and the job page.

    Debug events (a failed job's traceback: worker paths, code, data) reach admins only: ``viewer`` must
    be an admin to see them; without a viewer nobody does."""
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
    query = select(JobEvent).where(JobEvent.job_id == job.id)
    if viewer is None or not viewer.is_admin:
        query = query.where(JobEvent.level != "debug")
    events = session.scalars(query.order_by(JobEvent.id.desc()).limit(EVENTS_SHOWN)).all()
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
