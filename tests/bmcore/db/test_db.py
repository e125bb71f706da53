"""Database models on a migrated SQLite file and a migrated PostgreSQL database."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, StatementError

from bmcore.db import (
    ApiToken,
    Group,
    Job,
    JobEvent,
    Patient,
    Result,
    Study,
    User,
    make_engine,
    session_factory,
    session_scope,
    utcnow,
)


@pytest.fixture
def db_session(migrated_db_url):
    with session_factory(migrated_db_url)() as session:
        yield session


def _fresh_session(url: str):
    """A second session, so values come from the database and not from the identity map."""
    return session_factory(url)()


def _study(patient: Patient, uid: str = "100101A") -> Study:
    return Study(
        patient=patient,
        study_uid=uid,
        visit="A",
        directory=f"/data/{uid}",
        files={"t1": f"/data/{uid}/{uid}_T1pre.nii.gz", "flair": f"/data/{uid}/{uid}_FLAIR.nii.gz"},
        label_path=None,
        shape=[240, 240, 155],
        spacing=[0.86, 0.86, 1.5],
        checksum=hashlib.sha256(b"volume").hexdigest(),
    )


def test_rows_and_relationships(db_session, migrated_db_url):
    user = User(email="ana@example.org", password_hash="x")
    token = ApiToken(user=user, name="cli", token_hash=hashlib.sha256(b"secret").hexdigest())
    patient = Patient(pseudonym="100101", primary_cancer="lung", group=Group(name="lab"))
    study = _study(patient)
    db_session.add_all([user, token, study])
    db_session.commit()
    job = Job(type="segment", params={"model": "models:/bmseg-unet@champion"}, study_id=study.id)
    db_session.add(job)
    db_session.commit()

    with _fresh_session(migrated_db_url) as other:
        stored = other.get(Job, job.id)
        assert len(stored.id) == 32 and int(stored.id, 16) >= 0
        assert (stored.status, stored.progress, stored.attempts, stored.max_attempts) == ("queued", 0.0, 0, 3)
        assert stored.cancel_requested is False and stored.message == "" and stored.error is None
        assert other.get(User, user.id).tokens[0].name == "cli"
        assert other.get(User, user.id).is_admin is False
        assert other.get(Patient, patient.id).studies[0].study_uid == "100101A"
        assert other.get(Patient, patient.id).clinical == {}


def test_json_round_trip(db_session, migrated_db_url):
    clinical = {"age": 61, "sex": "F", "lesions": [1, 2.5, None], "nested": {"ok": True, "note": "é ü"}}
    patient = Patient(pseudonym="BraTS-MET-00001", clinical=clinical, group=Group(name="lab"))
    study = _study(patient, "BraTS-MET-00001-000")
    job = Job(type="train", params={"arch": "unet", "epochs": 3, "lr": 1e-3, "modalities": ["t1", "t1c"]})
    db_session.add_all([patient, study, job])
    db_session.commit()
    db_session.add(Result(job_id=job.id, metrics={"dice": {"ET": 0.61, "WT": 0.8}}, artifacts={"ckpt": "/x"}))
    db_session.commit()

    with _fresh_session(migrated_db_url) as other:
        assert other.get(Patient, patient.id).clinical == clinical
        stored_study = other.get(Study, study.id)
        assert stored_study.files == study.files
        assert stored_study.shape == [240, 240, 155] and stored_study.spacing == [0.86, 0.86, 1.5]
        stored_job = other.get(Job, job.id)
        assert stored_job.params == job.params
        assert stored_job.result.metrics == {"dice": {"ET": 0.61, "WT": 0.8}}
        assert stored_job.result.artifacts == {"ckpt": "/x"}


def test_timestamps_are_aware_utc(db_session, migrated_db_url):
    paris = timezone(timedelta(hours=2))
    started = datetime(2026, 5, 1, 14, 30, 15, 123456, tzinfo=paris)
    job = Job(type="train", started_at=started)
    db_session.add(job)
    db_session.commit()
    db_session.add(JobEvent(job_id=job.id, message="hello"))
    db_session.commit()

    with _fresh_session(migrated_db_url) as other:
        stored = other.get(Job, job.id)
        for value in (stored.created_at, stored.started_at, stored.events[0].at):
            assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
        assert stored.started_at == started
        assert stored.started_at.hour == 12
        assert abs(utcnow() - stored.created_at) < timedelta(minutes=1)


def test_naive_datetime_is_refused(db_session):
    db_session.add(Job(type="train", started_at=datetime(2026, 1, 1, 12, 0)))
    with pytest.raises(StatementError, match="naive datetime"):
        db_session.commit()


def test_datetimes_sort_chronologically(db_session):
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for hours in (5, 1, 3):
        db_session.add(Job(type="train", created_at=base + timedelta(hours=hours)))
    db_session.commit()
    stored = db_session.scalars(select(Job.created_at).order_by(Job.created_at)).all()
    assert [value.hour for value in stored] == [1, 3, 5]


@pytest.mark.parametrize(
    "make_duplicates",
    [
        lambda lab: [User(email="a@b.c", password_hash="x"), User(email="a@b.c", password_hash="y")],
        lambda lab: [Patient(pseudonym="100101", group=lab), Patient(pseudonym="100101", group=lab)],
        lambda lab: [_study(Patient(pseudonym="1", group=lab)), _study(Patient(pseudonym="2", group=lab))],
        lambda lab: [
            ApiToken(user=User(email="u@b.c", password_hash="x"), name="a", token_hash="0" * 64),
            ApiToken(user=User(email="v@b.c", password_hash="x"), name="b", token_hash="0" * 64),
        ],
    ],
    ids=["user-email", "patient-pseudonym", "study-uid", "token-hash"],
)
def test_unique_constraints(db_session, make_duplicates):
    db_session.add_all(make_duplicates(Group(name="lab")))
    with pytest.raises(IntegrityError):
        db_session.commit()


def test_a_pseudonym_is_unique_per_group_only(db_session):
    """The same pseudonym in two groups is two patients (issue #16: one group's upload never attaches to
    another's patient)."""
    db_session.add_all([Patient(pseudonym="pat-a", group=Group(name=name)) for name in ("lab-a", "lab-b")])
    db_session.commit()
    rows = db_session.scalars(select(Patient).where(Patient.pseudonym == "pat-a")).all()
    assert sorted(p.group.name for p in rows) == ["lab-a", "lab-b"]


def test_a_patient_needs_a_group(db_session):
    db_session.add(Patient(pseudonym="orphan"))
    with pytest.raises(IntegrityError):
        db_session.commit()


def test_roles_are_validated():
    assert User(email="a@b.c", password_hash="x", is_admin=True).role == "admin"
    with pytest.raises(ValueError, match="unknown role"):
        User(email="a@b.c", password_hash="x", role="root")


def test_one_result_per_job(db_session, migrated_db_url):
    job = Job(type="evaluate")
    db_session.add(job)
    db_session.commit()
    db_session.add(Result(job_id=job.id, metrics={"dice": 0.5}))
    db_session.commit()
    db_session.add(Result(job_id=job.id, metrics={"dice": 0.6}))
    with pytest.raises(IntegrityError):
        db_session.commit()
    db_session.rollback()
    with _fresh_session(migrated_db_url) as other:
        assert other.scalars(select(Result.metrics).where(Result.job_id == job.id)).all() == [{"dice": 0.5}]


def test_foreign_keys_are_enforced(db_session):
    db_session.add(JobEvent(job_id="f" * 32, message="orphan"))
    with pytest.raises(IntegrityError):
        db_session.commit()


def test_deleting_a_job_deletes_its_events_and_result(db_session, migrated_db_url):
    job = Job(type="train")
    db_session.add(job)
    db_session.commit()
    db_session.add_all([JobEvent(job_id=job.id, message="x"), Result(job_id=job.id)])
    db_session.commit()
    with session_scope(migrated_db_url) as other:  # database-side ON DELETE CASCADE, not the ORM's
        other.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": job.id})
    with _fresh_session(migrated_db_url) as other:
        assert other.scalars(select(JobEvent)).all() == []
        assert other.scalars(select(Result)).all() == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "paint"}, "unknown job type"),
        ({"type": "train", "status": "sleeping"}, "unknown job status"),
        ({"type": "train", "progress": 1.5}, "progress"),
    ],
)
def test_job_fields_are_validated(fields, message):
    with pytest.raises(ValueError, match=message):
        Job(**fields)


def test_session_scope_commits_and_rolls_back(migrated_db_url):
    with session_scope(migrated_db_url) as session:
        session.add(Patient(pseudonym="kept", group=Group(name="lab")))
    with pytest.raises(RuntimeError), session_scope(migrated_db_url) as session:
        session.add(Patient(pseudonym="dropped", group=Group(name="other")))
        session.flush()
        raise RuntimeError("boom")
    with session_scope(migrated_db_url) as session:
        assert session.scalars(select(Patient.pseudonym)).all() == ["kept"]


def test_session_factory_is_cached_per_url(migrated_db_url):
    assert session_factory(migrated_db_url) is session_factory(migrated_db_url)
    assert session_factory() is session_factory(migrated_db_url)  # BMSEG_DATABASE_URL


def test_sqlite_engine_uses_wal_and_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'x.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
