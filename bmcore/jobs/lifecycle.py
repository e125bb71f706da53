"""Jobs: the one submit path (CLI and web) and the worker-side state changes. Torch-free.

Life of a job::

    queued --claim_job--> running --finish_job--> succeeded | failed | cancelled
       \\--cancel_job--> cancelled

Parent jobs (``sweep``, ``crossval``) fan out into child ``train`` jobs (``parent_id``); their
validation, fan-out and aggregation live in :mod:`bmcore.jobs.parents`, and cancelling a parent cancels its
unfinished children.

The row is the truth (DESIGN.md §6). ``submit_job`` commits the row before queueing the task by
name, and marks it failed if the broker cannot take it, so a job is never silently dropped. Tasks
receive only the job id, re-read the row with ``claim_job`` and are safe to run twice: a finished or
cancelled job is not run again, and ``attempts`` stops a job that keeps killing its worker.
Every function here commits its own change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bmcore.db import EVENT_LEVELS, FINISHED_STATUSES, JOB_STATUSES, JOB_TYPES, Job, JobEvent, Result, utcnow
from bmcore.jobs.queue import PARENT_TASK_NAMES, QUEUE_FOR_TASK, TASK_NAMES, celery_client

ARCHITECTURES = ("unet", "cnn", "fcn")


class JobParamsError(ValueError):
    """A job type or parameter was refused before anything was written."""


class JobNotFound(LookupError):
    """No job has this id."""


class QueueUnavailable(RuntimeError):
    """The broker refused the task; the job row was kept and marked failed."""

    def __init__(self, message: str, job: Job) -> None:
        super().__init__(message)
        self.job = job


# Training parameters the worker takes out before building its TrainConfig (bmcore.jobs.runner.run_train):
# ``split`` an explicit split (a dict like split.json, or its path), ``evaluate_test`` scores the best
# model on the split's test studies, ``champion_eligible`` false keeps the registered version from taking
# the ``champion`` alias (cross-validation folds), and the bookkeeping of sweep and cross-validation children.
TRAIN_EXTRA_PARAMS = (
    "data",
    "split_seed",
    "split",
    "evaluate_test",
    "champion_eligible",
    "mlflow_parent_run_id",
    "config_hash",
)
PATH_PARAMS = ("data", "study_dir", "model", "split")
SPLIT_SIDES = ("train", "val", "test")


def _check_split(split: Mapping[str, Any]) -> None:
    """An explicit train split: ``{"studies": {"train": [...], "val": [...], "test": [...]}, ...}``."""
    studies = split.get("studies")
    if not isinstance(studies, Mapping) or set(studies) != set(SPLIT_SIDES):
        raise JobParamsError("params.split needs studies.train, studies.val and studies.test (lists of ids)")
    seen: set[str] = set()
    for side in SPLIT_SIDES:
        ids = studies[side]
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise JobParamsError(f"params.split.studies.{side} must be a list of study ids")
        if side != "test" and not ids:
            raise JobParamsError(f"params.split.studies.{side} is empty")
        if seen & set(ids):
            raise JobParamsError(f"params.split puts study {sorted(seen & set(ids))[0]} on two sides")
        seen |= set(ids)


def validate_job(type: str, params: Mapping[str, Any], study_id: int | None = None) -> dict[str, Any]:
    """Check a job type and its parameters (the worker would need them); return a plain JSON-able dict.

    One set of rules for CLI and web: a train job needs ``data`` and valid training parameters
    (:class:`bmcore.training.config.TrainConfig`, torch-free); a segment job a study (``study_id`` or
    ``study_dir``); an evaluate job a study or a data set.
    """
    from bmcore.training.config import TrainConfig

    if type not in JOB_TYPES:
        raise JobParamsError(f"unknown job type {type!r}; expected one of {', '.join(JOB_TYPES)}")
    if not isinstance(params, Mapping):
        raise JobParamsError(f"job params must be a mapping, got {params.__class__.__name__}")
    params = dict(params)
    if "epochs" in params:
        epochs = params["epochs"]
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
            raise JobParamsError(f"epochs must be a positive integer, got {epochs!r}")
    if "arch" in params and params["arch"] not in ARCHITECTURES:
        raise JobParamsError(f"unknown arch {params['arch']!r}; expected one of {', '.join(ARCHITECTURES)}")
    for key in PATH_PARAMS:
        if key == "split" and type == "train" and isinstance(params.get(key), Mapping):
            _check_split(params[key])
        elif key in params and (not isinstance(params[key], str) or not params[key].strip()):
            raise JobParamsError(f"params.{key} must be a non-empty string")
    if type in PARENT_TASK_NAMES:
        from bmcore.jobs.parents import is_parent_spec, validate_parent

        if is_parent_spec(type, params):
            params = validate_parent(type, params)
    elif type == "train":
        if "data" not in params:
            raise JobParamsError("a train job needs params.data (the data set folder or CSV manifest)")
        for flag in ("evaluate_test", "champion_eligible"):
            if not isinstance(params.get(flag, False), bool):
                raise JobParamsError(f"params.{flag} must be true or false")
        try:
            TrainConfig.from_dict({k: v for k, v in params.items() if k not in TRAIN_EXTRA_PARAMS})
        except (ValueError, TypeError) as exc:
            raise JobParamsError(f"invalid training parameters: {exc}") from None
    elif type == "segment" and study_id is None and "study_dir" not in params:
        raise JobParamsError("a segment job needs a study_id or params.study_dir")
    elif type == "evaluate" and study_id is None and "data" not in params and "study_dir" not in params:
        raise JobParamsError("an evaluate job needs a study_id, params.data or params.study_dir")
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JobParamsError(f"job params must be JSON-serialisable: {exc}") from exc
    return params


def submit_job(
    session: Session,
    type: str,
    params: Mapping[str, Any] | None = None,
    owner_id: int | None = None,
    study_id: int | None = None,
    parent_id: str | None = None,
    send: bool = True,
) -> Job:
    """Validate, write a queued job row, commit, then queue its task by name.

    ``send=False`` only writes the row (e.g. the children of a sweep, sent once all of them exist, or a
    bare parent row grouping jobs queued by hand). A sweep or cross-validation job with its search
    (``grid``/``random``, ``folds``) is queued on the ``cpu`` queue, where its task fans out into child
    train jobs (:mod:`bmcore.jobs.parents`). Raises ``JobParamsError`` before writing anything, and
    ``QueueUnavailable`` (the row kept, marked failed with "could not queue: …") when the broker cannot
    be reached.
    """
    clean_params = validate_job(type, params or {}, study_id)
    task_name = TASK_NAMES.get(type)
    if type in PARENT_TASK_NAMES:
        from bmcore.jobs.parents import is_parent_spec

        task_name = PARENT_TASK_NAMES[type] if is_parent_spec(type, clean_params) else None
    if send and task_name is None:
        spec = "params.grid or params.random" if type == "sweep" else "params.folds"
        raise JobParamsError(
            f"job type {type!r} has no worker task without {spec}; submit it with send=False as the parent "
            f"of its {'/'.join(TASK_NAMES)} jobs"
        )
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


def send_job(session: Session, job: Job, task_name: str | None = None) -> Job:
    """Queue the task of a job row already written (``submit_job(send=False)``), by name.

    Raises ``QueueUnavailable`` (the row marked failed with "could not queue: …") when the broker refuses.
    """
    task_name = task_name or TASK_NAMES.get(job.type) or PARENT_TASK_NAMES[job.type]
    try:
        # ignore_result: the job row is the result; no result-backend subscription per task.
        celery_client().send_task(
            task_name, args=[job.id], queue=QUEUE_FOR_TASK[task_name], ignore_result=True
        )
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


def get_job(session: Session, job_id: str) -> Job:
    """The job with this id, or ``JobNotFound``."""
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"unknown job id: {job_id}")
    return job


def _lock_job(session: Session, job_id: str) -> Job:
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


def cancel_job(session: Session, job_id: str) -> Job:
    """Ask for a job to stop. Queued: cancelled at once. Running: the worker stops between steps.

    A finished job is returned unchanged. Unfinished children (``parent_id``) are cancelled the same way,
    in the same transaction; when none of them is still running, a parent's task is sent to record what
    finished and end the parent (otherwise the last running child's end does it, see bmcore.jobs.parents).
    """
    job = _lock_job(session, job_id)
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
    if job.type in PARENT_TASK_NAMES and job.status == "running":
        from bmcore.jobs.parents import is_parent_spec, send_parent_step

        if is_parent_spec(job.type, job.params) and not any(c.status == "running" for c in children):
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
    job = _lock_job(session, job_id)
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
    job = _lock_job(session, job_id)
    job.progress = min(1.0, max(0.0, float(progress)))
    job.message = message
    job.heartbeat_at = utcnow()
    session.add(JobEvent(job_id=job.id, level="info", message=message))
    session.commit()
    return job


def is_cancel_requested(session: Session, job_id: str) -> bool:
    """Whether someone asked this job to stop; read from the database, not the session cache.

    Ends the read transaction, so a worker polling this for hours holds no transaction open.
    """
    flag = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one_or_none()
    session.commit()
    if flag is None:
        raise JobNotFound(f"unknown job id: {job_id}")
    return bool(flag)


def finish_job(session: Session, job_id: str, status: str, error: str | None = None) -> Job:
    """End a job as succeeded, failed or cancelled."""
    if status not in FINISHED_STATUSES:
        raise ValueError(f"a job finishes as one of {', '.join(sorted(FINISHED_STATUSES))}, not {status!r}")
    job = _lock_job(session, job_id)
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
