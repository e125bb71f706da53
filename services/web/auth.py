"""Who is asking: dashboard sessions (cookie, CSRF token per session) and API bearer tokens.

Dashboard: a signed Flask session cookie (HttpOnly, SameSite=Lax) carries the user id; every POST must
echo the session's CSRF token in the form field ``csrf_token`` (or the ``X-CSRF-Token`` header).
API: ``Authorization: Bearer <token>``, checked against ``ApiToken.token_hash`` (sha256).

Sign-in is rate-limited: ``settings.sign_in_max_failures`` failed attempts for one e-mail from one client
address within ``settings.sign_in_window_seconds`` lock that pair out (HTTP 429, ``Retry-After``) until
the window ends, whatever password comes next; a successful sign-in clears the count. The counters live
in Redis under a sha256 of e-mail and address (no e-mail stored in clear). When Redis is down, sign-in
still works, unthrottled, and the web log says so.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
from urllib.parse import urlsplit

from flask import (
    after_this_request,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import BadRequest

from bmcore.accounts import normalize_email, verify_token
from bmcore.config import get_settings
from bmcore.db import User
from services.web.common import db

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# Dashboard endpoints reachable without a session.
SIGN_IN_ENDPOINT = "dashboard.sign_in"
PUBLIC_DASHBOARD_ENDPOINTS = frozenset({SIGN_IN_ENDPOINT})
SIGN_IN_KEY_PREFIX = "bmseg:sign-in-failures:"


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
    if request.endpoint == SIGN_IN_ENDPOINT and request.method == "POST":
        check_csrf()
        return throttle_sign_in()
    if user is None and request.endpoint not in PUBLIC_DASHBOARD_ENDPOINTS:
        if request.path.endswith((".json", ".png")):
            return jsonify(error="sign in first"), 401
        next_path = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("dashboard.sign_in", next=next_path))
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        check_csrf()
    return None


# ------------------------------------------------------------------------------------------ sign-in limit

_redis_clients: dict[str, object] = {}
_redis_lock = threading.Lock()


def _limiter_redis():
    import redis

    url = current_app.config["REDIS_URL"]
    with _redis_lock:
        client = _redis_clients.get(url)
        if client is None:
            client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
            _redis_clients[url] = client
        return client


def _sign_in_limits() -> tuple[int, int]:
    settings = get_settings()
    config = current_app.config
    return (
        int(config.get("SIGN_IN_MAX_FAILURES", settings.sign_in_max_failures)),
        int(config.get("SIGN_IN_WINDOW_SECONDS", settings.sign_in_window_seconds)),
    )


def sign_in_key(email: str, address: str | None) -> str:
    """The Redis key counting failed sign-ins of ``email`` from ``address`` (hashed: no e-mail in Redis)."""
    who = f"{normalize_email(email)}|{address or '-'}"
    return SIGN_IN_KEY_PREFIX + hashlib.sha256(who.encode("utf-8")).hexdigest()


def throttle_sign_in():
    """Before a sign-in POST: 429 when this e-mail and address used up their failures; otherwise count
    the outcome (a 401 adds one failure, a successful sign-in clears them) once the view has answered."""
    import redis

    limit, window = _sign_in_limits()
    key = sign_in_key(request.form.get("email", ""), request.remote_addr)
    client = _limiter_redis()
    try:
        failures, ttl = client.pipeline().get(key).ttl(key).execute()
    except redis.RedisError as exc:
        current_app.logger.warning("sign-in rate limit not enforced, Redis unavailable: %s", exc)
        return None
    if int(failures or 0) >= limit:
        wait = int(ttl) if ttl and int(ttl) > 0 else window
        minutes = max(1, math.ceil(wait / 60))
        message = (
            f"Too many failed sign-in attempts for this e-mail address; "
            f"try again in {minutes} minute{'s' if minutes != 1 else ''}."
        )
        page = render_template(
            "sign_in.html",
            next=safe_next(request.values.get("next")),
            email=request.form.get("email", "").strip(),
            error=message,
        )
        return page, 429, {"Retry-After": str(wait)}

    @after_this_request
    def count_outcome(response):
        try:
            if response.status_code == 401:
                client.pipeline().set(key, 0, ex=window, nx=True).incr(key).execute()
            elif response.status_code in (302, 303):
                client.delete(key)
        except redis.RedisError as exc:
            current_app.logger.warning("sign-in rate limit not updated, Redis unavailable: %s", exc)
        return response

    return None


# ------------------------------------------------------------------------------------------ API


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
