"""Who may do what: every route but /healthz, the sign-in page and /static refuses strangers; bearer
tokens for the API, session cookies with CSRF tokens for the dashboard; accounts and tokens
(bmcore.accounts)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bmcore.accounts import (
    authenticate,
    create_token,
    create_user,
    disable_user,
    hash_token,
    revoke_token,
    set_password,
    verify_token,
)
from bmcore.config import get_settings
from bmcore.db import ApiToken, Job, User, WebSession, session_scope, utcnow

from .conftest import PASSWORD, form_csrf, sign_in

SESSION_COOKIE = "bmseg_session"
OPEN_ENDPOINTS = {"static", "healthz", "dashboard.sign_in"}
SAMPLE_VALUES = {"job_id": "0" * 32, "study_id": 1, "name": "curves", "filename": "app.css", "patient_id": 1}


def _concrete(rule) -> str:
    path = rule.rule
    for name in rule.arguments:
        path = re.sub(rf"<(?:[a-z]+:)?{name}>", str(SAMPLE_VALUES[name]), path)
    return path


def _routes(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method, _concrete(rule)


def test_every_route_refuses_anonymous_requests(app, client):
    checked = 0
    for rule, method, path in _routes(app):
        if rule.endpoint in OPEN_ENDPOINTS:
            continue
        response = client.open(path, method=method)
        checked += 1
        if path.startswith("/api/"):
            assert response.status_code == 401, (method, path)
            assert response.json["error"], (method, path)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        elif path.endswith((".json", ".png")):
            assert response.status_code == 401, (method, path)
            assert response.json == {"error": "sign in first"}
        else:
            assert response.status_code == 302, (method, path)
            assert response.headers["Location"].startswith("/sign-in"), (method, path)
    assert checked >= 20


def test_open_routes_answer_strangers(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/sign-in").status_code == 200
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize(
    "header",
    ["Bearer nope", "Bearer ", "Token abc", "Basic YWxpY2U6cHc=", "bms_abc", "Bearer " + "x" * 400],
)
def test_api_refuses_bad_tokens(client, users, header):
    response = client.get("/api/v1/jobs", headers={"Authorization": header})
    assert response.status_code == 401
    assert "token" in response.json["error"]


def test_api_ignores_the_session_cookie(signed_in):
    assert signed_in.get("/api/v1/jobs").status_code == 401


def test_revoked_token_stops_working(client, users, api, db_session):
    assert client.get("/api/v1/me", headers=api["alice"]).json["email"] == users.alice.email
    assert revoke_token(db_session, users.alice.email, "tests") == 1
    assert client.get("/api/v1/me", headers=api["alice"]).status_code == 401


# ----------------------------------------------------------------------------------------- sessions


def test_sign_in_sets_a_hardened_session_cookie(app, users):
    client = app.test_client()
    response = sign_in(client, users.alice.email)

    assert response.status_code == 303 and response.headers["Location"] == "/jobs"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("bmseg_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/jobs").status_code == 200


def test_wrong_password_or_unknown_user_is_refused(app, users):
    client = app.test_client()
    for email, password in ((users.alice.email, "wrong-password"), ("nobody@example.org", PASSWORD)):
        response = sign_in(client, email, password)
        assert response.status_code == 401
        assert "Wrong e-mail or password" in response.text
        assert client.get("/jobs").status_code == 302


def test_sign_in_without_csrf_token_is_refused(app, users):
    client = app.test_client()
    client.get("/sign-in")
    response = client.post("/sign-in", data={"email": users.alice.email, "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/jobs").status_code == 302


def test_sign_in_returns_to_the_page_asked_for_but_never_off_site(app, users):
    client = app.test_client()
    first = client.get("/studies")
    assert first.headers["Location"] == "/sign-in?next=/studies"
    page = client.get("/sign-in?next=/studies")
    response = client.post(
        "/sign-in",
        data={
            "email": users.alice.email,
            "password": PASSWORD,
            "next": "/studies",
            "csrf_token": form_csrf(page.text),
        },
    )
    assert response.headers["Location"] == "/studies"

    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        other = app.test_client()
        page = other.get("/sign-in")
        response = other.post(
            "/sign-in",
            data={
                "email": users.alice.email,
                "password": PASSWORD,
                "next": target,
                "csrf_token": form_csrf(page.text),
            },
        )
        assert response.headers["Location"] == "/jobs", target


def test_session_token_changes_at_sign_in(app, users):
    client = app.test_client()
    before = form_csrf(client.get("/sign-in").text)
    sign_in(client, users.alice.email)
    assert client.csrf != before


def test_sign_out_needs_csrf_and_ends_the_session(signed_in):
    assert signed_in.post("/sign-out").status_code == 400
    assert signed_in.get("/jobs").status_code == 200
    response = signed_in.post("/sign-out", data={"csrf_token": signed_in.csrf})
    assert response.status_code == 303 and response.headers["Location"] == "/sign-in"
    assert signed_in.get("/jobs").status_code == 302


def test_every_dashboard_post_checks_csrf(app, signed_in, db_session, users):
    job = Job(type="train", params={}, status="queued", owner_id=users.alice.id)
    db_session.add(job)
    db_session.commit()
    for _rule, method, path in _routes(app):
        if method != "POST" or path.startswith("/api/"):
            continue
        path = path.replace("0" * 32, job.id)
        response = signed_in.post(path, data={"csrf_token": "forged"})
        assert response.status_code == 400, path
        assert "did not come from this site" in response.text
    db_session.expire_all()
    assert db_session.get(Job, job.id).status == "queued"


def test_a_deleted_account_loses_its_session(signed_in, db_session, users):
    db_session.delete(db_session.get(User, users.alice.id))
    db_session.commit()
    assert signed_in.get("/jobs").status_code == 302


def _replay(app, cookie: str):
    """A second browser that presents a captured session cookie."""
    other = app.test_client()
    other.set_cookie(SESSION_COOKIE, cookie)
    return other


def test_the_cookie_carries_only_a_session_key(app, signed_in, db_session, users):
    cookie = signed_in.get_cookie(SESSION_COOKIE).value
    data = app.session_interface.get_signing_serializer(app).loads(cookie)
    assert set(data) <= {"session_key", "csrf_token", "_permanent"} and "user_id" not in data
    stored = db_session.scalars(select(WebSession)).one()
    assert stored.user_id == users.alice.id and stored.id == hash_token(data["session_key"])


def test_a_cookie_captured_before_sign_out_is_refused_after_it(app, signed_in, db_session):
    cookie = signed_in.get_cookie(SESSION_COOKIE).value
    assert _replay(app, cookie).get("/jobs").status_code == 200
    assert signed_in.post("/sign-out", data={"csrf_token": signed_in.csrf}).status_code == 303

    replayed = _replay(app, cookie)
    response = replayed.get("/jobs")
    assert response.status_code == 302 and response.headers["Location"].startswith("/sign-in")
    assert replayed.get("/jobs.json").status_code in (302, 401)
    assert db_session.scalar(select(func.count()).select_from(WebSession)) == 0


def test_a_cookie_is_refused_after_a_password_change(app, signed_in, users):
    cookie = signed_in.get_cookie(SESSION_COOKIE).value
    other = app.test_client()
    sign_in(other, users.bob.email)
    set_password_of(app, users.alice.email, "a-brand-new-password")
    assert _replay(app, cookie).get("/jobs").status_code == 302
    assert signed_in.get("/jobs").status_code == 302
    assert other.get("/jobs").status_code == 200  # bob's session lives on


def test_an_expired_session_sends_the_user_to_sign_in(signed_in, db_session):
    for record in db_session.scalars(select(WebSession)):
        record.expires_at = utcnow() - timedelta(seconds=1)
    db_session.commit()
    assert signed_in.get("/jobs").status_code == 302
    assert db_session.scalar(select(func.count()).select_from(WebSession)) == 0


def test_a_disabled_user_loses_session_and_token_and_cannot_sign_in(app, signed_in, client, api, users):
    cookie = signed_in.get_cookie(SESSION_COOKIE).value
    assert client.get("/api/v1/me", headers=api["alice"]).status_code == 200
    with session_scope(app.config["DATABASE_URL"]) as session:
        disable_user(session, users.alice.email)

    assert _replay(app, cookie).get("/jobs").status_code == 302
    response = client.get("/api/v1/me", headers=api["alice"])
    assert response.status_code == 401 and response.json == {"error": "account disabled"}
    fresh = app.test_client()
    response = sign_in(fresh, users.alice.email)
    assert response.status_code == 401 and "Wrong e-mail or password." in response.text
    assert fresh.get("/jobs").status_code == 302
    assert client.get("/api/v1/me", headers=api["bob"]).status_code == 200


def test_a_token_past_its_expiry_answers_401(client, api, users, db_session):
    assert client.get("/api/v1/me", headers=api["alice"]).status_code == 200
    record = db_session.scalars(select(ApiToken).where(ApiToken.user_id == users.alice.id)).one()
    record.expires_at = utcnow() - timedelta(seconds=1)
    db_session.commit()
    response = client.get("/api/v1/me", headers=api["alice"])
    assert response.status_code == 401 and response.json == {"error": "token expired"}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_new_tokens_expire_after_the_default_term(users, db_session):
    record = db_session.scalars(select(ApiToken).where(ApiToken.user_id == users.alice.id)).one()
    term = record.expires_at - record.created_at
    assert abs(term - timedelta(days=get_settings().token_default_days)) < timedelta(minutes=1)


def set_password_of(app, email: str, password: str) -> None:
    with session_scope(app.config["DATABASE_URL"]) as session:
        set_password(session, email, password)


def test_security_headers(client):
    response = client.get("/sign-in")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# ----------------------------------------------------------------------------------------- bmcore.accounts


def test_tokens_are_stored_as_hashes_and_verified(db_session):
    user = create_user(db_session, "  Carol@Example.org ", "long-enough-pw")
    token = create_token(db_session, "carol@example.org", "laptop")

    assert user.email == "carol@example.org"
    stored = db_session.scalars(select(ApiToken)).one()
    assert stored.token_hash == hash_token(token) and token not in stored.token_hash
    assert len(stored.token_hash) == 64 and stored.last_used_at is None
    assert verify_token(db_session, token).id == user.id
    assert stored.last_used_at is not None
    assert verify_token(db_session, token + "x") is None
    assert verify_token(db_session, "") is None
    assert user.password_hash != "long-enough-pw" and user.password_hash.startswith(("scrypt:", "pbkdf2:"))


def test_accounts_are_validated(db_session):
    create_user(db_session, "dave@example.org", "long-enough-pw", is_admin=True)
    with pytest.raises(ValueError, match="already exists"):
        create_user(db_session, "DAVE@example.org", "another-password")
    with pytest.raises(ValueError, match="too short"):
        create_user(db_session, "erin@example.org", "short")
    with pytest.raises(ValueError, match="not an e-mail"):
        create_user(db_session, "erin", "long-enough-pw")
    with pytest.raises(LookupError):
        create_token(db_session, "nobody@example.org", "x")
    with pytest.raises(ValueError, match="name"):
        create_token(db_session, "dave@example.org", "  ")


def test_authenticate_and_set_password(db_session):
    create_user(db_session, "fay@example.org", "first-password")
    assert authenticate(db_session, "FAY@example.org", "first-password").email == "fay@example.org"
    assert authenticate(db_session, "fay@example.org", "wrong") is None
    assert authenticate(db_session, "nobody@example.org", "first-password") is None
    set_password(db_session, "fay@example.org", "second-password")
    assert authenticate(db_session, "fay@example.org", "first-password") is None
    assert authenticate(db_session, "fay@example.org", "second-password") is not None
