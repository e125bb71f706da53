"""The sign-in limit, with flask-limiter: only failed attempts count, per e-mail and client address.

``sign_in_max_failures`` failed attempts (HTTP 401) for one e-mail from one client address within
``sign_in_window_seconds`` lock that pair out (HTTP 429 with the sign-in page and ``Retry-After``) until
the window, which starts at the first failure, ends, whatever password comes next; a successful sign-in
clears the count. The counters live in the app's Redis under ``bmseg:sign-in-failures:`` and a sha256 of
e-mail and address (no e-mail stored in clear). When Redis is down, sign-in still works, unthrottled,
and flask-limiter logs so.
"""

from __future__ import annotations

import hashlib
import math
import time

import redis
from flask import Flask, Response, current_app, has_app_context, make_response, render_template, request
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from limits import RateLimitItem, parse

from bmcore.accounts import normalize_email
from bmcore.config import get_settings
from services.web.auth import SIGN_IN_ENDPOINT, safe_next

SIGN_IN_KEY_PREFIX = "bmseg:sign-in-failures"
EXTENSION = "bmseg_sign_in_limiter"
REDIS_OPTIONS = {"socket_connect_timeout": 1, "socket_timeout": 1}


def sign_in_limits() -> tuple[int, int]:
    """(failures allowed, window in seconds): the app's ``SIGN_IN_*`` config, else the settings."""
    settings = get_settings()
    config = current_app.config if has_app_context() else {}
    return (
        int(config.get("SIGN_IN_MAX_FAILURES", settings.sign_in_max_failures)),
        int(config.get("SIGN_IN_WINDOW_SECONDS", settings.sign_in_window_seconds)),
    )


def sign_in_limit() -> str:
    limit, window = sign_in_limits()
    return f"{limit} per {window} seconds"


def sign_in_identity(email: str | None = None, address: str | None = None) -> str:
    """Who is signing in, hashed: the normalised e-mail and the client address (the request's by
    default)."""
    if email is None:
        email, address = request.form.get("email", ""), request.remote_addr
    who = f"{normalize_email(email)}|{address or '-'}"
    return hashlib.sha256(who.encode("utf-8")).hexdigest()


def sign_in_key(email: str, address: str | None) -> str:
    """The Redis key counting failed sign-ins of ``email`` from ``address`` (under the current limits)."""
    item: RateLimitItem = parse(sign_in_limit())
    return f"{SIGN_IN_KEY_PREFIX}:{item.key_for(sign_in_identity(email, address), SIGN_IN_ENDPOINT)}"


def _failed(response: Response) -> bool:
    return response.status_code == 401


def _locked_out(breached: RequestLimit) -> Response:
    """The sign-in page saying how long the lock lasts (429, ``Retry-After``)."""
    _, window = sign_in_limits()
    wait = min(window, max(1, math.ceil(breached.window.reset_time - time.time())))
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
    return make_response(page, 429, {"Retry-After": str(wait)})


def init_sign_in_limit(app: Flask) -> None:
    """Put the sign-in view of ``app`` behind its own limiter, counting in ``app``'s Redis."""
    limiter = Limiter(
        sign_in_identity,
        app=app,
        storage_uri=app.config["REDIS_URL"],
        storage_options={**REDIS_OPTIONS, "key_prefix": SIGN_IN_KEY_PREFIX},
        strategy="fixed-window",
        swallow_errors=True,
    )
    app.extensions[EXTENSION] = limiter
    limited = limiter.limit(sign_in_limit, methods=["POST"], deduct_when=_failed, on_breach=_locked_out)
    app.view_functions[SIGN_IN_ENDPOINT] = limited(app.view_functions[SIGN_IN_ENDPOINT])
    app.register_error_handler(RateLimitExceeded, lambda exc: exc.get_response())


def forget_sign_in_failures() -> None:
    """After a successful sign-in: clear the failures counted for this e-mail and address."""
    limiter: Limiter = current_app.extensions[EXTENSION]
    current = limiter.current_limit
    if current is None:  # the limit was not checked (Redis down)
        return
    try:
        limiter.limiter.clear(current.limit, *current.request_args)
    except redis.RedisError as exc:
        current_app.logger.warning("sign-in failures not cleared, Redis unavailable: %s", exc)
