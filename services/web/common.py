"""The bottom of the web: the error every view raises for the user and the request's database session.

What the API and the dashboard share sits one level up: :mod:`.access` (who may see what),
:mod:`.serialize` (rows as JSON), :mod:`.job_requests` (checking a job request) and :mod:`.reports`
(read-side helpers: segmentations, lesion tables, the cohort, the model registry). No Flask views here.
"""

from __future__ import annotations

from flask import Response, current_app, g
from sqlalchemy.orm import Session

from bmcore.db import session_factory


class WebError(Exception):
    """A request refused with an HTTP status and a one-line message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def db() -> Session:
    """The request's database session (opened on first use, closed when the request ends)."""
    if "db_session" not in g:
        g.db_session = session_factory(current_app.config["DATABASE_URL"])()
    return g.db_session


def close_db(_exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def privately_cached(response: Response, seconds: int = 60) -> Response:
    """``response`` (a rendered image) cacheable by the browser only, for ``seconds``."""
    response.headers["Cache-Control"] = f"private, max-age={seconds}"
    return response
