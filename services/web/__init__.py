"""The web process: ``create_app()`` with two blueprints, ``dashboard`` (HTML, session cookie) and ``api``
(JSON under ``/api/v1``, bearer tokens), plus the open ``/healthz``.

The web never imports torch: it validates, writes rows and queues tasks by name
(docs/architecture.md, "Style principles").
Run it with ``flask --app services.web run`` or ``gunicorn 'services.web:create_app()'``.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from flask import Flask, current_app, jsonify, render_template, request
from sqlalchemy import text
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

from bmcore.config import get_settings
from bmcore.db import init_db
from services.web import api, dashboard
from services.web.auth import current_user, init_csrf
from services.web.common import WebError, close_db, db
from services.web.proxy import trust_proxies
from services.web.route_access import init_route_access
from services.web.safe_defaults import HSTS, init_safe_defaults
from services.web.throttle import init_sign_in_limit
from services.web.uploads import purge_stale_incoming

log = logging.getLogger(__name__)

DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"


def create_app(config_overrides: dict[str, Any] | None = None) -> Flask:
    """The Flask app, configured from :func:`bmcore.config.get_settings` (then ``config_overrides``);
    upgrades the database schema (idempotent). Unusable settings raise :class:`bmcore.config.ConfigError`
    (one line naming the settings, no values; ``gunicorn --preload`` prints it as ``Error: …``)."""
    settings = get_settings()
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        SESSION_COOKIE_NAME="bmseg_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.env == "production",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        UPLOADS_DIR=settings.uploads_dir,
        RESULTS_DIR=settings.results_dir,
        MAX_VOXELS=settings.max_voxels,
        MAX_UPLOAD_VOXELS=settings.max_upload_voxels,  # per uploaded file, checked from its header
        MAX_JSON_BYTES=settings.max_json_bytes,
        STRICT_TRANSPORT_SECURITY=HSTS if settings.env == "production" else None,
        MLFLOW_UI_URL=os.environ.get("BMSEG_MLFLOW_UI_URL")
        or os.environ.get("MLFLOW_UI_URL")
        or DEFAULT_MLFLOW_UI_URL,
    )
    if config_overrides:
        app.config.update(config_overrides)
    for key in ("UPLOADS_DIR", "RESULTS_DIR"):
        app.config[key] = Path(app.config[key]).absolute()
    app.json.sort_keys = False

    init_db(app.config["DATABASE_URL"])
    purge_stale_incoming(app.config["UPLOADS_DIR"])

    init_safe_defaults(app)  # before the blueprints: their <int:…> rules take its bounded converter
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(api.bp)
    init_route_access(app, (dashboard.bp, api.bp))  # after the blueprints' user loaders
    init_csrf(app, api.bp)
    init_sign_in_limit(app)
    trust_proxies(app, settings.trusted_proxies)  # behind the compose TLS proxy: BMSEG_TRUSTED_PROXIES=1
    app.teardown_appcontext(close_db)
    app.jinja_env.globals.update(current_user=current_user)
    app.add_url_rule("/healthz", "healthz", healthz)
    _register_error_handlers(app)
    return app


def healthz():
    """Open: is the database reachable, is Redis reachable? 200 when both are, else 503."""
    checks: dict[str, str] = {}
    try:
        db().execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        client = redis.Redis.from_url(
            current_app.config["REDIS_URL"], socket_connect_timeout=1, socket_timeout=1
        )
        try:
            client.ping()
        finally:
            client.close()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    response = jsonify(status="ok" if healthy else "unavailable", **checks)
    response.status_code = 200 if healthy else 503
    return response


def _wants_json() -> bool:
    path = request.path
    return path.startswith("/api/") or path.endswith((".json", ".png")) or path == "/healthz"


def _error_response(status: int, message: str):
    if _wants_json():
        response = jsonify(error=message)
        response.status_code = status
        return response
    return render_template("error.html", status=status, message=message), status


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(WebError)
    def web_error(exc: WebError):
        return _error_response(exc.status, exc.message)

    @app.errorhandler(OverflowError)
    @app.errorhandler(DataError)
    def out_of_range(exc: Exception):
        # A number or text the database cannot hold (an id past its integer, NUL in text): the request's.
        log.warning("refused %s %s: %s", request.method, request.path, type(exc).__name__)
        return _error_response(400, "a value in the request is out of range or not valid text")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        if status == 413:
            limit_mb = (app.config.get("MAX_CONTENT_LENGTH") or 0) / (1024 * 1024)
            message = f"the upload is larger than the server accepts ({limit_mb:.0f} MB)"
        elif status >= 500:
            message = "internal error; the server log has the details"
        else:
            message = exc.description or exc.name
        response = _error_response(status, message)
        if status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response = app.make_response(response)
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response
