"""Who is asking: dashboard sessions (cookie, CSRF token per session) and API bearer tokens.

Dashboard: a signed Flask session cookie (HttpOnly, SameSite=Lax) carries only a random session key;
the user is the one of the live ``WebSession`` row stored under that key's sha256
(:func:`bmcore.accounts.session_user`).
Signing out deletes the row, as do a password change and disabling the account, so a cookie captured
earlier is refused server-side (sent to the sign-in page). Every POST must echo the session's CSRF token
(flask-wtf's ``CSRFProtect``) in the form field ``csrf_token`` or the ``X-CSRF-Token`` header. The check
runs in :func:`load_dashboard_user`, after strangers were sent to the sign-in page; the API, on bearer
tokens, is exempt. Sign-in attempts are throttled by :mod:`services.web.throttle`.
API: ``Authorization: Bearer <token>``, checked against ``ApiToken.token_hash`` (sha256); expired tokens
and disabled accounts answer 401 (:func:`bmcore.accounts.check_token`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Flask, g, jsonify, redirect, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import BadRequest

from bmcore.accounts import TokenRefused, check_token, end_session, session_user, start_session
from bmcore.db import User
from services.web.common import db

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CSRF_REFUSED = "the form has expired or did not come from this site; reload the page and try again"
# The one thing the session cookie says about the user: the key of their WebSession row.
SESSION_KEY = "session_key"
# Dashboard endpoints reachable without a session.
SIGN_IN_ENDPOINT = "dashboard.sign_in"
PUBLIC_DASHBOARD_ENDPOINTS = frozenset({SIGN_IN_ENDPOINT})

csrf = CSRFProtect()


def init_csrf(app: Flask, api: Blueprint) -> None:
    """CSRF tokens for the dashboard's forms: one per session, valid as long as the session, checked
    where :func:`load_dashboard_user` says (not on every view by default); the ``api`` is exempt."""
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)
    app.config.setdefault("WTF_CSRF_FIELD_NAME", CSRF_FIELD)
    app.config.setdefault("WTF_CSRF_HEADERS", [CSRF_HEADER])
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    app.config.setdefault("WTF_CSRF_SSL_STRICT", False)
    csrf.init_app(app)  # also the Jinja global csrf_token()
    csrf.exempt(api)


def current_user() -> User | None:
    return g.get("user")


def check_csrf() -> None:
    """Refuse (400) a state-changing request whose form field or header does not echo the session's token."""
    try:
        csrf.protect()
    except CSRFError:
        raise BadRequest(CSRF_REFUSED) from None


def sign_in_user(user: User) -> None:
    """Start a fresh session for ``user``: a new ``WebSession`` row whose key the cookie carries (a new
    CSRF token too: no session fixation)."""
    key = start_session(db(), user)
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = key
    g.pop(CSRF_FIELD, None)  # the next page gets a new CSRF token


def sign_out_user() -> None:
    """End the session server-side (its row deleted: the cookie is refused even if replayed)."""
    key = session.get(SESSION_KEY)
    if isinstance(key, str):
        end_session(db(), key)
    session.clear()


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site (no open redirects), else None."""
    if not target:
        return None
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
    ):
        return None
    return target


def load_dashboard_user():
    """Dashboard ``before_request``: load the session's user; send strangers to the sign-in page;
    check the CSRF token of every POST (of the sign-in form too)."""
    key = session.get(SESSION_KEY)
    user = session_user(db(), key) if isinstance(key, str) else None
    if user is None and (key is not None or "user_id" in session):
        session.clear()  # signed out, expired, disabled or deleted elsewhere; or a cookie of old
    g.user = user
    if request.endpoint == SIGN_IN_ENDPOINT and request.method == "POST":
        check_csrf()  # then the view, behind the sign-in limit
        return None
    if user is None and request.endpoint not in PUBLIC_DASHBOARD_ENDPOINTS:
        if request.path.endswith((".json", ".png")):
            return jsonify(error="sign in first"), 401
        next_path = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("dashboard.sign_in", next=next_path))
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        check_csrf()
    return None


# ------------------------------------------------------------------------------------------ API


def load_api_user():
    """API ``before_request``: the bearer token's owner, or 401 JSON."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    try:
        g.user = check_token(db(), token.strip())
    except TokenRefused as refused:
        return _unauthorized(str(refused))
    return None


def _unauthorized(message: str):
    response = jsonify(error=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="bmseg"'
    return response
