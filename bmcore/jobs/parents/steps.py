"""The steps of a parent's task: ``start`` fans out the children, ``check``/``recheck`` count them and end
the parent once all have ended (how a parent waits without holding a worker: :mod:`bmcore.jobs.parents`).

Each step is short and safe to repeat; the rows hold the state. A child that ends tells its parent
(:func:`notify_parent`, from :func:`bmcore.jobs.runner.run_job`).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bmcore.db import FINISHED_STATUSES, Job, JobEvent, Result, session_scope, utcnow
from bmcore.jobs.errors import QueueUnavailable
from bmcore.jobs.lifecycle import cancel_job, claim_job, send_job, update_progress
from bmcore.jobs.params import PARENT_TYPES, is_parent_spec, validate_job
from bmcore.jobs.parent_params import sweep_children
from bmcore.jobs.parents.finish import fail_parent, finish_parent, list_children
from bmcore.jobs.parents.folds import crossval_children
from bmcore.jobs.parents.runs import start_parent_run
from bmcore.jobs.queue import PARENT_STEPS, send_parent_step
from bmcore.jobs.search import get_job, is_cancel_requested
from bmcore.jobs.train_params import split_internal

RECHECK_SECONDS = 60
# A child written but not yet sent; the start step sends these once every sibling exists.
PENDING_MESSAGE = "written; queued once all its siblings exist"


def notify_parent(job_id: str) -> None:
    """After job ``job_id`` ended: record its parent's progress and, once every sibling has ended too,
    send the parent's ``check`` step. Nothing for a job without a running parent."""
    with session_scope() as session:
        child = session.get(Job, job_id)
        if child is None or child.parent_id is None or child.status not in FINISHED_STATUSES:
            return
        parent = session.get(Job, child.parent_id)
        if parent is None or parent.status != "running" or not is_parent_spec(parent.type, parent.params):
            return
        parent_id, parent_type = parent.id, parent.type
        counts = dict(
            session.execute(
                select(Job.status, func.count()).where(Job.parent_id == parent_id).group_by(Job.status)
            ).all()
        )
        total = sum(counts.values())
        done = sum(n for status, n in counts.items() if status in FINISHED_STATUSES)
        update_progress(session, parent_id, done / total, f"{done}/{total} children finished")
    if done == total:
        send_parent_step(parent_id, parent_type, "check")


def advance(job_id: str, step: str = "start", worker_host: str | None = None) -> str | None:
    """Run one step of a parent job (see :mod:`bmcore.jobs.parents`); its status, None if nothing to do."""
    if step not in PARENT_STEPS:
        raise ValueError(f"unknown parent step {step!r}; expected one of {', '.join(PARENT_STEPS)}")
    with session_scope() as session:
        job = get_job(session, job_id)
        status, job_type, params = job.status, job.type, dict(job.params)
    if status in FINISHED_STATUSES or job_type not in PARENT_TYPES or not is_parent_spec(job_type, params):
        return None
    if step == "start":
        if status == "queued":
            with session_scope() as session:
                if claim_job(session, job_id, worker_host or socket.gethostname()) is None:
                    return None
        try:
            fan_out(job_id)
        except Exception as exc:
            return fail_parent(job_id, exc, "could not start")
        send_parent_step(job_id, job_type, "recheck", countdown=RECHECK_SECONDS)
    elif status == "queued":
        return None
    elif step == "recheck":
        send_parent_step(job_id, job_type, "recheck", countdown=RECHECK_SECONDS)
    return check(job_id)


def fan_out(job_id: str) -> None:
    """Write every child row (reusing finished configurations), then queue the ones to train.

    Safe to repeat (a redelivered start step): children already written are found by ``config_hash``
    and only children still waiting to be sent (:data:`PENDING_MESSAGE`) are sent. The parent's internal
    params (``dataset``, ``champion_eligible``) pass on to every child unless the child sets its own (a
    cross-validation fold is never eligible), with its ``config_hash`` and the parent's MLflow run.
    """
    with session_scope() as session:
        parent = get_job(session, job_id)
        job_type, params, owner_id, run_id = (
            parent.type,
            dict(parent.params),
            parent.owner_id,
            parent.mlflow_run_id,
        )
    request, inherited = split_internal(params)
    planned = sweep_children(request) if job_type == "sweep" else crossval_children(request)
    if run_id is None:
        run_id = start_parent_run(job_id, job_type, params, len(planned))
    children = [split_internal(child) for _values, child in planned]
    children = [
        (client, inherited | internal | {"mlflow_parent_run_id": run_id}) for client, internal in children
    ]
    with session_scope() as session:
        reused = _write_children(session, job_id, owner_id, children)
        sent = _send_pending(session, job_id)
        statuses = session.scalars(select(Job.status).where(Job.parent_id == job_id)).all()
        done = sum(1 for status in statuses if status in FINISHED_STATUSES)
        message = f"fanned out {len(statuses)} children: {sent} queued, {reused} reused"
        update_progress(session, job_id, done / len(statuses) if statuses else 0.0, message)


def _write_children(
    session: Session, job_id: str, owner_id: int | None, planned: list[tuple[dict[str, Any], dict[str, Any]]]
) -> int:
    """Write the child rows not written yet (``(client params, internal params)`` each, validated as
    ``submit_job`` would), reused (already succeeded) or pending; how many were reused."""
    existing = session.scalars(select(Job.params).where(Job.parent_id == job_id)).all()
    existing_hashes = {(p or {}).get("config_hash") for p in existing}
    reused = 0
    for client, internal in planned:
        if internal["config_hash"] in existing_hashes or is_cancel_requested(session, job_id):
            continue
        child = validate_job("train", client, internal=internal)
        source = _reusable(session, owner_id, child["config_hash"])
        if source is not None:
            _write_reused(session, job_id, owner_id, child, source)
            reused += 1
        else:  # submit_job(send=False), with the pending mark in the same commit
            session.add(
                Job(
                    type="train",
                    params=child,
                    status="queued",
                    owner_id=owner_id,
                    parent_id=job_id,
                    message=PENDING_MESSAGE,
                )
            )
            session.commit()
    return reused


def _send_pending(session: Session, job_id: str) -> int:
    """Queue the children written but not yet sent, unless the parent is cancelled; returns how many."""
    pending = session.scalars(
        select(Job)
        .where(Job.parent_id == job_id, Job.status == "queued", Job.message == PENDING_MESSAGE)
        .order_by(Job.created_at, Job.id)
    ).all()
    sent = 0
    for row in pending:
        if is_cancel_requested(session, job_id):
            break
        try:
            send_job(session, row)
        except QueueUnavailable:
            continue  # the child is marked failed ("could not queue"); the table reports it
        row.message = "queued"
        session.commit()
        sent += 1
    return sent


def _reusable(session: Session, owner_id: int | None, digest: str) -> Job | None:
    """The newest succeeded train job of the same owner with this ``config_hash`` whose checkpoint still
    exists. Another user's job is never reused, whatever hash its row carries (clients cannot send one)."""
    same_owner = Job.owner_id.is_(None) if owner_id is None else Job.owner_id == owner_id
    query = (
        select(Job)
        .where(
            Job.type == "train",
            Job.status == "succeeded",
            same_owner,
            Job.params["config_hash"].as_string() == digest,
        )
        .order_by(Job.finished_at.desc())
    )
    for job in session.scalars(query):
        if job.result is not None and Path(str(job.result.artifacts.get("checkpoint", ""))).is_file():
            return job
    return None


def _write_reused(
    session: Session, parent_id: str, owner_id: int | None, child: dict[str, Any], source: Job
) -> Job:
    """Write a child already succeeded (``child``: validated params), with a copy of ``source``'s Result
    and its MLflow run."""
    origin = source.result.metrics.get("reused_from") or source.id
    now = utcnow()
    row = Job(
        type="train",
        params=child,
        status="succeeded",
        progress=1.0,
        owner_id=owner_id,
        parent_id=parent_id,
        started_at=now,
        finished_at=now,
        heartbeat_at=now,
        mlflow_run_id=source.mlflow_run_id,
        message=f"reused the result of job {origin} (same config_hash); nothing trained",
    )
    session.add(row)
    session.flush()
    metrics = dict(source.result.metrics) | {"reused_from": origin}
    session.add(Result(job_id=row.id, metrics=metrics, artifacts=dict(source.result.artifacts)))
    session.add(JobEvent(job_id=row.id, level="info", message=row.message))
    session.commit()
    return row


def check(job_id: str) -> str | None:
    """Count the children, pass on a cancel, record progress; aggregate and end the parent once all ended."""
    with session_scope() as session:
        parent = get_job(session, job_id)
        if parent.status != "running":
            return None
        cancel = parent.cancel_requested
        children = list_children(session, job_id)
        if cancel:
            for child in children:
                if child.status not in FINISHED_STATUSES and not child.cancel_requested:
                    cancel_job(session, child.id)
            children = list_children(session, job_id)
        done = sum(1 for child in children if child.status in FINISHED_STATUSES)
        running = sum(1 for child in children if child.status == "running")
        total, progress = len(children), parent.progress
        if total and done < total and abs(done / total - progress) > 1e-9:
            update_progress(
                session, job_id, done / total, f"{done}/{total} children finished, {running} running"
            )
    if done == total and (total or cancel):
        return finish_parent(job_id)
    return "running"
