"""People and their keys: users with a role, groups that share patients, API tokens, dashboard sessions.

Roles (docs/permissions.md): ``admin`` may do everything; ``researcher`` uploads, segments, trains,
evaluates, sweeps and cross-validates; ``clinician`` uploads, segments with approved models and views.
A group shares its patients (and their studies) among its members; admins manage membership.
A dashboard session is a row (``WebSession``): signing out or changing the password deletes it, so a
replayed cookie is refused. Only hashes of session keys and API tokens are stored.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Integer,
    String,
    Table,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from bmcore.db.base import Base, UTCDateTime, utcnow

ROLES = ("admin", "researcher", "clinician")
DEFAULT_ROLE = "researcher"

group_members = Table(
    "group_members",
    Base.metadata,
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=DEFAULT_ROLE, server_default=DEFAULT_ROLE)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")
    sessions: Mapped[list[WebSession]] = relationship(back_populates="user", cascade="all, delete-orphan")
    groups: Mapped[list[Group]] = relationship(secondary=group_members, back_populates="members")

    @validates("role")
    def _check_role(self, _key: str, value: str) -> str:
        if value not in ROLES:
            raise ValueError(f"unknown role {value!r}; expected one of {', '.join(ROLES)}")
        return value

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @is_admin.setter
    def is_admin(self, value: bool) -> None:
        self.role = "admin" if value else DEFAULT_ROLE

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, email={self.email!r}, role={self.role!r})"


class Group(Base):
    """A set of users sharing patients; a patient belongs to exactly one group, its pseudonym unique there."""

    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    members: Mapped[list[User]] = relationship(secondary=group_members, back_populates="groups")

    def __repr__(self) -> str:
        return f"Group(id={self.id!r}, name={self.name!r})"


class ApiToken(Base):
    """A bearer token; only its sha256 hex digest is stored. Refused after ``expires_at`` (when set)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    user: Mapped[User] = relationship(back_populates="tokens")

    def __repr__(self) -> str:
        return f"ApiToken(id={self.id!r}, user_id={self.user_id!r}, name={self.name!r})"


class WebSession(Base):
    """A signed-in dashboard session; ``id`` is the sha256 hex digest of the key in the cookie."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    user: Mapped[User] = relationship(back_populates="sessions")
