"""Database models and sessions, shared by the web app, the worker and ``migrations/env.py``.

Torch-free on purpose: importing this package must stay cheap for the web process.

* :mod:`~bmcore.db.models`: the tables (users, tokens, patients, studies, jobs, events, results);
* :mod:`~bmcore.db.session`: engines, sessions and ``init_db`` (the schema is owned by Alembic).

Everything is re-exported here: callers write ``from bmcore.db import Job, session_scope``.
"""

from __future__ import annotations

from bmcore.db.models import (
    EVENT_LEVELS,
    FINISHED_STATUSES,
    JOB_STATUSES,
    JOB_TYPES,
    NAMING_CONVENTION,
    ApiToken,
    Base,
    Job,
    JobEvent,
    Patient,
    Result,
    Study,
    User,
    UTCDateTime,
    new_job_id,
    utcnow,
)
from bmcore.db.session import (
    MIGRATIONS_DIR,
    SQLITE_BUSY_TIMEOUT_MS,
    alembic_config,
    dispose_engines,
    init_db,
    make_engine,
    session_factory,
    session_scope,
)

__all__ = [
    "EVENT_LEVELS",
    "FINISHED_STATUSES",
    "JOB_STATUSES",
    "JOB_TYPES",
    "MIGRATIONS_DIR",
    "NAMING_CONVENTION",
    "SQLITE_BUSY_TIMEOUT_MS",
    "ApiToken",
    "Base",
    "Job",
    "JobEvent",
    "Patient",
    "Result",
    "Study",
    "UTCDateTime",
    "User",
    "alembic_config",
    "dispose_engines",
    "init_db",
    "make_engine",
    "new_job_id",
    "session_factory",
    "session_scope",
    "utcnow",
]
