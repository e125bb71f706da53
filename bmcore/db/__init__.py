"""Database models and sessions, shared by the web app, the worker and ``migrations/env.py``.

Torch-free on purpose: importing this module must stay cheap for the web process.

The job row is the truth about a job (DESIGN.md §6); Celery's result backend is only a courier.
Every timestamp is timezone-aware UTC on every backend: SQLite stores naive UTC text and
``UTCDateTime`` attaches the zone again on the way out; PostgreSQL stores ``timestamptz``.

The schema is owned by Alembic (``migrations/``); ``init_db`` upgrades a database to the newest
revision. ``Base.metadata.create_all`` is not used outside throwaway experiments.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    create_engine,
    event,
    false,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
    validates,
)
from sqlalchemy.types import TypeDecorator

from bmcore.config import get_settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

JOB_TYPES = ("train", "evaluate", "segment", "sweep", "crossval")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
EVENT_LEVELS = ("debug", "info", "warning", "error")

SQLITE_BUSY_TIMEOUT_MS = 30_000

# Named constraints, so Alembic can drop and batch-alter them on SQLite as well.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def new_job_id() -> str:
    """A fresh job id: 32 lowercase hex digits (uuid4)."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always hands back aware UTC datetimes.

    Naive datetimes are refused on the way in: a naive local time stored as UTC is a silent bug.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} refused: use an aware UTC datetime (utcnow())"
            )
        value = value.astimezone(UTC)
        # SQLite keeps no zone: store naive UTC text, which also sorts chronologically.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, email={self.email!r})"


class ApiToken(Base):
    """A bearer token; only its sha256 hex digest is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    user: Mapped[User] = relationship(back_populates="tokens")

    def __repr__(self) -> str:
        return f"ApiToken(id={self.id!r}, user_id={self.user_id!r}, name={self.name!r})"


class Patient(Base):
    """A patient, known only by a pseudonym (e.g. the 6-digit UCSF-BMSR number)."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    primary_cancer: Mapped[str | None] = mapped_column(String(100), nullable=True)
    clinical: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")

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


# --- engines and sessions ---------------------------------------------------------------------------


def _resolve_url(url: str | None) -> str:
    return url if url is not None else get_settings().database_url


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (web) and one writer (worker) share the file; the busy timeout makes a
    # second writer wait instead of failing with "database is locked"; foreign keys as on PostgreSQL.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def make_engine(url: str | None = None, **engine_kwargs: Any) -> Engine:
    """An engine for ``url`` (default: ``settings.database_url``).

    ``postgresql://`` URLs use psycopg 3. SQLite files get their parent folder created,
    ``check_same_thread=False``, WAL journalling, a busy timeout and foreign-key enforcement.
    Extra keyword arguments go to ``sqlalchemy.create_engine``.
    """
    parsed = make_url(_resolve_url(url))
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        engine_kwargs.setdefault("pool_pre_ping", True)
        return create_engine(parsed, **engine_kwargs)

    if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"check_same_thread": False, **engine_kwargs.pop("connect_args", {})}
    engine = create_engine(parsed, connect_args=connect_args, **engine_kwargs)
    event.listen(engine, "connect", _on_sqlite_connect)
    return engine


_factories: dict[str, sessionmaker[Session]] = {}
_factories_lock = threading.Lock()


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    """The process-wide session factory for ``url`` (default: settings), one engine per URL.

    Sessions keep loaded attributes after commit (``expire_on_commit=False``) so rows returned by
    ``bmcore.jobs.lifecycle`` stay readable after their session closes.
    """
    resolved = _resolve_url(url)
    with _factories_lock:
        factory = _factories.get(resolved)
        if factory is None:
            factory = sessionmaker(bind=make_engine(resolved), expire_on_commit=False)
            _factories[resolved] = factory
        return factory


def dispose_engines() -> None:
    """Close every cached engine's connections and forget them (tests, or after a fork)."""
    with _factories_lock:
        for factory in _factories.values():
            engine = factory.kw["bind"]
            engine.dispose()
        _factories.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success, rolls back on error, and always closes."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# --- schema -----------------------------------------------------------------------------------------


def alembic_config(url: str | None = None) -> Config:
    """An ``alembic.config.Config`` for this repository's ``migrations/``, independent of the cwd."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolates '%': escape it (URL-encoded passwords contain it).
    config.set_main_option("sqlalchemy.url", _resolve_url(url).replace("%", "%%"))
    return config


def init_db(url: str | None = None) -> None:
    """Create or upgrade the schema at ``url`` (default: settings) to the newest Alembic revision."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")
