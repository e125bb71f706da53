"""The record of every move of a registry alias: an ``AliasMove`` row in the bmseg database per move.

Who moved it (``moved_by``: a user's e-mail, ``job <id>`` for a job's automatic move, ``cli:<os user>``
for a command run by the operator), when, from which version to which, and why (``val_lesion_dice 0.41 >
0.33 of v2``, ``sweep <id> best child``). :func:`recorded_move` writes the row around the move itself, so
an alias that MLflow refused to move leaves no row. The Models page and ``GET /api/v1/models`` show
:func:`alias_history`. Torch- and mlflow-free.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bmcore.db import AliasMove, session_scope

MAX_HISTORY = 200


def os_user() -> str:
    """The operating-system user running this process (``unknown`` when the system has no name for it)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"


def mover(moved_by: str | None = None, job_id: str | None = None) -> str:
    """Who moves an alias: ``moved_by`` as given, else ``job <id>`` for a job, else ``cli:<os user>``."""
    if moved_by:
        return moved_by
    return f"job {job_id}" if job_id else f"cli:{os_user()}"


@contextmanager
def recorded_move(
    model_name: str,
    alias: str,
    from_version: int | str | None,
    to_version: int | str | None,
    moved_by: str,
    reason: str = "",
    job_id: str | None = None,
) -> Iterator[None]:
    """Write the ``AliasMove`` row (flushed first, so a database problem stops the move before it
    happens), let the caller move the alias inside the block, then commit; an error in the block writes
    nothing."""
    with session_scope() as session:
        session.add(
            AliasMove(
                model_name=model_name,
                alias=alias,
                from_version=_version(from_version),
                to_version=_version(to_version),
                moved_by=moved_by[:320],
                reason=reason,
                job_id=job_id,
            )
        )
        session.flush()
        yield


def _version(value: int | str | None) -> int | None:
    return None if value is None else int(value)


def alias_history(session: Session, model_name: str | None = None, limit: int = MAX_HISTORY) -> list[dict]:
    """The newest alias moves first (of one registered model, or all), as plain dicts."""
    query = select(AliasMove).order_by(AliasMove.at.desc(), AliasMove.id.desc()).limit(limit)
    if model_name is not None:
        query = query.where(AliasMove.model_name == model_name)
    return [move_to_dict(move) for move in session.scalars(query)]


def move_to_dict(move: AliasMove) -> dict[str, Any]:
    return {
        "model": move.model_name,
        "alias": move.alias,
        "from_version": move.from_version,
        "to_version": move.to_version,
        "moved_by": move.moved_by,
        "reason": move.reason,
        "job_id": move.job_id,
        "at": move.at.isoformat(timespec="seconds"),
    }
