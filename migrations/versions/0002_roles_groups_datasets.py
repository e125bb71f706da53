"""Roles, groups, group-scoped pseudonyms, dashboard sessions, token expiry, data sets, alias moves.

Hand-reviewed. Existing accounts keep their powers: admins get the role ``admin``, everyone else
``researcher``. Every existing patient is given a group: the personal group (``user-<id>``, the user a
member) of whoever uploaded its earliest study, or the group ``default`` (no members: admins only) when no
user owns any of its studies. Pseudonyms become unique per group instead of globally.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 22:40:00+00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_GROUP = "default"


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _create_tables() -> None:
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_groups_name")),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_group_members_group_id_groups"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_group_members_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_members")),
    )
    op.create_index(op.f("ix_group_members_user_id"), "group_members", ["user_id"], unique=False)
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        _timestamp("expires_at"),
        _timestamp("last_seen_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_web_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
    )
    op.create_index(op.f("ix_web_sessions_user_id"), "web_sessions", ["user_id"], unique=False)
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("promotable", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_datasets_group_id_groups"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_datasets_created_by_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("name", name=op.f("uq_datasets_name")),
    )
    op.create_index(op.f("ix_datasets_group_id"), "datasets", ["group_id"], unique=False)
    op.create_table(
        "alias_moves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("moved_by", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        _timestamp("at"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_alias_moves_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alias_moves")),
    )
    op.create_index(op.f("ix_alias_moves_model_name"), "alias_moves", ["model_name"], unique=False)
    op.create_index(op.f("ix_alias_moves_at"), "alias_moves", ["at"], unique=False)


def _group_id(conn: sa.Connection, name: str, now: datetime) -> int:
    found = conn.execute(sa.text("SELECT id FROM groups WHERE name = :n"), {"n": name}).scalar()
    if found is not None:
        return int(found)
    conn.execute(sa.text("INSERT INTO groups (name, created_at) VALUES (:n, :t)"), {"n": name, "t": now})
    return int(conn.execute(sa.text("SELECT id FROM groups WHERE name = :n"), {"n": name}).scalar_one())


def _assign_patient_groups(conn: sa.Connection) -> None:
    """Each patient to the personal group of its earliest study's owner, else to ``default``."""
    now = datetime.now(UTC).replace(tzinfo=None) if conn.dialect.name == "sqlite" else datetime.now(UTC)
    patients = conn.execute(sa.text("SELECT id FROM patients ORDER BY id")).scalars().all()
    for patient_id in patients:
        owner = conn.execute(
            sa.text(
                "SELECT owner_id FROM studies WHERE patient_id = :p AND owner_id IS NOT NULL "
                "ORDER BY created_at, id LIMIT 1"
            ),
            {"p": patient_id},
        ).scalar()
        if owner is None:
            group = _group_id(conn, DEFAULT_GROUP, now)
        else:
            group = _group_id(conn, f"user-{owner}", now)
            conn.execute(
                sa.text(
                    "INSERT INTO group_members (group_id, user_id) SELECT :g, :u WHERE NOT EXISTS "
                    "(SELECT 1 FROM group_members WHERE group_id = :g AND user_id = :u)"
                ),
                {"g": group, "u": owner},
            )
        conn.execute(sa.text("UPDATE patients SET group_id = :g WHERE id = :p"), {"g": group, "p": patient_id})


def upgrade() -> None:
    _create_tables()
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("role", sa.String(length=16), server_default="researcher", nullable=False))
        batch.add_column(sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False))
    conn = op.get_bind()
    conn.execute(sa.text("UPDATE users SET role = CASE WHEN is_admin THEN 'admin' ELSE 'researcher' END"))
    with op.batch_alter_table("users") as batch:
        batch.drop_column("is_admin")
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(_timestamp("expires_at", nullable=True))
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("group_id", sa.Integer(), nullable=True))
    _assign_patient_groups(conn)
    with op.batch_alter_table("patients") as batch:
        batch.alter_column("group_id", existing_type=sa.Integer(), nullable=False)
        batch.drop_constraint("uq_patients_pseudonym", type_="unique")
        batch.create_unique_constraint(op.f("uq_patients_group_id_pseudonym"), ["group_id", "pseudonym"])
        batch.create_foreign_key(
            op.f("fk_patients_group_id_groups"), "groups", ["group_id"], ["id"], ondelete="RESTRICT"
        )
        batch.create_index(op.f("ix_patients_group_id"), ["group_id"], unique=False)


def downgrade() -> None:
    conn = op.get_bind()
    duplicated = conn.execute(
        sa.text("SELECT pseudonym FROM patients GROUP BY pseudonym HAVING COUNT(*) > 1 LIMIT 1")
    ).scalar()
    if duplicated is not None:
        raise RuntimeError(
            f"cannot downgrade: pseudonym {duplicated!r} exists in more than one group, "
            "and revision 0001 keeps pseudonyms globally unique"
        )
    with op.batch_alter_table("patients") as batch:
        batch.drop_index(op.f("ix_patients_group_id"))
        batch.drop_constraint(op.f("fk_patients_group_id_groups"), type_="foreignkey")
        batch.drop_constraint(op.f("uq_patients_group_id_pseudonym"), type_="unique")
        batch.create_unique_constraint("uq_patients_pseudonym", ["pseudonym"])
        batch.drop_column("group_id")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expires_at")
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("is_admin", sa.Boolean(), server_default=sa.false(), nullable=False))
    conn.execute(sa.text("UPDATE users SET is_admin = (role = 'admin')"))
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled")
        batch.drop_column("role")
    for index, table in (
        ("ix_alias_moves_at", "alias_moves"),
        ("ix_alias_moves_model_name", "alias_moves"),
        ("ix_datasets_group_id", "datasets"),
        ("ix_web_sessions_user_id", "web_sessions"),
        ("ix_group_members_user_id", "group_members"),
    ):
        op.drop_index(op.f(index), table_name=table)
    for table in ("alias_moves", "datasets", "web_sessions", "group_members", "groups"):
        op.drop_table(table)
