"""Trusting the reverse proxy in front of the web (``BMSEG_TRUSTED_PROXIES``).

Behind the TLS proxy of docker-compose (deploy/Caddyfile) gunicorn sees plain HTTP from the proxy's address.
With ``trusted_proxies`` = N the app takes the scheme, host and client address from the X-Forwarded-Proto,
-Host and -For values the last N proxies set (werkzeug's ProxyFix): ``request.is_secure`` is true for HTTPS
requests and the sign-in throttle counts each client's address, not the proxy's. With 0, the default, those
headers are ignored, since any client can send them when nothing in front replaces them.
"""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix


def trust_proxies(app: Flask, count: int) -> None:
    """Wrap ``app``'s WSGI app in ProxyFix trusting ``count`` proxies' forwarded headers; none when 0."""
    if count > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)
