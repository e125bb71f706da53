"""What admins govern besides people: registered data sets and the record of every registry alias move.

A non-admin's queued job names a ``Dataset`` (never a raw path); only runs on a data set registered as
``promotable`` may move the ``champion`` alias on their own, and every move of an alias, automatic or by an
admin, is an ``AliasMove`` row (who, when, from which version to which, why), shown on the Models page.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from bmcore.db.base import Base, UTCDateTime, utcnow


class Dataset(Base):
    """A data folder (or CSV manifest) an admin registered by name; ``group_id`` None: every researcher."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(1024))
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("groups.id", ondelete="SET NULL"), nullable=True, index=True
    )
    promotable: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"Dataset(id={self.id!r}, name={self.name!r}, promotable={self.promotable!r})"


class AliasMove(Base):
    """One move of a registry alias: ``to_version`` None means the alias was removed."""

    __tablename__ = "alias_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128), index=True)
    alias: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    moved_by: Mapped[str] = mapped_column(String(320))  # a user's e-mail, or "job <id>" for automatic moves
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
