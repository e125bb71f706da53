"""Fixtures of the job-service tests (bmcore.jobs): a session on a migrated database, a Redis client.

db_session    a session on ``migrated_db_url`` (SQLite and PostgreSQL)
redis_client  a client of ``redis_test_url`` (the dedicated, flushed test database)
"""

from __future__ import annotations

import pytest
import redis

from bmcore.db import session_factory


@pytest.fixture
def db_session(migrated_db_url):
    with session_factory(migrated_db_url)() as session:
        yield session


@pytest.fixture
def redis_client(redis_test_url):
    client = redis.Redis.from_url(redis_test_url)
    yield client
    client.close()
