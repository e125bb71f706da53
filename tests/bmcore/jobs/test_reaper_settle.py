"""Settling an attempt from outside the job (bmcore.jobs.reaper), as a worker does when its job process
(bmcore.jobs.supervisor) dies or is stopped at the time limit: on SQLite and PostgreSQL, real Redis.

* :func:`fail_attempt`: the attempt fails once, with one error event; a finished row or another attempt
  is left alone;
* :func:`settle_crashed_attempt`: a dead job process's job is re-queued like a lost worker's (its task
  sent again), failed with the exit signal as the reason once its attempts are spent, cancelled when a
  cancel was pending; one that died before claiming fails a still-queued job.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from bmcore.db import Job, JobEvent, utcnow
from bmcore.jobs.lifecycle import claim_job
from bmcore.jobs.reaper import describe_exit, fail_attempt, settle_crashed_attempt

LIMIT = "exceeded the time limit of 4 s (BMSEG_MAX_JOB_SECONDS)"


def a_job(session, status: str = "running", attempts: int = 1, max_attempts: int = 3, **fields) -> str:
    now = utcnow()
    job = Job(
        type="train",
        params={"data": "/d"},
        status=status,
        attempts=attempts,
        max_attempts=max_attempts,
        worker_host="gpu-host",
        started_at=now - timedelta(seconds=5),
        heartbeat_at=now,
        message=status,
        **fields,
    )
    session.add(job)
    session.commit()
    return job.id


def row(session, job_id: str) -> Job:
    session.expire_all()
    return session.get(Job, job_id)


def events(session, job_id: str) -> list[tuple[str, str]]:
    query = select(JobEvent.level, JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    return [tuple(r) for r in session.execute(query)]


def queued_job_ids(client, queue: str = "gpu") -> list[str]:
    return [
        json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0] for raw in client.lrange(queue, 0, -1)
    ]


def test_a_timed_out_attempt_fails_once_with_the_reason(db_session):
    job_id = a_job(db_session)

    assert fail_attempt(job_id, 1, LIMIT) == "failed"
    assert fail_attempt(job_id, 1, LIMIT) == "failed"  # a second settlement changes nothing
    job = row(db_session, job_id)
    assert (job.status, job.error, job.message) == ("failed", LIMIT, f"failed: {LIMIT}")
    assert job.finished_at is not None and job.attempts == 1
    assert events(db_session, job_id) == [("error", f"failed: {LIMIT}")]


@pytest.mark.parametrize(
    ("status", "attempts", "settled_attempt"),
    [("succeeded", 1, 1), ("cancelled", 1, 1), ("running", 2, 1), ("queued", 1, 1)],
    ids=["finished meanwhile", "cancelled meanwhile", "another attempt", "re-queued meanwhile"],
)
def test_fail_attempt_leaves_a_row_that_moved_on_alone(db_session, status, attempts, settled_attempt):
    job_id = a_job(db_session, status=status, attempts=attempts)

    assert fail_attempt(job_id, settled_attempt, LIMIT) == status
    job = row(db_session, job_id)
    assert (job.status, job.attempts, job.error) == (status, attempts, None)
    assert events(db_session, job_id) == []


def test_a_job_process_dead_before_claiming_fails_only_a_queued_job(db_session):
    queued, running = a_job(db_session, status="queued", attempts=0), a_job(db_session)

    assert settle_crashed_attempt(queued, None, "gpu-host", 1) == "failed"
    assert settle_crashed_attempt(running, None, "gpu-host", 1) == "running"  # claimed: the reaper's
    error = "job process on gpu-host died before the job started: exit code 1"
    assert (row(db_session, queued).status, row(db_session, queued).error) == ("failed", error)
    assert events(db_session, queued) == [("error", f"failed: {error}")]


def test_a_crashed_attempt_is_requeued_then_failed_once_its_attempts_are_spent(db_session, redis_client):
    job_id = a_job(db_session, max_attempts=2)

    assert settle_crashed_attempt(job_id, 1, "gpu-host", -9) == "queued"
    reason = "job process on gpu-host died: killed by signal 9 (SIGKILL) (attempt 1 of 2)"
    assert events(db_session, job_id) == [("warning", f"re-queued: {reason}")]
    assert queued_job_ids(redis_client) == [job_id]
    claimed = claim_job(db_session, job_id, "gpu-host")
    assert (claimed.status, claimed.attempts) == ("running", 2)

    assert settle_crashed_attempt(job_id, 2, "gpu-host", -11) == "failed"
    error = "job process on gpu-host died: killed by signal 11 (SIGSEGV) (attempt 2 of 2)"
    error += "; gave up after 2 attempts"
    job = row(db_session, job_id)
    assert (job.status, job.error, job.attempts) == ("failed", error, 2)
    assert [e for e in events(db_session, job_id) if e[0] == "error"] == [("error", f"failed: {error}")]
    assert queued_job_ids(redis_client) == [job_id]  # only the one re-queue


def test_a_crashed_attempt_with_a_pending_cancel_is_cancelled(db_session, redis_client):
    job_id = a_job(db_session, cancel_requested=True)

    assert settle_crashed_attempt(job_id, 1, "gpu-host", -9) == "cancelled"
    assert row(db_session, job_id).finished_at is not None
    assert queued_job_ids(redis_client) == []


@pytest.mark.parametrize(
    ("exitcode", "described"),
    [(-9, "killed by signal 9 (SIGKILL)"), (-15, "killed by signal 15 (SIGTERM)"), (3, "exit code 3")],
)
def test_an_exit_is_described_in_words(exitcode, described):
    assert describe_exit(exitcode) == described
