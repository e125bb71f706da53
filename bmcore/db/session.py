"""Engines, sessions and the schema: one engine per database URL, sessions that commit or roll back, and
``init_db``, which upgrades a database to the newest Alembic revision of ``migrations/``.

``Base.metadata.create_all`` is not used outside throwaway experiments.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from bmcore.config import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


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


def alembic_config(url: str | None = None) -> Config:
    """An ``alembic.config.Config`` for this repository's ``migrations/``, independent of the cwd."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolates '%': escape it (URL-encoded passwords contain it).
    config.set_main_option("sqlalchemy.url", _resolve_url(url).replace("%", "%%"))
    return config


def init_db(url: str | None = None) -> None:
    """Create or upgrade the schema at ``url`` (default: settings) to the newest Alembic revision."""
    command.upgrade(alembic_config(url), "head")
