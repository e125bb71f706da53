"""Alembic migrations: up, down and up again on SQLite and PostgreSQL; models and migrations agree."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, Table, inspect, text

from bmcore.db import Base, alembic_config, dispose_engines, init_db, make_engine

TABLES = {"users", "api_tokens", "patients", "studies", "jobs", "job_events", "results"} | {
    "groups",
    "group_members",
    "web_sessions",
    "datasets",
    "alias_moves",
}


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db_url(request) -> str:
    url = request.getfixturevalue(f"{request.param}_url")
    if request.param == "postgres":
        dispose_engines()
        command.downgrade(alembic_config(url), "base")  # the session-wide database may be at head
    return url


def _tables_and_revision(url: str) -> tuple[set[str], str | None]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            revision = MigrationContext.configure(connection).get_current_revision()
        return tables - {"alembic_version"}, revision
    finally:
        engine.dispose()


def _schema_differences(url: str, metadata: MetaData) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def test_one_head_revision():
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1


def test_upgrade_downgrade_upgrade(empty_db_url):
    head = ScriptDirectory.from_config(alembic_config(empty_db_url)).get_current_head()

    init_db(empty_db_url)
    assert _tables_and_revision(empty_db_url) == (TABLES, head)

    command.downgrade(alembic_config(empty_db_url), "base")
    assert _tables_and_revision(empty_db_url) == (set(), None)

    init_db(empty_db_url)
    assert _tables_and_revision(empty_db_url) == (TABLES, head)
    init_db(empty_db_url)  # upgrading a database at head is a no-op
    assert _tables_and_revision(empty_db_url) == (TABLES, head)


def test_models_match_migrations(empty_db_url):
    init_db(empty_db_url)
    assert _schema_differences(empty_db_url, Base.metadata) == []


def test_comparison_sees_a_difference(empty_db_url):
    """The check above is live: a model change the migrations lack shows up."""
    init_db(empty_db_url)
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    Table("extra", changed, Column("id", Integer, primary_key=True))
    differences = _schema_differences(empty_db_url, changed)
    assert [diff[0] for diff in differences] == ["add_table"]
    assert differences[0][1].name == "extra"


def test_init_db_does_not_depend_on_cwd(tmp_path, monkeypatch, sqlite_url):
    monkeypatch.chdir(tmp_path)
    init_db(sqlite_url)
    assert _tables_and_revision(sqlite_url)[0] == TABLES


def test_0002_gives_roles_and_groups_to_existing_rows(empty_db_url):
    """Admins stay admins, everyone else becomes a researcher; each patient goes to the personal group of
    its earliest study's owner (who becomes a member), or to ``default`` when no user owns its studies."""
    command.upgrade(alembic_config(empty_db_url), "0001")
    engine = make_engine(empty_db_url)
    now = "2026-11-30 10:00:00"
    rows = [
        "INSERT INTO users (id, email, password_hash, is_admin, created_at) VALUES "
        f"(1, 'root@x.org', 'h', true, '{now}'), (2, 'ana@x.org', 'h', false, '{now}')",
        f"INSERT INTO patients (id, pseudonym, clinical, created_at) VALUES (1, 'pa', '{{}}', '{now}'), "
        f"(2, 'pb', '{{}}', '{now}')",
        "INSERT INTO studies (id, patient_id, study_uid, directory, files, shape, spacing, checksum, "
        f"owner_id, created_at) VALUES (1, 1, 's1', '/d', '{{}}', '[]', '[]', 'c', 2, '{now}')",
    ]
    try:
        with engine.begin() as connection:
            for statement in rows:
                connection.execute(text(statement))
    finally:
        engine.dispose()
    dispose_engines()
    init_db(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        with engine.connect() as connection:
            roles = dict(connection.execute(text("SELECT email, role FROM users")).all())
            groups = dict(
                connection.execute(
                    text("SELECT p.pseudonym, g.name FROM patients p JOIN groups g ON g.id = p.group_id")
                ).all()
            )
            members = connection.execute(
                text("SELECT g.name, m.user_id FROM group_members m JOIN groups g ON g.id = m.group_id")
            ).all()
    finally:
        engine.dispose()
        # The rows above were given explicit ids, which PostgreSQL's sequences did not see: leave no rows
        # behind for the session-wide database's next user.
        dispose_engines()
        command.downgrade(alembic_config(empty_db_url), "base")
    assert roles == {"root@x.org": "admin", "ana@x.org": "researcher"}
    assert groups == {"pa": "user-2", "pb": "default"}
    assert [tuple(row) for row in members] == [("user-2", 2)]
