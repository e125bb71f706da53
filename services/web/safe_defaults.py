"""HTTP defaults that are safe: odd inputs answer 4xx, responses carry the security headers.

* ``<int:…>`` in a URL matches only what the database's integer ids hold (up to 2³¹ − 1): a 25-digit id
  is no match (404, as any unknown id), not an overflow in the database driver (500);
* a NUL character in the path or the query string is refused (400) before any view sees it (PostgreSQL
  refuses NUL in text, the file system in names);
* every response is ``Cache-Control: no-store`` (pages, JSON, downloads carry clinical data), except
  static assets and what :func:`services.web.common.privately_cached` marked ``private`` (rendered MRI
  slices: pixels of a pseudonymised study, no identifiers, cached by the browser only, for a minute);
* in production, ``Strict-Transport-Security`` tells browsers to use HTTPS only (the compose stack
  serves the web behind a TLS proxy).
"""

from __future__ import annotations

from flask import Flask, current_app, request
from werkzeug.routing import IntegerConverter

from services.web.common import WebError

MAX_DATABASE_ID = 2**31 - 1  # INTEGER primary keys (PostgreSQL int4)
HSTS = "max-age=63072000; includeSubDomains"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


class DatabaseIdConverter(IntegerConverter):
    """``<int:…>`` bounded to the database's integer ids: a longer number does not match the rule (404,
    for any method), a 10-digit one past the maximum fails its conversion."""

    regex = r"\d{1,10}"

    def __init__(self, map, fixed_digits: int = 0, min: int | None = None, max: int | None = MAX_DATABASE_ID):
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max)


def refuse_nul_in_url() -> None:
    """400 for a NUL character in the path or the query string (``%00``)."""
    query = request.args.items(multi=True)
    if "\x00" in request.path or any("\x00" in key or "\x00" in value for key, value in query):
        raise WebError(400, "the URL contains a NUL character")


def security_headers(response):
    """The headers of every response: no sniffing or framing, the CSP, no-store, HSTS in production."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    privately_cached = response.headers.get("Cache-Control", "").startswith("private")
    if request.endpoint != "static" and not privately_cached:
        response.headers["Cache-Control"] = "no-store"
    hsts = current_app.config.get("STRICT_TRANSPORT_SECURITY")
    if hsts:
        response.headers.setdefault("Strict-Transport-Security", hsts)
    return response


def init_safe_defaults(app: Flask) -> None:
    """Install the bounded ``int`` converter (before any blueprint adds its rules), the NUL check and
    the headers."""
    app.url_map.converters["int"] = DatabaseIdConverter
    app.before_request(refuse_nul_in_url)
    app.after_request(security_headers)
