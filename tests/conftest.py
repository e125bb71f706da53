"""Shared pytest fixtures. Each section belongs to one part of the code base; add yours below."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# =====================================================================================================
# Database and queue fixtures (bmcore.db, bmcore.jobs.lifecycle, bmcore.jobs.queue)
#
#   sqlite_url        a fresh SQLite file URL under tmp_path (empty: no schema)
#   postgres_url      session-wide: a fresh, uniquely named PostgreSQL database, dropped at the end
#                     (admin URL: BMSEG_TEST_POSTGRES_ADMIN_URL, default postgres@127.0.0.1:5432/test;
#                     skipped when unreachable, unless BMSEG_REQUIRE_POSTGRES=1, which fails instead)
#   migrated_db_url   parametrised over sqlite and postgres: the schema at Alembic head, empty tables;
#                     BMSEG_DATABASE_URL points at it for the test (settings cache cleared)
#   redis_test_url    a dedicated Redis database (BMSEG_TEST_REDIS_URL, default db 13), flushed before
#                     and after; BMSEG_REDIS_URL points at it for the test
# =====================================================================================================

POSTGRES_ADMIN_URLS = (
    [os.environ["BMSEG_TEST_POSTGRES_ADMIN_URL"]]
    if os.environ.get("BMSEG_TEST_POSTGRES_ADMIN_URL")
    else ["postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test"]
)
REDIS_TEST_URL = os.environ.get("BMSEG_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def _unavailable(message: str) -> None:
    if os.environ.get("BMSEG_REQUIRE_POSTGRES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _use_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    from bmcore.config import get_settings

    monkeypatch.setenv(name, value)
    get_settings.cache_clear()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'bmseg.db'}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    admin, admin_url, errors = None, "", []
    for admin_url in POSTGRES_ADMIN_URLS:
        try:
            admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
            break
        except psycopg.OperationalError as exc:
            errors.append(f"{admin_url}: {str(exc).strip().splitlines()[0]}")
    if admin is None:
        _unavailable("PostgreSQL unreachable (" + "; ".join(errors) + "); set BMSEG_TEST_POSTGRES_ADMIN_URL")

    name = f"bmseg_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
            yield url.render_as_string(hide_password=False)
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _empty_postgres_tables(url: str) -> None:
    from sqlalchemy import text

    from bmcore.db import Base, dispose_engines, make_engine

    dispose_engines()
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            # Sessions a failed test left open would block TRUNCATE: end them first.
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def migrated_db_url(request, monkeypatch) -> Iterator[str]:
    from bmcore.config import get_settings
    from bmcore.db import init_db

    if request.param == "sqlite":
        url = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("postgres_url")
    init_db(url)
    _use_setting(monkeypatch, "BMSEG_DATABASE_URL", url)
    try:
        yield url
    finally:
        get_settings.cache_clear()
        if request.param == "postgres":
            _empty_postgres_tables(url)


@pytest.fixture
def redis_test_url(monkeypatch) -> Iterator[str]:
    import redis

    from bmcore.config import get_settings

    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"Redis unreachable at {REDIS_TEST_URL} ({exc}); set BMSEG_TEST_REDIS_URL")
    client.flushdb()
    _use_setting(monkeypatch, "BMSEG_REDIS_URL", REDIS_TEST_URL)
    try:
        yield REDIS_TEST_URL
    finally:
        get_settings.cache_clear()
        client.flushdb()
        client.close()


# ===================================== end of database and queue fixtures ============================


# =====================================================================================================
# Training fixtures
#
#   tiny_train        the smallest training settings that still run every part of the loop (64² slices,
#                     width 4, depth 2, no augmentation, 32 slices an epoch): a fresh dict per test,
#                     to pass as TrainConfig fields or as a train job's params
# =====================================================================================================

TINY_TRAIN = {
    "size": 64,
    "base_channels": 4,
    "depth": 2,
    "batch_size": 8,
    "num_workers": 0,
    "augment": False,
    "samples_per_epoch": 32,
}


@pytest.fixture
def tiny_train() -> dict:
    return dict(TINY_TRAIN)
