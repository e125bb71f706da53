"""Who belongs to which group: what an admin does to let users share patients. Torch-free.

A group shares its patients (and their studies) among its members (docs/permissions.md). Admins create
groups and add or remove members; a user who belongs to no group uploads into a personal group
``user-<id>`` (:func:`bmcore.db.groups.personal_group`). Callers look users up themselves
(:func:`bmcore.accounts.require_user`) and hand them in. Every function here commits its own change.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from bmcore.db import Group, User
from bmcore.db.groups import check_group_name, find_group


def require_group(session: Session, name: str) -> Group:
    """The group called ``name``, or ``LookupError`` naming it."""
    group = find_group(session, name.strip())
    if group is None:
        raise LookupError(f"no group {name.strip()!r}")
    return group


def create_group(session: Session, name: str) -> Group:
    """A new, empty group; ``ValueError`` for a malformed or taken name."""
    name = check_group_name(name)
    if find_group(session, name) is not None:
        raise ValueError(f"a group {name} already exists")
    group = Group(name=name)
    session.add(group)
    session.commit()
    return group


def add_member(session: Session, group_name: str, user: User) -> bool:
    """Put ``user`` into the group; ``False`` when they already were a member."""
    group = require_group(session, group_name)
    if user in group.members:
        return False
    group.members.append(user)
    session.commit()
    return True


def remove_member(session: Session, group_name: str, user: User) -> bool:
    """Take ``user`` out of the group; ``False`` when they were not a member."""
    group = require_group(session, group_name)
    if user not in group.members:
        return False
    group.members.remove(user)
    session.commit()
    return True


def list_groups(session: Session) -> list[Group]:
    """Every group by name, its members loaded."""
    return list(session.scalars(select(Group).options(selectinload(Group.members)).order_by(Group.name)))
