"""Accounts and API tokens: dashboard users with hashed passwords, bearer tokens stored as hashes. Torch-free.

Passwords are hashed with werkzeug's ``generate_password_hash`` (salted scrypt). A bearer token is shown
once, when it is created; the database keeps only its sha256 hex digest (``ApiToken.token_hash``), so a
leaked database reveals no usable token. Every function here commits its own change.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from bmcore.db import ApiToken, User, utcnow

TOKEN_PREFIX = "bms_"
MIN_PASSWORD_LENGTH = 8
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+$")
# last_used_at is written at most this often per token, so busy API clients do not write on every call.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Compared against when the e-mail is unknown, so a sign-in takes as long for a wrong address as for a
# wrong password (no user enumeration by timing).
_DUMMY_HASH = generate_password_hash("not-a-real-password-" + secrets.token_hex(8))


def normalize_email(email: str) -> str:
    return email.strip().lower()


def hash_token(token: str) -> str:
    """The sha256 hex digest stored for a bearer token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def get_user(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(func.lower(User.email) == normalize_email(email))).one_or_none()


def create_user(session: Session, email: str, password: str, is_admin: bool = False) -> User:
    """A new account; raises ``ValueError`` for a malformed e-mail, a short password or a taken e-mail."""
    email = normalize_email(email)
    if not EMAIL_PATTERN.match(email) or len(email) > 320:
        raise ValueError(f"not an e-mail address: {email!r}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    if get_user(session, email) is not None:
        raise ValueError(f"a user {email} already exists")
    user = User(email=email, password_hash=generate_password_hash(password), is_admin=is_admin)
    session.add(user)
    session.commit()
    return user


def set_password(session: Session, email: str, password: str) -> User:
    """Replace a user's password; ``LookupError`` for an unknown user."""
    user = get_user(session, email)
    if user is None:
        raise LookupError(f"no user {normalize_email(email)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    user.password_hash = generate_password_hash(password)
    session.commit()
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The user with this e-mail and password, or ``None`` (same work done either way)."""
    user = get_user(session, email) if email else None
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def create_token(session: Session, user_email: str, name: str) -> str:
    """A new bearer token for ``user_email``; returns the plain token (shown once, stored as a hash)."""
    user = get_user(session, user_email)
    if user is None:
        raise LookupError(f"no user {normalize_email(user_email)}; create it first")
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a token needs a name of 1 to 100 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name, token_hash=hash_token(token)))
    session.commit()
    return token


def verify_token(session: Session, token: str) -> User | None:
    """The owner of a bearer token, or ``None`` for an unknown token; records when it was last used."""
    if not token or len(token) > 256:
        return None
    record = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one_or_none()
    if record is None:
        return None
    now = utcnow()
    if record.last_used_at is None or now - record.last_used_at > LAST_USED_RESOLUTION:
        record.last_used_at = now
        session.commit()
    return record.user


def revoke_token(session: Session, user_email: str, name: str) -> int:
    """Delete the user's tokens called ``name``; returns how many were deleted."""
    user = get_user(session, user_email)
    if user is None:
        raise LookupError(f"no user {normalize_email(user_email)}")
    records = list(
        session.scalars(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.name == name))
    )
    for record in records:
        session.delete(record)
    session.commit()
    return len(records)
