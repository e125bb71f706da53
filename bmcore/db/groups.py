"""Finding groups by name, and a user's personal group: the lookups uploads, imports and accounts share.

A user who belongs to no group uploads into a personal group ``user-<id>`` (made on first use, the user
its only member); admins add users to shared groups to let them see each other's patients.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from bmcore.db.users import Group, User

GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_GROUP = "default"


def check_group_name(name: str) -> str:
    """``name`` stripped, or ``ValueError``: 1-64 letters, digits, '_', '.' or '-', starting alphanumeric."""
    name = name.strip()
    if not GROUP_NAME.match(name):
        raise ValueError(f"not a group name: {name!r} (1-64 letters, digits, '_', '.', '-')")
    return name


def find_group(session: Session, name: str) -> Group | None:
    return session.scalars(select(Group).where(Group.name == name)).one_or_none()


def group_named(session: Session, name: str) -> Group:
    """The group called ``name``, created (not committed) when missing."""
    name = check_group_name(name)
    group = find_group(session, name)
    if group is None:
        group = Group(name=name)
        session.add(group)
        session.flush()
    return group


def personal_group_name(user: User) -> str:
    return f"user-{user.id}"


def personal_group(session: Session, user: User) -> Group:
    """The user's personal group (made, with the user as member, on first use; not committed)."""
    group = group_named(session, personal_group_name(user))
    if user not in group.members:
        group.members.append(user)
    return group
