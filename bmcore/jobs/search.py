"""Reading jobs: one by id, a filtered list, and the JSON view the API and the CLI print. Torch-free."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bmcore.db import JOB_STATUSES, JOB_TYPES, Job
from bmcore.jobs.errors import JobNotFound


def get_job(session: Session, job_id: str) -> Job:
    """The job with this id, or ``JobNotFound``."""
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"unknown job id: {job_id}")
    return job


def lock_job(session: Session, job_id: str) -> Job:
    """Re-read the row from the database (locked on PostgreSQL until the next commit)."""
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise JobNotFound(f"unknown job id: {job_id}")
    return job


def list_jobs(
    session: Session,
    status: str | None = None,
    type: str | None = None,
    owner_id: int | None = None,
    limit: int = 100,
) -> list[Job]:
    """Jobs, newest first, optionally filtered by status, type and owner."""
    if status is not None and status not in JOB_STATUSES:
        raise ValueError(f"unknown job status {status!r}; expected one of {', '.join(JOB_STATUSES)}")
    if type is not None and type not in JOB_TYPES:
        raise ValueError(f"unknown job type {type!r}; expected one of {', '.join(JOB_TYPES)}")
    query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if status is not None:
        query = query.where(Job.status == status)
    if type is not None:
        query = query.where(Job.type == type)
    if owner_id is not None:
        query = query.where(Job.owner_id == owner_id)
    return list(session.scalars(query))


def is_cancel_requested(session: Session, job_id: str) -> bool:
    """Whether someone asked this job to stop; read from the database, not the session cache.

    Ends the read transaction, so a worker polling this for hours holds no transaction open.
    """
    flag = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one_or_none()
    session.commit()
    if flag is None:
        raise JobNotFound(f"unknown job id: {job_id}")
    return bool(flag)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_to_dict(job: Job) -> dict[str, Any]:
    """A JSON-able view of a job (ISO 8601 UTC timestamps) for the API and the CLI."""
    return {
        "id": job.id,
        "type": job.type,
        "params": job.params,
        "status": job.status,
        "progress": job.progress,
        "message": job.message,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "heartbeat_at": _iso(job.heartbeat_at),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "worker_host": job.worker_host,
        "error": job.error,
        "mlflow_run_id": job.mlflow_run_id,
        "cancel_requested": job.cancel_requested,
        "owner_id": job.owner_id,
        "parent_id": job.parent_id,
        "study_id": job.study_id,
    }
