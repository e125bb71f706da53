"""Database models and sessions, shared by the web app, the worker and ``migrations/env.py``.

Torch-free on purpose: importing this package must stay cheap for the web process.

* :mod:`~bmcore.db.base`: the declarative base, ``UTCDateTime`` and the constraint naming convention;
* :mod:`~bmcore.db.users`: users with a role, groups, API tokens, dashboard sessions;
* :mod:`~bmcore.db.models`: patients, studies, jobs, events, results;
* :mod:`~bmcore.db.governance`: registered data sets and the record of registry alias moves;
* :mod:`~bmcore.db.session`: engines, sessions and ``init_db`` (the schema is owned by Alembic).

Everything is re-exported here: callers write ``from bmcore.db import Job, session_scope``.
"""

from __future__ import annotations

from bmcore.db.base import NAMING_CONVENTION, Base, UTCDateTime, new_job_id, utcnow
from bmcore.db.governance import AliasMove, Dataset
from bmcore.db.models import (
    EVENT_LEVELS,
    FINISHED_STATUSES,
    JOB_STATUSES,
    JOB_TYPES,
    Job,
    JobEvent,
    Patient,
    Result,
    Study,
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
from bmcore.db.users import DEFAULT_ROLE, ROLES, ApiToken, Group, User, WebSession, group_members

__all__ = [
    "DEFAULT_ROLE",
    "EVENT_LEVELS",
    "FINISHED_STATUSES",
    "JOB_STATUSES",
    "JOB_TYPES",
    "MIGRATIONS_DIR",
    "NAMING_CONVENTION",
    "ROLES",
    "SQLITE_BUSY_TIMEOUT_MS",
    "AliasMove",
    "ApiToken",
    "Base",
    "Dataset",
    "Group",
    "Job",
    "JobEvent",
    "Patient",
    "Result",
    "Study",
    "UTCDateTime",
    "User",
    "WebSession",
    "alembic_config",
    "dispose_engines",
    "group_members",
    "init_db",
    "make_engine",
    "new_job_id",
    "session_factory",
    "session_scope",
    "utcnow",
]
