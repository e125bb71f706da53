"""Accounts, API tokens and dashboard sessions: who may sign in, and what proves it. Torch-free.

Passwords are hashed with werkzeug's ``generate_password_hash`` (salted scrypt). A bearer token is shown
once, when it is created; the database keeps only its sha256 hex digest (``ApiToken.token_hash``), so a
leaked database reveals no usable token. A token expires after ``settings.token_default_days`` unless its
creator asks for another term, never more than ``settings.token_max_days``.

A dashboard session is a ``WebSession`` row keyed by the sha256 of a random key; the browser's signed
cookie carries only that key. Signing out deletes the row, and so do a password change and disabling the
account (every row of that user), so a cookie captured earlier is refused server-side. A session ends
``settings.session_hours`` after sign-in.

A disabled account cannot sign in, and its tokens and sessions are refused; enabling it again makes its
(unexpired) tokens work again. Every function here commits its own change.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from bmcore.config import get_settings
from bmcore.db import DEFAULT_ROLE, ROLES, ApiToken, User, WebSession, utcnow

TOKEN_PREFIX = "bms_"
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+$")
# last_used_at / last_seen_at are written at most this often, so busy clients do not write on every call.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Compared against when the e-mail is unknown, so a sign-in takes as long for a wrong address as for a
# wrong password (no user enumeration by timing).
_DUMMY_HASH = generate_password_hash("not-a-real-password-" + secrets.token_hex(8))


class TokenRefused(Exception):
    """A bearer token that does not let its bearer in; the message says why in a few words."""


class IssuedToken(NamedTuple):
    token: str  # the plain token: shown once, never stored
    expires_at: datetime


# ----------------------------------------------------------------------------------------- users


def normalize_email(email: str) -> str:
    return email.strip().lower()


def hash_token(token: str) -> str:
    """The sha256 hex digest stored for a bearer token (and for a dashboard session key)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def get_user(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(func.lower(User.email) == normalize_email(email))).one_or_none()


def require_user(session: Session, email: str) -> User:
    """The user with this e-mail, or ``LookupError`` naming it."""
    user = get_user(session, email)
    if user is None:
        raise LookupError(f"no user {normalize_email(email)}")
    return user


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`bmcore.db.ROLES`, else ``ValueError`` listing them."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose from {', '.join(ROLES)}")
    return role


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"password too long: use at most {MAX_PASSWORD_LENGTH} characters")
    return password


def create_user(
    session: Session, email: str, password: str, is_admin: bool = False, role: str | None = None
) -> User:
    """A new account with ``role`` (default researcher; ``is_admin=True`` means ``role="admin"``);
    ``ValueError`` for a malformed e-mail, a short password, an unknown role or a taken e-mail."""
    email = normalize_email(email)
    if not EMAIL_PATTERN.match(email) or len(email) > 320:
        raise ValueError(f"not an e-mail address: {email!r}")
    if is_admin and role not in (None, "admin"):
        raise ValueError(f"--admin contradicts role {role!r}")
    role = check_role(role or ("admin" if is_admin else DEFAULT_ROLE))
    _check_password(password)
    if get_user(session, email) is not None:
        raise ValueError(f"a user {email} already exists")
    user = User(email=email, password_hash=generate_password_hash(password), role=role)
    session.add(user)
    session.commit()
    return user


def list_users(session: Session) -> list[User]:
    """Every account, by e-mail."""
    return list(session.scalars(select(User).order_by(User.email)))


def set_role(session: Session, email: str, role: str) -> User:
    """Give a user another role; ``LookupError`` for an unknown user, ``ValueError`` for an unknown role."""
    user = require_user(session, email)
    user.role = check_role(role)
    session.commit()
    return user


def _end_all_sessions(session: Session, user: User) -> None:
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    session.expire(user, ["sessions"])


def set_password(session: Session, email: str, password: str) -> User:
    """Replace a user's password and end every dashboard session of theirs (a captured cookie stops
    working); ``LookupError`` for an unknown user, ``ValueError`` for a short password."""
    user = require_user(session, email)
    user.password_hash = generate_password_hash(_check_password(password))
    _end_all_sessions(session, user)
    session.commit()
    return user


def disable_user(session: Session, email: str) -> User:
    """Lock an account out: no sign-in, its tokens refused, its dashboard sessions ended."""
    user = require_user(session, email)
    user.disabled = True
    _end_all_sessions(session, user)
    session.commit()
    return user


def enable_user(session: Session, email: str) -> User:
    """Let a disabled account in again (its unexpired tokens work again; sessions start at sign-in)."""
    user = require_user(session, email)
    user.disabled = False
    session.commit()
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The enabled user with this e-mail and password, or ``None`` (same work done either way)."""
    user = get_user(session, email) if email else None
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(user.password_hash, password) or user.disabled:
        return None
    return user


# ----------------------------------------------------------------------------------------- API tokens


def token_days(days: int | None) -> int:
    """The term of a new token: ``days`` (1 to ``token_max_days``) or ``token_default_days``."""
    settings = get_settings()
    if days is None:
        days = settings.token_default_days
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"a token lasts a whole number of days, at least 1 (got {days!r})")
    if days > settings.token_max_days:
        raise ValueError(f"a token lasts at most {settings.token_max_days} days (BMSEG_TOKEN_MAX_DAYS)")
    return days


def issue_token(session: Session, user_email: str, name: str, days: int | None = None) -> IssuedToken:
    """A new bearer token for ``user_email`` valid for ``days`` (see :func:`token_days`): the plain token
    (shown once, stored as a hash) and when it expires."""
    user = get_user(session, user_email)
    if user is None:
        raise LookupError(f"no user {normalize_email(user_email)}; create it first")
    if user.disabled:
        raise ValueError(f"user {user.email} is disabled; enable it first")
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a token needs a name of 1 to 100 characters")
    expires_at = utcnow() + timedelta(days=token_days(days))
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name, token_hash=hash_token(token), expires_at=expires_at))
    session.commit()
    return IssuedToken(token, expires_at)


def create_token(session: Session, user_email: str, name: str, days: int | None = None) -> str:
    """A new bearer token for ``user_email``; returns the plain token (see :func:`issue_token`)."""
    return issue_token(session, user_email, name, days).token


def check_token(session: Session, token: str) -> User:
    """The enabled owner of an unexpired bearer token; records when it was last used.

    Raises :class:`TokenRefused`: "invalid or revoked token", "token expired" or "account disabled".
    A token made before tokens had a term (``expires_at`` NULL) expires ``token_max_days`` after it
    was made.
    """
    record = None
    if token and len(token) <= 256:
        record = session.scalars(
            select(ApiToken).where(ApiToken.token_hash == hash_token(token))
        ).one_or_none()
    if record is None:
        raise TokenRefused("invalid or revoked token")
    now = utcnow()
    expires_at = record.expires_at or record.created_at + timedelta(days=get_settings().token_max_days)
    if expires_at <= now:
        raise TokenRefused("token expired")
    if record.user.disabled:
        raise TokenRefused("account disabled")
    if record.last_used_at is None or now - record.last_used_at > LAST_USED_RESOLUTION:
        record.last_used_at = now
        session.commit()
    return record.user


def verify_token(session: Session, token: str) -> User | None:
    """The owner of a bearer token, or ``None`` when :func:`check_token` refuses it."""
    try:
        return check_token(session, token)
    except TokenRefused:
        return None


def revoke_token(session: Session, user_email: str, name: str) -> int:
    """Delete the user's tokens called ``name``; returns how many were deleted."""
    user = require_user(session, user_email)
    records = list(
        session.scalars(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.name == name))
    )
    for record in records:
        session.delete(record)
    session.commit()
    return len(records)


# ----------------------------------------------------------------------------------------- sessions


def start_session(session: Session, user: User) -> str:
    """A new dashboard session for ``user``, lasting ``settings.session_hours``: returns its random key
    (for the cookie; only its sha256 is stored). Also drops the user's expired sessions."""
    if user.disabled:
        raise ValueError(f"user {user.email} is disabled")
    now = utcnow()
    session.execute(delete(WebSession).where(WebSession.user_id == user.id, WebSession.expires_at <= now))
    key = secrets.token_urlsafe(32)
    expires_at = now + timedelta(hours=get_settings().session_hours)
    session.add(WebSession(id=hash_token(key), user_id=user.id, expires_at=expires_at, last_seen_at=now))
    session.commit()
    return key


def session_user(session: Session, key: str) -> User | None:
    """The enabled user of the live session with this key, else ``None`` (an expired row is deleted)."""
    if not isinstance(key, str) or not key or len(key) > 256:
        return None
    record = session.get(WebSession, hash_token(key))
    if record is None:
        return None
    now = utcnow()
    if record.expires_at <= now:
        session.delete(record)
        session.commit()
        return None
    if record.user.disabled:
        return None
    if record.last_seen_at is None or now - record.last_seen_at > LAST_USED_RESOLUTION:
        record.last_seen_at = now
        session.commit()
    return record.user


def end_session(session: Session, key: str) -> None:
    """Delete the session with this key (signing out); unknown keys are ignored."""
    if isinstance(key, str) and key and len(key) <= 256:
        session.execute(delete(WebSession).where(WebSession.id == hash_token(key)))
        session.commit()
