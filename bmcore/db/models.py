"""The clinical and job tables: patients and studies, jobs with their events and results.

The job row is the truth about a job (docs/design.md §6); Celery's result backend is only a courier.
Users, groups and keys live in :mod:`bmcore.db.users`, data sets and alias moves in
:mod:`bmcore.db.governance`; the shared base and the UTC timestamp type in :mod:`bmcore.db.base`.
The schema itself is owned by Alembic (``migrations/``, see :mod:`bmcore.db.session`).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from bmcore.db.base import Base, UTCDateTime, new_job_id, utcnow

if TYPE_CHECKING:
    from bmcore.db.users import Group

JOB_TYPES = ("train", "evaluate", "segment", "sweep", "crossval", "ingest")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
EVENT_LEVELS = ("debug", "info", "warning", "error")


class Patient(Base):
    """A patient, known only by a pseudonym (e.g. the 6-digit UCSF-BMSR number)."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("group_id", "pseudonym"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(64))
    # The group that owns the patient; a pseudonym is unique within its group only (docs/permissions.md).
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="RESTRICT"), index=True)
    primary_cancer: Mapped[str | None] = mapped_column(String(100), nullable=True)
    clinical: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")
    group: Mapped[Group] = relationship()

    def __repr__(self) -> str:
        return f"Patient(id={self.id!r}, pseudonym={self.pseudonym!r})"


class Study(Base):
    """One imaging session of a patient: four co-registered volumes and perhaps a label."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    study_uid: Mapped[str] = mapped_column(String(128), unique=True)
    visit: Mapped[str | None] = mapped_column(String(32), nullable=True)
    directory: Mapped[str] = mapped_column(String(1024))
    files: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # modality -> path
    label_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    shape: Mapped[list[int]] = mapped_column(JSON, default=list)
    spacing: Mapped[list[float]] = mapped_column(JSON, default=list)
    checksum: Mapped[str] = mapped_column(String(64))  # sha256 hex
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="studies")

    def __repr__(self) -> str:
        return f"Study(id={self.id!r}, study_uid={self.study_uid!r})"


class Job(Base):
    """A unit of queued work; the row is the truth about its state."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created_at", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    type: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    message: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, default=3, server_default=text("3"))
    worker_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"), nullable=True)

    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobEvent.id"
    )
    result: Mapped[Result | None] = relationship(back_populates="job", cascade="all, delete-orphan")

    @validates("type")
    def _check_type(self, _key: str, value: str) -> str:
        if value not in JOB_TYPES:
            raise ValueError(f"unknown job type {value!r}; expected one of {', '.join(JOB_TYPES)}")
        return value

    @validates("status")
    def _check_status(self, _key: str, value: str) -> str:
        if value not in JOB_STATUSES:
            raise ValueError(f"unknown job status {value!r}; expected one of {', '.join(JOB_STATUSES)}")
        return value

    @validates("progress")
    def _check_progress(self, _key: str, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"job progress must lie in [0, 1], got {value!r}")
        return value

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, type={self.type!r}, status={self.status!r})"


class JobEvent(Base):
    """One line of a job's log tail."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="info")
    message: Mapped[str] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="events")

    @validates("level")
    def _check_level(self, _key: str, value: str) -> str:
        if value not in EVENT_LEVELS:
            raise ValueError(f"unknown event level {value!r}; expected one of {', '.join(EVENT_LEVELS)}")
        return value


class Result(Base):
    """What a finished job produced; at most one per job, so a task run twice cannot write two."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    artifacts: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # name -> path
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    job: Mapped[Job] = relationship(back_populates="result")
