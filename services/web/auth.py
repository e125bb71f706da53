"""Who is asking: dashboard sessions (cookie, CSRF token per session) and API bearer tokens.

Dashboard: a signed Flask session cookie (HttpOnly, SameSite=Lax) carries the user id; every POST must
echo the session's CSRF token in the form field ``csrf_token`` (or the ``X-CSRF-Token`` header).
API: ``Authorization: Bearer <token>``, checked against ``ApiToken.token_hash`` (sha256).
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from flask import g, jsonify, redirect, request, session, url_for
from werkzeug.exceptions import BadRequest

from bmcore.db import User
from bmcore.tokens import verify_token
from services.web.common import db

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# Dashboard endpoints reachable without a session.
PUBLIC_DASHBOARD_ENDPOINTS = frozenset({"dashboard.sign_in"})


def current_user() -> User | None:
    return g.get("user")


def csrf_token() -> str:
    """The session's CSRF token, created on first use (also a Jinja global)."""
    token = session.get(CSRF_FIELD)
    if not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def check_csrf() -> None:
    """Refuse a state-changing request whose form field or header does not echo the session's token."""
    expected = session.get(CSRF_FIELD)
    try:
        sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER, "")
    except BadRequest:
        sent = ""
    if not expected or not sent or not hmac.compare_digest(str(expected), str(sent)):
        raise BadRequest("the form has expired or did not come from this site; reload the page and try again")


def sign_in_user(user: User) -> None:
    """Start a fresh session for ``user`` (a new CSRF token too: no session fixation)."""
    session.clear()
    session.permanent = True
    session["user_id"] = user.id
    session[CSRF_FIELD] = secrets.token_urlsafe(32)


def sign_out_user() -> None:
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
    check the CSRF token of every POST."""
    user_id = session.get("user_id")
    user = db().get(User, user_id) if isinstance(user_id, int) else None
    if user_id is not None and user is None:
        session.clear()  # the account was deleted
    g.user = user
    if user is None and request.endpoint not in PUBLIC_DASHBOARD_ENDPOINTS:
        if request.path.endswith((".json", ".png")):
            return jsonify(error="sign in first"), 401
        next_path = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("dashboard.sign_in", next=next_path))
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        check_csrf()
    return None


def load_api_user():
    """API ``before_request``: the bearer token's owner, or 401 JSON."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    user = verify_token(db(), token.strip())
    if user is None:
        return _unauthorized("invalid or revoked token")
    g.user = user
    return None


def _unauthorized(message: str):
    response = jsonify(error=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="bmseg"'
    return response
