"""The per-user limit of queued and running jobs (bmcore.jobs.lifecycle.check_quota), on SQLite and
PostgreSQL: top-level jobs of a non-admin count, children and admins do not, and concurrent submissions of
one user never get past it."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from bmcore.accounts import create_user
from bmcore.config import get_settings
from bmcore.db import Job, session_factory
from bmcore.jobs.errors import JobQuotaExceeded
from bmcore.jobs.lifecycle import cancel_job, claim_job, finish_job, submit_job

DATA = "/data/cohort"
LIMIT = 3


@pytest.fixture
def limit_of_three(migrated_db_url, monkeypatch):
    monkeypatch.setenv("BMSEG_MAX_ACTIVE_JOBS_PER_USER", str(LIMIT))
    get_settings.cache_clear()
    yield LIMIT
    get_settings.cache_clear()


@pytest.fixture
def people(db_session):
    alice = create_user(db_session, "alice@example.org", "correct-horse-battery")
    bob = create_user(db_session, "bob@example.org", "correct-horse-battery")
    root = create_user(db_session, "root@example.org", "correct-horse-battery", is_admin=True)
    return alice.id, bob.id, root.id


def _train(session, owner_id, **kwargs) -> Job:
    return submit_job(session, "train", {"data": DATA, "epochs": 1}, owner_id=owner_id, send=False, **kwargs)


def _rows(session, owner_id) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Job).where(Job.owner_id == owner_id))


def test_a_user_past_the_limit_is_refused_and_nothing_is_written(limit_of_three, db_session, people):
    alice, bob, root = people
    first, second, _third = (_train(db_session, alice) for _ in range(LIMIT))
    with pytest.raises(JobQuotaExceeded) as caught:
        _train(db_session, alice)
    assert caught.value.limit == LIMIT and caught.value.retry_after_s > 0
    assert str(caught.value) == (
        "you already have 3 queued or running jobs, the most allowed per user (3); "
        "wait for one to finish or cancel one, then submit again"
    )
    assert _rows(db_session, alice) == LIMIT

    _train(db_session, bob)  # another user has a limit of their own
    for _ in range(LIMIT + 2):  # admins and server-side submissions without an owner are not limited
        _train(db_session, root)
        _train(db_session, None)

    claim_job(db_session, first.id, "test")  # running still counts
    with pytest.raises(JobQuotaExceeded):
        _train(db_session, alice)
    cancel_job(db_session, second.id)
    _train(db_session, alice)
    finish_job(db_session, first.id, "succeeded")
    _train(db_session, alice)
    with pytest.raises(JobQuotaExceeded):
        _train(db_session, alice)
    assert _rows(db_session, alice) == LIMIT + 2


def test_children_of_a_parent_are_not_counted_nor_refused(limit_of_three, db_session, people):
    alice, _bob, _root = people
    parent = submit_job(db_session, "sweep", {}, owner_id=alice, send=False)
    children = [_train(db_session, alice, parent_id=parent.id) for _ in range(LIMIT + 2)]
    assert all(child.status == "queued" for child in children)
    _train(db_session, alice)
    _train(db_session, alice)  # the parent and these two: the limit
    with pytest.raises(JobQuotaExceeded):
        _train(db_session, alice)


def test_concurrent_submissions_of_one_user_stop_at_the_limit(limit_of_three, migrated_db_url, people):
    alice, _bob, _root = people
    threads_count = 8
    start = threading.Barrier(threads_count)
    outcomes: list[str] = []
    lock = threading.Lock()

    def submit() -> None:
        with session_factory(migrated_db_url)() as session:
            start.wait()
            try:
                _train(session, alice)
                outcome = "accepted"
            except JobQuotaExceeded:
                outcome = "refused"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=submit) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["accepted"] * LIMIT + ["refused"] * (threads_count - LIMIT)
    with session_factory(migrated_db_url)() as session:
        assert _rows(session, alice) == LIMIT
