"""Registered data sets: data folders (or CSV manifests) an admin names, so queued jobs never take raw paths.

An admin registers a folder once (``bmseg datasets add NAME PATH [--group G] [--promotable]``); a
non-admin's job then names the data set, and the server puts its path into the job. A data set without a
group is usable by every researcher, one with a group by that group's members (admins use every data set).
Only runs on a data set registered as ``promotable`` may move the ``champion`` alias on their own.

Torch-free (the web resolves data set names with it). ``add_dataset`` and ``remove_dataset`` commit their
own change; bad input is a one-line ``ValueError``, an unknown name a ``LookupError``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bmcore.db import Dataset, Group, User
from bmcore.db.groups import find_group

DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAME_HELP = "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"


def check_dataset_name(name: str) -> str:
    """``name`` stripped, or ``ValueError``: a data set name is never a path (no '/')."""
    name = name.strip()
    if not DATASET_NAME.match(name):
        raise ValueError(f"not a data set name: {name!r} ({NAME_HELP})")
    return name


def find_dataset(session: Session, name: str) -> Dataset | None:
    """The data set called ``name`` (anyone's), or None."""
    return session.scalars(select(Dataset).where(Dataset.name == name)).one_or_none()


def add_dataset(
    session: Session,
    name: str,
    path: str | Path,
    group: str | None = None,
    promotable: bool = False,
    created_by: User | None = None,
) -> Dataset:
    """Register ``path`` (absolute, existing) as data set ``name``, for ``group`` (None: every researcher)."""
    name = check_dataset_name(name)
    folder = Path(path)
    if not folder.is_absolute():
        raise ValueError(f"the path of a data set must be absolute, got {str(path)!r}")
    if not folder.exists():
        raise ValueError(f"{folder}: no such folder or manifest")
    if find_dataset(session, name) is not None:
        raise ValueError(f"a data set named {name!r} exists; remove it first")
    group_id = None
    if group is not None:
        found = find_group(session, group.strip())
        if found is None:
            raise LookupError(f"no group named {group.strip()!r}")
        group_id = found.id
    dataset = Dataset(
        name=name,
        path=str(folder),
        group_id=group_id,
        promotable=promotable,
        created_by_id=created_by.id if created_by is not None else None,
    )
    session.add(dataset)
    session.commit()
    return dataset


def remove_dataset(session: Session, name: str) -> None:
    """Forget data set ``name`` (its folder is left alone; jobs that used it keep their path)."""
    dataset = find_dataset(session, name.strip())
    if dataset is None:
        raise LookupError(f"no data set named {name.strip()!r}")
    session.delete(dataset)
    session.commit()


def list_datasets(session: Session) -> list[Dataset]:
    """Every registered data set, by name."""
    return list(session.scalars(select(Dataset).order_by(Dataset.name)))


def usable_datasets(session: Session, user: User) -> list[Dataset]:
    """The data sets ``user`` may name in a job, by name: admins all; others those without a group or of
    one of their groups; a disabled user none."""
    if user.disabled:
        return []
    query = select(Dataset).order_by(Dataset.name)
    if not user.is_admin:
        group_ids = [group.id for group in user.groups]
        query = query.where(or_(Dataset.group_id.is_(None), Dataset.group_id.in_(group_ids)))
    return list(session.scalars(query))


def usable_dataset(session: Session, user: User, name: str) -> Dataset | None:
    """The data set called ``name`` if ``user`` may use it; None for an unknown one and for one of another
    group alike (the caller answers both the same way)."""
    if not DATASET_NAME.match(name):
        return None
    return next((dataset for dataset in usable_datasets(session, user) if dataset.name == name), None)


def dataset_to_dict(session: Session, dataset: Dataset, with_path: bool) -> dict[str, Any]:
    """``{"name", "group", "promotable"}``, and ``"path"`` when ``with_path`` (admins only)."""
    group = session.get(Group, dataset.group_id) if dataset.group_id is not None else None
    entry: dict[str, Any] = {
        "name": dataset.name,
        "group": group.name if group is not None else None,
        "promotable": bool(dataset.promotable),
    }
    if with_path:
        entry["path"] = dataset.path
    return entry
