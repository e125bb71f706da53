"""Accounts, roles, tokens with a term, dashboard sessions ended server-side, groups (bmcore.accounts,
bmcore.memberships) on SQLite and PostgreSQL at the migrated schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bmcore.accounts import (
    TokenRefused,
    authenticate,
    check_token,
    create_token,
    create_user,
    disable_user,
    enable_user,
    end_session,
    hash_token,
    issue_token,
    session_user,
    set_password,
    set_role,
    start_session,
    verify_token,
)
from bmcore.config import get_settings
from bmcore.db import ApiToken, WebSession, session_factory, utcnow
from bmcore.memberships import add_member, create_group, list_groups, remove_member

PASSWORD = "long-enough-pw"


@pytest.fixture
def db(migrated_db_url):
    with session_factory(migrated_db_url)() as session:
        yield session


def _sessions_of(db, user) -> int:
    return db.scalar(select(func.count()).select_from(WebSession).where(WebSession.user_id == user.id))


def test_roles_at_creation_and_later(db):
    assert create_user(db, "res@example.org", PASSWORD).role == "researcher"
    assert create_user(db, "doc@example.org", PASSWORD, role="clinician").role == "clinician"
    admin = create_user(db, "boss@example.org", PASSWORD, is_admin=True)
    assert admin.role == "admin" and admin.is_admin
    with pytest.raises(ValueError, match="unknown role 'nurse'"):
        create_user(db, "nurse@example.org", PASSWORD, role="nurse")
    with pytest.raises(ValueError, match="contradicts"):
        create_user(db, "odd@example.org", PASSWORD, is_admin=True, role="clinician")

    assert set_role(db, "RES@example.org", "clinician").role == "clinician"
    with pytest.raises(ValueError, match="unknown role"):
        set_role(db, "res@example.org", "root")
    with pytest.raises(LookupError, match="no user nobody@example.org"):
        set_role(db, "nobody@example.org", "admin")
    db.expire_all()
    assert authenticate(db, "res@example.org", PASSWORD).role == "clinician"


def test_tokens_expire_after_their_term(db):
    create_user(db, "tok@example.org", PASSWORD)
    issued = issue_token(db, "tok@example.org", "laptop")
    expected = utcnow() + timedelta(days=get_settings().token_default_days)
    assert abs(issued.expires_at - expected) < timedelta(minutes=1)
    assert check_token(db, issued.token).email == "tok@example.org"

    short = issue_token(db, "tok@example.org", "short", days=1)
    assert abs(short.expires_at - (utcnow() + timedelta(days=1))) < timedelta(minutes=1)
    record = db.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(short.token))).one()
    record.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    with pytest.raises(TokenRefused, match="token expired"):
        check_token(db, short.token)
    assert verify_token(db, short.token) is None
    with pytest.raises(TokenRefused, match="invalid or revoked"):
        check_token(db, short.token + "x")


def test_a_token_from_before_tokens_had_a_term_expires_after_the_maximum(db):
    create_user(db, "old@example.org", PASSWORD)
    token = create_token(db, "old@example.org", "legacy")
    record = db.scalars(select(ApiToken)).one()
    record.expires_at = None
    record.created_at = utcnow() - timedelta(days=get_settings().token_max_days - 1)
    db.commit()
    assert check_token(db, token).email == "old@example.org"
    record.created_at = utcnow() - timedelta(days=get_settings().token_max_days, seconds=1)
    db.commit()
    with pytest.raises(TokenRefused, match="token expired"):
        check_token(db, token)


@pytest.mark.parametrize("days", [0, -5, 366, 10_000])
def test_token_terms_outside_one_day_to_the_maximum_are_refused(db, days):
    create_user(db, "term@example.org", PASSWORD)
    with pytest.raises(ValueError, match="at least 1|at most 365 days") as refused:
        create_token(db, "term@example.org", "x", days=days)
    assert "\n" not in str(refused.value)
    assert db.scalar(select(func.count()).select_from(ApiToken)) == 0


def test_the_maximum_term_is_a_setting(db, monkeypatch):
    monkeypatch.setenv("BMSEG_TOKEN_MAX_DAYS", "10")
    get_settings.cache_clear()
    create_user(db, "max@example.org", PASSWORD)
    assert create_token(db, "max@example.org", "ten", days=10)
    with pytest.raises(ValueError, match="at most 10 days"):
        create_token(db, "max@example.org", "eleven", days=11)


def test_sessions_are_stored_as_hashes_and_end_at_sign_out(db):
    user = create_user(db, "web@example.org", PASSWORD)
    key = start_session(db, user)
    record = db.scalars(select(WebSession)).one()
    assert record.id == hash_token(key) and key not in record.id
    hours = get_settings().session_hours
    assert abs(record.expires_at - (utcnow() + timedelta(hours=hours))) < timedelta(minutes=1)
    assert session_user(db, key).id == user.id
    for bad in ("", "nope", key + "x", "k" * 300, None, 5):
        assert session_user(db, bad) is None

    end_session(db, key)
    assert session_user(db, key) is None
    assert _sessions_of(db, user) == 0
    end_session(db, key)  # twice: nothing to do


def test_an_expired_session_is_refused_and_deleted(db):
    user = create_user(db, "late@example.org", PASSWORD)
    key = start_session(db, user)
    db.get(WebSession, hash_token(key)).expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    assert session_user(db, key) is None
    assert _sessions_of(db, user) == 0


def test_a_password_change_ends_every_session_of_the_user(db):
    user = create_user(db, "pw@example.org", PASSWORD)
    other = create_user(db, "other@example.org", PASSWORD)
    keys = [start_session(db, user), start_session(db, user)]
    other_key = start_session(db, other)
    token = create_token(db, user.email, "api")

    set_password(db, user.email, "a-new-password")
    assert [session_user(db, key) for key in keys] == [None, None]
    assert _sessions_of(db, user) == 0
    assert session_user(db, other_key).id == other.id
    assert check_token(db, token).id == user.id  # tokens are revoked by name, not by a password change
    assert authenticate(db, user.email, PASSWORD) is None
    assert authenticate(db, user.email, "a-new-password").id == user.id


def test_a_disabled_user_is_refused_everywhere_until_enabled(db):
    user = create_user(db, "gone@example.org", PASSWORD)
    key = start_session(db, user)
    token = create_token(db, user.email, "api")

    disable_user(db, user.email)
    assert _sessions_of(db, user) == 0 and session_user(db, key) is None
    assert authenticate(db, user.email, PASSWORD) is None
    with pytest.raises(TokenRefused, match="account disabled"):
        check_token(db, token)
    with pytest.raises(ValueError, match="disabled"):
        start_session(db, user)
    with pytest.raises(ValueError, match="disabled"):
        create_token(db, user.email, "another")

    enable_user(db, user.email)
    assert authenticate(db, user.email, PASSWORD).id == user.id
    assert check_token(db, token).id == user.id
    assert session_user(db, start_session(db, user)).id == user.id
    with pytest.raises(LookupError):
        disable_user(db, "nobody@example.org")


def test_groups_and_their_members(db):
    ann = create_user(db, "ann@example.org", PASSWORD)
    ben = create_user(db, "ben@example.org", PASSWORD)
    create_group(db, "lab-a")
    create_group(db, "lab-b")
    with pytest.raises(ValueError, match="already exists"):
        create_group(db, "lab-a")
    with pytest.raises(ValueError, match="not a group name"):
        create_group(db, "no spaces")

    assert add_member(db, "lab-a", ann) and add_member(db, "lab-a", ben) and add_member(db, "lab-b", ann)
    assert not add_member(db, "lab-a", ann)
    listed = {group.name: sorted(u.email for u in group.members) for group in list_groups(db)}
    assert listed == {"lab-a": ["ann@example.org", "ben@example.org"], "lab-b": ["ann@example.org"]}
    assert remove_member(db, "lab-a", ben) and not remove_member(db, "lab-a", ben)
    db.expire_all()
    assert sorted(g.name for g in ann.groups) == ["lab-a", "lab-b"] and ben.groups == []
    with pytest.raises(LookupError, match="no group 'lab-z'"):
        add_member(db, "lab-z", ann)
