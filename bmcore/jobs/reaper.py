"""Lost workers: a running job heartbeats, and a reaper re-queues (or fails) the jobs whose worker vanished.

With the solo pool and late acks, a worker killed outright (SIGKILL, OOM, power) leaves its message
unacknowledged in Redis, and Redis gives it back only after the visibility timeout — two days here
(docs/design.md §6). So the job row, not the broker, notices the loss:

* :class:`Heartbeat` — while a job runs, a background thread touches ``jobs.heartbeat_at`` every
  ``settings.heartbeat_seconds`` (only while the row is still ``running`` in this attempt);
* :func:`reap_stale_jobs` — a ``running`` job silent for ``settings.stale_after_seconds`` is queued again
  (``claim_job`` counts the new delivery as the next attempt), failed with the reason once its attempts
  are spent, or marked cancelled when a cancel was pending. Each change is one conditional ``UPDATE``,
  so two reapers (one per worker) never both re-queue a job;
* :func:`start_reaper` — the loop every worker runs in a daemon thread (``services/worker/app.py``);
* :func:`settle_crashed_attempt`, :func:`fail_attempt` — the same decisions, taken at once by a worker
  whose job process (:mod:`bmcore.jobs.supervisor`) died or was stopped at the job's time limit.

A late duplicate of the lost message is harmless: ``claim_job`` leaves a finished job alone. A training
job resumes from its ``last.pt`` and MLflow run (``bmcore.jobs.runner.run_train``); when the lost attempt
had already registered the model, :func:`registered_version` lets the next one finish without
registering a second version. Torch-free.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from bmcore import tracking
from bmcore.config import get_settings
from bmcore.db import Job, JobEvent, session_scope, utcnow
from bmcore.jobs.queue import TASK_NAMES, send_job_task
from bmcore.tracking.registry import version_warnings

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ heartbeat


class Heartbeat:
    """``with Heartbeat(job_id):`` touches the job's ``heartbeat_at`` from a thread until the block ends.

    Only the attempt that was running on entry is kept alive: once the row is finished, re-queued or
    claimed again, the beats stop changing it. A failed beat (database busy) is logged and retried at
    the next interval; the stale threshold spans several intervals.
    """

    def __init__(self, job_id: str, seconds: float | None = None) -> None:
        self.job_id = job_id
        self.seconds = float(seconds if seconds is not None else get_settings().heartbeat_seconds)
        self.attempt: int | None = None
        self.beats = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        """Touch ``heartbeat_at`` now; False when the row is no longer this attempt's running job."""
        with session_scope() as session:
            done = session.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.status == "running", Job.attempts == self.attempt)
                .values(heartbeat_at=utcnow())
                .execution_options(synchronize_session=False)
            )
        self.beats += 1
        return done.rowcount == 1

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                if not self.beat():
                    log.warning("job %s is no longer running as attempt %s here", self.job_id, self.attempt)
            except Exception as exc:  # keep beating: one failed write must not end the job
                log.warning("heartbeat of job %s failed: %s: %s", self.job_id, type(exc).__name__, exc)

    def __enter__(self) -> Heartbeat:
        with session_scope() as session:
            self.attempt = session.scalar(select(Job.attempts).where(Job.id == self.job_id))
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.job_id[:8]}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.seconds))


# ------------------------------------------------------------------------------------------ reaper


@dataclass(frozen=True)
class Reaped:
    """What the reaper did with one job: ``requeued``, ``failed``, ``cancelled`` or ``error``."""

    job_id: str
    action: str
    reason: str


def _last_seen(job: Job) -> datetime:
    return job.heartbeat_at or job.started_at or job.created_at


def stale_jobs(session: Session, stale_after_seconds: float, now: datetime | None = None) -> list[Job]:
    """Running jobs of a worker task type whose last heartbeat is older than ``stale_after_seconds``."""
    cutoff = (now or utcnow()) - timedelta(seconds=stale_after_seconds)
    last_seen = func.coalesce(Job.heartbeat_at, Job.started_at, Job.created_at)
    query = (
        select(Job)
        .where(Job.status == "running", Job.type.in_(tuple(TASK_NAMES)), last_seen < cutoff)
        .order_by(Job.created_at, Job.id)
    )
    jobs = list(session.scalars(query))
    session.commit()
    return jobs


def reap_stale_jobs(
    session: Session, stale_after_seconds: float | None = None, now: datetime | None = None
) -> list[Reaped]:
    """Re-queue, fail or cancel every running job whose worker stopped heartbeating; returns what was done.

    Safe to run from several workers at once: a job changes only if it is still running, in the same
    attempt and still silent when the ``UPDATE`` runs. The job is re-queued in the database first and
    its task sent after the commit; when the broker refuses, the row goes back to ``running`` (still
    stale) and the next pass tries again, so a job is neither lost nor queued twice.
    """
    stale_after = float(
        stale_after_seconds if stale_after_seconds is not None else get_settings().stale_after_seconds
    )
    now = now or utcnow()
    done = []
    for job in stale_jobs(session, stale_after, now):
        done.append(reap_job(session, job, stale_after, now))
    return [entry for entry in done if entry is not None]


def reap_job(session: Session, job: Job, stale_after: float, now: datetime) -> Reaped | None:
    """Re-queue, fail or cancel one stale job (see :func:`reap_stale_jobs`); None if it changed meanwhile."""
    silent = (now - _last_seen(job)).total_seconds()
    reason = (
        f"worker {job.worker_host or 'unknown'} lost: no heartbeat for {silent:.0f} s "
        f"(attempt {job.attempts} of {job.max_attempts})"
    )
    cutoff = now - timedelta(seconds=stale_after)
    still_stale = [
        Job.id == job.id,
        Job.status == "running",
        Job.attempts == job.attempts,
        or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
    ]
    return settle_lost_attempt(session, job, reason, still_stale, now)


def settle_lost_attempt(
    session: Session, job: Job, reason: str, where: list[Any], now: datetime | None = None
) -> Reaped | None:
    """End an attempt that stopped without recording its outcome (its worker or job process died):
    cancelled when a cancel was pending, failed with ``reason`` once its attempts are spent, else queued
    again, its task sent after the commit. One conditional ``UPDATE`` (``where``: still this attempt);
    None when the row changed meanwhile. Used by the reaper and by :mod:`bmcore.jobs.supervisor`."""
    now = now or utcnow()
    if job.cancel_requested:
        action, level = "cancelled", "info"
        values = {"status": "cancelled", "finished_at": now, "message": f"cancelled: {reason}"}
    elif job.attempts >= job.max_attempts:
        action, level = "failed", "error"
        error = f"{reason}; gave up after {job.max_attempts} attempts"
        values = {"status": "failed", "finished_at": now, "error": error, "message": f"failed: {error}"}
    else:
        action, level = "requeued", "warning"
        values = {"status": "queued", "message": f"re-queued: {reason}"}
    changed = session.execute(
        update(Job).where(*where).values(**values).execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:  # it beat, finished or another reaper took it meanwhile
        session.rollback()
        return None
    session.add(JobEvent(job_id=job.id, level=level, message=values["message"]))
    session.commit()
    log.warning("job %s %s: %s", job.id, action, reason)
    if action != "requeued":
        return Reaped(job.id, action, reason)

    try:
        send_job_task(TASK_NAMES[job.type], job.id)
    except Exception as exc:
        problem = f"could not re-queue: {type(exc).__name__}: {exc}".strip().splitlines()[0]
        session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == "queued", Job.attempts == job.attempts)
            .values(status="running", message=problem)
            .execution_options(synchronize_session=False)
        )
        session.add(JobEvent(job_id=job.id, level="warning", message=problem))
        session.commit()
        log.warning("job %s %s", job.id, problem)
        return Reaped(job.id, "error", problem)
    return Reaped(job.id, action, reason)


def describe_exit(exitcode: int | None) -> str:
    """``killed by signal 9 (SIGKILL)``, ``exit code 3`` or ``no exit code``."""
    if exitcode is None:
        return "no exit code"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-exitcode} ({name})"
    return f"exit code {exitcode}"


def fail_attempt(job_id: str, attempt: int | None, error: str) -> str | None:
    """Fail attempt ``attempt`` of a job with ``error`` (and an error event) unless the row moved on
    (finished, or another attempt); ``attempt`` None: only a job still queued. Returns the status."""
    now = utcnow()
    where = [Job.id == job_id, Job.status == "queued"]
    if attempt is not None:
        where = [Job.id == job_id, Job.status == "running", Job.attempts == attempt]
    values = {"status": "failed", "finished_at": now, "heartbeat_at": now, "error": error}
    with session_scope() as session:
        changed = session.execute(
            update(Job)
            .where(*where)
            .values(**values, message=f"failed: {error}")
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:
            session.rollback()
            job = session.get(Job, job_id)
            return job.status if job is not None else None
        session.add(JobEvent(job_id=job_id, level="error", message=f"failed: {error}"))
        session.commit()
    return "failed"


def settle_crashed_attempt(
    job_id: str, attempt: int | None, worker_host: str, exitcode: int | None
) -> str | None:
    """Settle a job whose job process died (``exitcode``) after claiming attempt ``attempt`` (like a lost
    worker: re-queued, failed or cancelled), or before claiming it (a queued job is failed); its status."""
    how = describe_exit(exitcode)
    log.warning("the job process died running job %s: %s", job_id, how)
    if attempt is None:  # died before claiming: nothing ran; a row already claimed is the reaper's
        return fail_attempt(job_id, None, f"job process on {worker_host} died before the job started: {how}")
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != "running" or job.attempts != attempt:
            return job.status if job is not None else None
        reason = f"job process on {worker_host} died: {how} (attempt {attempt} of {job.max_attempts})"
        where = [Job.id == job_id, Job.status == "running", Job.attempts == attempt]
        settle_lost_attempt(session, job, reason, where)
        session.expire_all()
        job = session.get(Job, job_id)
        return job.status if job is not None else None


def start_reaper(interval_seconds: float | None = None) -> threading.Event:
    """Run :func:`reap_stale_jobs` now and every ``interval_seconds`` in a daemon thread; set the
    returned event to stop it."""
    settings = get_settings()
    interval = float(interval_seconds if interval_seconds is not None else settings.reap_interval_seconds)
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                with session_scope() as session:
                    reap_stale_jobs(session, settings.stale_after_seconds)
            except Exception as exc:  # the database or broker is down: try again next time
                log.warning("reaper pass failed: %s: %s", type(exc).__name__, exc)
            if stop.wait(interval):
                return

    threading.Thread(target=loop, name="bmseg-reaper", daemon=True).start()
    return stop


# ------------------------------------------------------------------------------------------ registry


def registered_version(run_id: str) -> dict[str, Any] | None:
    """The registry version an earlier attempt made from MLflow run ``run_id`` (``{"name", "version",
    "champion", "warnings"}`` as ``tracked_train`` reports it), or None; the run is marked finished."""
    tracking.configure()
    from mlflow import MlflowClient  # lazy: MLflow only when a lost attempt is looked up, after configure()

    client = MlflowClient()
    versions = [
        version
        for version in client.search_model_versions(f"run_id = '{run_id}'")
        if version.name.startswith("bmseg-")
    ]
    if not versions:
        return None
    version = min(versions, key=lambda v: int(v.version))
    aliases = client.get_registered_model(version.name).aliases or {}
    tracking.end_run(run_id, "FINISHED")
    return {
        "name": version.name,
        "version": int(version.version),
        "champion": str(aliases.get(tracking.CHAMPION_ALIAS)) == str(version.version),
        "warnings": version_warnings(dict(version.tags)),  # as tracked_train lists them
    }
