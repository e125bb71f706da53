"""Jobs: the one submit path (CLI and web) and the worker-side state changes. Torch-free.

Life of a job::

    queued --claim_job--> running --finish_job--> succeeded | failed | cancelled
       \\--cancel_job--> cancelled

Parent jobs (``sweep``, ``crossval``) fan out into child ``train`` jobs (``parent_id``); their
validation lives in :mod:`bmcore.jobs.params`, their fan-out and aggregation in :mod:`bmcore.jobs.parents`,
and cancelling a parent cancels its unfinished children.

The row is the truth (docs/design.md §6). ``submit_job`` commits the row before queueing the task by
name, and marks it failed if the broker cannot take it, so a job is never silently dropped. It refuses a
user's top-level job past ``settings.max_active_jobs_per_user`` queued and running ones (admins and
server-made children are not counted), and takes the params only the server sets apart (``internal``).
Tasks receive only the job id, re-read the row with ``claim_job`` and are safe to run twice: a finished or
cancelled job is not run again, and ``attempts`` stops a job that keeps killing its worker.
Every function here commits its own change. Reading jobs: :mod:`bmcore.jobs.search`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bmcore.config import get_settings
from bmcore.db import EVENT_LEVELS, FINISHED_STATUSES, Job, JobEvent, Result, User, utcnow
from bmcore.jobs.errors import JobParamsError, JobQuotaExceeded, QueueUnavailable
from bmcore.jobs.params import PARENT_TYPES, is_parent_spec, validate_job
from bmcore.jobs.queue import PARENT_TASK_NAMES, TASK_NAMES, send_job_task, send_parent_step
from bmcore.jobs.search import get_job, lock_job


def submit_job(
    session: Session,
    type: str,
    params: Mapping[str, Any] | None = None,
    owner_id: int | None = None,
    study_id: int | None = None,
    parent_id: str | None = None,
    send: bool = True,
    internal: Mapping[str, Any] | None = None,
) -> Job:
    """Validate, write a queued job row, commit, then queue its task by name.

    ``params`` are the client's (internal ones refused); ``internal`` the params only server code sets
    (``config_hash``, ``mlflow_parent_run_id``, ``champion_eligible``, ``dataset``), checked for type and
    merged into the stored params. ``send=False`` only writes the row (e.g. the children of a sweep, sent
    once all of them exist, or a bare parent row grouping jobs queued by hand). A sweep or
    cross-validation job with its search (``grid``/``random``, ``folds``) is queued on the ``cpu`` queue,
    where its task fans out into child train jobs (:mod:`bmcore.jobs.parents`). Raises ``JobParamsError``
    before writing anything, ``JobQuotaExceeded`` when the owner has too many active jobs (nothing
    written), and ``QueueUnavailable`` (the row kept, marked failed with "could not queue: …") when the
    broker cannot be reached.
    """
    clean_params = validate_job(type, params or {}, study_id, internal)
    task_name = TASK_NAMES.get(type)
    if type in PARENT_TYPES:
        task_name = PARENT_TASK_NAMES[type] if is_parent_spec(type, clean_params) else None
    if send and task_name is None:
        spec = "params.grid or params.random" if type == "sweep" else "params.folds"
        raise JobParamsError(
            f"job type {type!r} has no worker task without {spec}; submit it with send=False as the parent "
            f"of its {'/'.join(TASK_NAMES)} jobs"
        )
    if owner_id is not None and parent_id is None:
        check_quota(session, owner_id)
    job = Job(
        type=type,
        params=clean_params,
        status="queued",
        owner_id=owner_id,
        study_id=study_id,
        parent_id=parent_id,
        message="queued",
    )
    session.add(job)
    session.commit()
    if not send or task_name is None:
        return job
    return send_job(session, job, task_name)


def check_quota(session: Session, owner_id: int) -> None:
    """Refuse a non-admin's new top-level job when they already have ``max_active_jobs_per_user`` queued
    or running ones (children of a parent are the server's and not counted).

    A no-op write to the user's row comes first: it locks that row on PostgreSQL and takes SQLite's one
    write lock, so two submissions of the same user count and insert one after the other (the lock is
    held until the caller commits its job row). On refusal the transaction is rolled back.
    """
    session.execute(
        update(User)
        .where(User.id == owner_id)
        .values(role=User.role)
        .execution_options(synchronize_session=False)
    )
    if session.scalar(select(User.role).where(User.id == owner_id)) == "admin":
        return
    limit = get_settings().max_active_jobs_per_user
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.owner_id == owner_id, Job.parent_id.is_(None), Job.status.in_(("queued", "running")))
    )
    if active >= limit:
        session.rollback()
        raise JobQuotaExceeded(
            f"you already have {active} queued or running jobs, the most allowed per user ({limit}); "
            "wait for one to finish or cancel one, then submit again",
            limit,
        )


def send_job(session: Session, job: Job, task_name: str | None = None) -> Job:
    """Queue the task of a job row already written (``submit_job(send=False)``), by name.

    Raises ``QueueUnavailable`` (the row marked failed with "could not queue: …") when the broker refuses.
    """
    task_name = task_name or TASK_NAMES.get(job.type) or PARENT_TASK_NAMES[job.type]
    try:
        send_job_task(task_name, job.id)
    except Exception as exc:
        reason = f"{exc.__class__.__name__}: {exc}".strip().splitlines()[0]
        job.status = "failed"
        job.error = f"could not queue: {reason}"
        job.message = "could not queue"
        job.finished_at = utcnow()
        session.add(JobEvent(job_id=job.id, level="error", message=job.error))
        session.commit()
        raise QueueUnavailable(f"job {job.id} could not be queued: {reason}", job) from exc
    return job


def cancel_job(session: Session, job_id: str) -> Job:
    """Ask for a job to stop. Queued: cancelled at once. Running: the worker stops between steps.

    A finished job is returned unchanged. Unfinished children (``parent_id``) are cancelled the same way,
    in the same transaction; when none of them is still running, a parent's task is sent to record what
    finished and end the parent (otherwise the last running child's end does it, see bmcore.jobs.parents).
    """
    job = lock_job(session, job_id)
    if job.status in FINISHED_STATUSES:
        session.commit()
        return job
    _request_cancel(session, job, "cancelled before it started", "cancel requested")
    children = session.scalars(
        select(Job).where(Job.parent_id == job.id, Job.status.in_(("queued", "running"))).with_for_update()
    ).all()
    for child in children:
        _request_cancel(session, child, "cancelled with its parent", "cancel requested by its parent")
    session.commit()
    children_idle = not any(c.status == "running" for c in children)
    if job.status == "running" and children_idle and is_parent_spec(job.type, job.params):
        send_parent_step(job.id, job.type, "check")
    return job


def _request_cancel(session: Session, job: Job, queued_message: str, running_message: str) -> None:
    job.cancel_requested = True
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = utcnow()
        job.message = queued_message
    else:
        job.message = running_message
    session.add(JobEvent(job_id=job.id, level="info", message=job.message))


# --- worker side ------------------------------------------------------------------------------------


def claim_job(session: Session, job_id: str, worker_host: str) -> Job | None:
    """Start (or restart) a job on this worker; ``None`` means: do not run it.

    Re-reads the row. A finished job is left alone; a job with a pending cancel becomes cancelled;
    otherwise ``attempts`` grows, and a job past ``max_attempts`` is failed instead of run again.
    """
    job = lock_job(session, job_id)
    now = utcnow()
    if job.status in FINISHED_STATUSES:
        session.commit()
        return None
    if job.cancel_requested:
        job.status = "cancelled"
        job.finished_at = now
        job.message = "cancelled before it started"
        session.add(JobEvent(job_id=job.id, level="info", message=job.message))
        session.commit()
        return None
    job.attempts += 1
    if job.attempts > job.max_attempts:
        job.status = "failed"
        job.error = f"gave up after {job.max_attempts} attempts"
        job.message = job.error
        job.finished_at = now
        session.add(JobEvent(job_id=job.id, level="error", message=job.error))
        session.commit()
        return None
    job.status = "running"
    job.started_at = now
    job.heartbeat_at = now
    job.worker_host = worker_host
    job.message = f"running on {worker_host} (attempt {job.attempts} of {job.max_attempts})"
    session.add(JobEvent(job_id=job.id, level="info", message=job.message))
    session.commit()
    return job


def update_progress(session: Session, job_id: str, progress: float, message: str) -> Job:
    """Record progress in [0, 1] (clamped) and a message; also a heartbeat and a log event."""
    if math.isnan(progress):
        raise ValueError("job progress is NaN")
    job = lock_job(session, job_id)
    job.progress = min(1.0, max(0.0, float(progress)))
    job.message = message
    job.heartbeat_at = utcnow()
    session.add(JobEvent(job_id=job.id, level="info", message=message))
    session.commit()
    return job


def finish_job(session: Session, job_id: str, status: str, error: str | None = None) -> Job:
    """End a job as succeeded, failed or cancelled."""
    if status not in FINISHED_STATUSES:
        raise ValueError(f"a job finishes as one of {', '.join(sorted(FINISHED_STATUSES))}, not {status!r}")
    job = lock_job(session, job_id)
    now = utcnow()
    job.status = status
    job.finished_at = now
    job.heartbeat_at = now
    job.error = error
    if status == "succeeded":
        job.progress = 1.0
    first_line = error.strip().splitlines()[0] if error and error.strip() else ""
    job.message = f"{status}: {first_line}" if first_line else status
    level = "error" if status == "failed" else "info"
    session.add(JobEvent(job_id=job.id, level=level, message=job.message))
    session.commit()
    return job


def record_result(
    session: Session, job_id: str, metrics: Mapping[str, Any], artifacts: Mapping[str, str]
) -> Result:
    """Store a job's metrics and artifact paths; running it again replaces them (one row per job)."""
    get_job(session, job_id)
    metrics, artifacts = dict(metrics), dict(artifacts)
    for attempt in range(2):
        result = session.scalars(select(Result).where(Result.job_id == job_id)).one_or_none()
        if result is None:
            result = Result(job_id=job_id, metrics=metrics, artifacts=artifacts)
            session.add(result)
        else:
            result.metrics = metrics
            result.artifacts = artifacts
        try:
            session.commit()
            return result
        except IntegrityError:
            # Another run inserted it between our read and our write: update that row instead.
            session.rollback()
            if attempt:
                raise
    raise AssertionError("unreachable")


def log_event(session: Session, job_id: str, message: str, level: str = "info") -> JobEvent:
    """Append a line to a job's log tail."""
    if level not in EVENT_LEVELS:
        raise ValueError(f"unknown event level {level!r}; expected one of {', '.join(EVENT_LEVELS)}")
    get_job(session, job_id)
    job_event = JobEvent(job_id=job_id, level=level, message=message)
    session.add(job_event)
    session.commit()
    return job_event
